"""Where intake reads the plan: the exporter's `GET /api/v1/footprint` (docs/exporter-api.md).

`PlanSource` is the port (one method, `fetch()`); `ExporterPlanSource` the HTTP adapter.
The answer is validated strictly by `parse_footprint`: a document of another shape raises
SourceError(retriable=False) naming the bad field, never a KeyError deep in the executor.
Every error raised here is a `PlanError` whose `reason` says why no decision can be taken
from the plan; intake counts it (docs/webhook.md, "Metrics").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import requests

from ..errors import SourceError
from .records import ACTIONS, PlanItem, ReplicaRef

FOOTPRINT_PATH = "/api/v1/footprint"
SOURCE = "exporter plan"


class PlanError(SourceError):
    """The plan could not be read or must not be acted on. `reason` (one of
    events.WITHHELD_REASONS): plan_unavailable (the exporter does not answer, answers 5xx or
    has no assessment yet), plan_invalid (a document of another shape), plan_stale (the
    exporter kept its last plan because its inputs could not be trusted), plan_too_old."""

    def __init__(self, message: str, *, reason: str, retriable: bool = True) -> None:
        super().__init__(SOURCE, message, retriable=retriable)
        self.reason = reason


class Plan(list[PlanItem]):
    """The plan's entries, highest priority first, and when the exporter assessed them
    (`assessed_at`, Unix seconds; None for a plan that is not the exporter's)."""

    def __init__(self, items: Sequence[PlanItem] = (), assessed_at: float | None = None) -> None:
        super().__init__(items)
        self.assessed_at = assessed_at


class PlanSource(Protocol):
    def fetch(self) -> Sequence[PlanItem]:
        """The plan's entries, highest priority first. Raises SourceError."""


class StaticPlanSource:
    """A fixed list of entries (tests, and the CLI's offline use)."""

    def __init__(self, items: Sequence[PlanItem] = ()) -> None:
        self.items = list(items)

    def fetch(self) -> Sequence[PlanItem]:
        return list(self.items)


class ExporterPlanSource:
    """Reads the plan from the exporter at `url` (e.g. http://127.0.0.1:9731)."""

    def __init__(self, url: str, timeout: float = 5.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/") + FOOTPRINT_PATH
        self.timeout = timeout
        self.session = session or requests.Session()

    def fetch(self) -> Sequence[PlanItem]:
        try:
            r = self.session.get(self.url, timeout=self.timeout,
                                 headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise PlanError(f"GET {self.url}: {exc.__class__.__name__}: {exc}",
                            reason="plan_unavailable") from exc
        if r.status_code == 503:
            raise PlanError(f"GET {self.url}: 503, the exporter has no plan yet "
                            "(first refresh not done)", reason="plan_unavailable")
        if r.status_code != 200:
            server = r.status_code >= 500
            raise PlanError(f"GET {self.url}: HTTP {r.status_code}", retriable=server,
                            reason="plan_unavailable" if server else "plan_invalid")
        try:
            doc = r.json()
        except ValueError as exc:
            raise PlanError(f"GET {self.url}: not JSON ({exc})", reason="plan_invalid",
                            retriable=False) from exc
        return parse_footprint(doc)


def _bad(where: str, what: str, got: Any) -> PlanError:
    return PlanError(f"{where}: {what} (got {got!r:.80})", reason="plan_invalid",
                     retriable=False)


def _str(d: dict[str, Any], key: str, where: str, *, empty: bool = False,
         null: bool = False) -> Any:
    v = d.get(key)
    if v is None and null:
        return None
    if not isinstance(v, str) or (not v and not empty):
        raise _bad(f"{where}.{key}", "must be a non-empty string" if not empty else
                   "must be a string", v)
    return v


def _num(d: dict[str, Any], key: str, where: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _bad(f"{where}.{key}", "must be a number or null", v)
    return float(v)


def parse_footprint(doc: Any) -> Plan:
    """The plan entries of a footprint document, each with its component's replicas.

    Fail-safe: no entries are returned from a plan that cannot be trusted. A missing plan
    (no assessment yet) and a stale one raise a retriable PlanError, so the notification is
    tried again until the plan is there and fresh (or the executor's progress deadline); a
    plan without `assessed_at` (its age unknown) or with an entry whose component has no
    replicas section (nothing to check the entry against) is invalid."""
    if not isinstance(doc, dict):
        raise _bad("footprint", "must be a JSON object", doc)
    if doc.get("version") != 1:
        raise _bad("footprint.version", "must be 1 (this webhook reads version 1)",
                   doc.get("version"))
    plan = doc.get("plan")
    if plan is None:
        stages = (doc.get("errors") or {}).get("stages") if isinstance(
            doc.get("errors"), dict) else None
        why = stages.get("assess") if isinstance(stages, dict) else None
        raise PlanError("the exporter has no plan yet (no assessment made"
                        + (f": {why})" if isinstance(why, str) and why else ")"),
                        reason="plan_unavailable")
    if isinstance(plan, dict) and plan.get("stale") is True:
        # Fail-safe: the exporter kept its last plan because its inputs could not be trusted
        # (docs/exporter-api.md, "When the plan is stale"); nothing is decided from it.
        # Retriable: the notification is tried again until the plan is fresh (or the
        # deadline). A node merely unreachable does not make the plan stale.
        raise PlanError("the exporter's plan is stale (it could not assess from fresh "
                        "inputs); no migration is decided from it", reason="plan_stale")
    if not isinstance(plan, dict) or not isinstance(plan.get("entries"), list):
        raise _bad("footprint.plan.entries", "must be a list", plan)
    assessed_at = _num(plan, "assessed_at", "footprint.plan")
    if assessed_at is None:
        raise _bad("footprint.plan.assessed_at", "must be a number (the plan's age is "
                   "checked before acting on it)", plan.get("assessed_at"))
    comps = doc.get("components") or {}
    if not isinstance(comps, dict):
        raise _bad("footprint.components", "must be an object", comps)
    replicas: dict[str, tuple[ReplicaRef, ...]] = {}
    for comp, body in comps.items():
        where = f"footprint.components.{comp}"
        reps = body.get("replicas") if isinstance(body, dict) else None
        if not isinstance(reps, list):
            raise _bad(f"{where}.replicas", "must be a list", reps)
        out = []
        for i, r in enumerate(reps):
            if not isinstance(r, dict):
                raise _bad(f"{where}.replicas[{i}]", "must be an object", r)
            w = f"{where}.replicas[{i}]"
            out.append(ReplicaRef(_str(r, "node", w), _str(r, "name", w),
                                  _str(r, "state", w)))
        replicas[comp] = tuple(out)
    items = Plan(assessed_at=assessed_at)
    for i, e in enumerate(plan["entries"]):
        w = f"footprint.plan.entries[{i}]"
        if not isinstance(e, dict):
            raise _bad(w, "must be an object", e)
        action = e.get("action")
        if action not in ACTIONS:
            raise _bad(f"{w}.action", f"must be one of {', '.join(ACTIONS)}", action)
        comp = _str(e, "component", w)
        if comp not in replicas:
            raise _bad(f"footprint.components.{comp}", "missing: the entry cannot be checked "
                       f"against {comp}'s replicas", None)
        items.append(PlanItem(
            action=action, component=comp, replica=_str(e, "replica", w, empty=True),
            from_node=_str(e, "from_node", w, null=True), to_node=_str(e, "to_node", w),
            reason=_str(e, "reason", w, empty=True), priority=_num(e, "priority", w) or 0.0,
            hps=_num(e, "hps", w), target_hps=_num(e, "target_hps", w),
            replicas=replicas[comp],
        ))
        if action == "move" and (not items[-1].replica or not items[-1].from_node):
            raise _bad(w, "a move needs replica and from_node", e)
    return items
