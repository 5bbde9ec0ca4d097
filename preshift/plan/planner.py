"""The plan: the desired footprint's changes as prioritised entries with human reasons. Pure.

priority = (100 − HPS) × impact, highest first, where
impact = criticality × (1 + dependents) × share of the service's replicas the replica carries.
(The brief's "lowest HPS × impact": the riskiest, most important replica comes first.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..config import ServiceConfig
from ..model import Footprint
from ..score.hps import ReplicaScore, Scores
from .footprint import (
    Action,
    Change,
    Desired,
    Hold,
    PlanSettings,
    desired_footprint,
    discrepancy,
    discrepancy_threshold,
)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One step to take. For a move the new copy starts on to_node before the old one stops."""

    action: Action
    component: str
    replica: str  # container name; "" for a new replica that replaces nothing
    container_id: str
    from_node: str | None
    to_node: str
    reason: str
    priority: float
    hps: float  # of the replica now (0 when it is missing)
    target_hps: float  # projected on to_node
    impact: float


@dataclass(frozen=True, slots=True)
class Plan:
    """Entries (highest priority first), the desired footprint, and per-component gauges."""

    entries: tuple[PlanEntry, ...]
    desired: Desired
    discrepancy: Mapping[str, float]  # component -> 0..1
    threshold: Mapping[str, float]  # component -> alert when discrepancy exceeds it
    held: tuple[tuple[Hold, str], ...]  # risky replicas left alone, with the reason as text


def dependents(
    services: Mapping[str, ServiceConfig],
    correlations: Mapping[str, Mapping[str, float]] | None = None,
) -> Counter[str]:
    """How many components depend on each one: declared, plus learned (corr > 0) edges."""
    edges = {(c, d) for c, cfg in services.items() for d in cfg.depends_on}
    edges |= {(c, d) for c, deps in (correlations or {}).items() for d, v in deps.items() if v > 0}
    return Counter(d for c, d in edges if c != d)


def impact(criticality: float, n_dependents: int, share: float) -> float:
    return criticality * (1 + n_dependents) * share


def _factor_text(s: ReplicaScore) -> str:
    parts = {
        "history": f"history p={s.p_history:.2f}",
        "dependency": f"dependency p={s.p_dependency:.2f}"
        + (f" (mostly {s.top_dependency})" if s.top_dependency else ""),
        "environment": f"environment p={s.p_environment:.2f}"
        + (f" (top signal {s.top_signal} w·p={s.top_signal_p:.2f})" if s.top_signal else ""),
        "node": f"node p={s.p_node:.2f}",
    }
    return parts[s.top_factor]


def reason(
    change: Change, score: ReplicaScore | None, settings: PlanSettings, min_available: int
) -> str:
    """One line a human can check: the factor and the numbers behind the decision."""
    tol, to = settings.tolerance, change.to_node
    target = f"{to} projected risk {change.target_risk:.2f}"
    head = f"risk {change.risk:.2f} > tolerance {tol:.2f}"
    if score is not None:
        head += f", mostly {_factor_text(score)}"
    if change.why == "risk":
        return f"{head}; move to {target} (≤ safe level {settings.safe_level:.2f})"
    if change.why == "unreachable":
        return f"node {change.from_node} unreachable ({head}); start a replacement on {target}"
    if change.why == "safer":
        return (f"{head}; no node brings it to the safe level {settings.safe_level:.2f} and none "
                f"can take an extra replica: move to the clearly safer {target}")
    if change.why == "no_safe_node":
        return (f"{head}; no node brings it to the safe level {settings.safe_level:.2f}: "
                f"add a replica on the safest, {target}")
    return f"fewer healthy replicas than min_available {min_available}; start one on {target}"


_HOLD_TEXT = {
    "stateful": "stateful service: not moved (set move_stateful to allow)",
    "spare": "covered by a spare replica (healthy count above the intended count)",
    "no_safer_node": "no allowed node is safer by min_gain: moving or adding would not help",
    "no_target": "no reachable node with capacity that keeps the spread constraints",
}


def make_plan(
    footprint: Footprint,
    scores: Scores,
    settings: PlanSettings | None = None,
    *,
    services: Mapping[str, ServiceConfig] | None = None,
    intended: Mapping[str, int] | None = None,
    recently_left: Collection[tuple[str, str]] = (),
    correlations: Mapping[str, Mapping[str, float]] | None = None,
) -> Plan:
    """Desired footprint → prioritised entries, discrepancy and threshold per component."""
    settings = settings or PlanSettings()
    services = services or {}
    deps = dependents(services, correlations)
    by_id = scores.by_container()
    n_running = Counter(r.component for r in footprint.replicas if r.running)

    def impact_of(comp: str) -> float:
        cfg = services.get(comp, ServiceConfig())
        return impact(cfg.criticality, deps[comp], 1.0 / max(n_running[comp], 1))

    prio = {
        s.container_id: (100.0 - s.hps) * impact_of(s.component) for s in scores.replicas
    }
    desired = desired_footprint(
        footprint, scores, settings, services=services, intended=intended,
        recently_left=recently_left, priority=prio,
    )
    entries = []
    for ch in desired.changes:
        s = by_id.get(ch.container_id)
        hps = 100.0 * (1.0 - ch.risk)
        imp = impact_of(ch.component)
        min_av = services.get(ch.component, ServiceConfig()).min_available
        entries.append(PlanEntry(
            ch.action, ch.component, ch.replica, ch.container_id, ch.from_node, ch.to_node,
            reason(ch, s, settings, min_av), (100.0 - hps) * imp, hps,
            100.0 * (1.0 - ch.target_risk), imp,
        ))
    entries.sort(key=lambda e: (-e.priority, e.component, e.container_id, e.to_node))

    base = settings.tolerance if settings.discrepancy_threshold is None else (
        settings.discrepancy_threshold)
    comps = sorted({*desired.current, *desired.placements})
    disc, thr = {}, {}
    for c in comps:
        cur, want = desired.current.get(c, ()), desired.placements.get(c, ())
        disc[c] = discrepancy(cur, want)
        min_av = services.get(c, ServiceConfig()).min_available
        thr[c] = discrepancy_threshold(cur, want, min_av, base)
    held = tuple((h, _HOLD_TEXT[h.why]) for h in desired.held)
    return Plan(tuple(entries), desired, disc, thr, held)
