"""The act layer's plain records: notifications, migrations, steps and plan items. Pure.

They live apart from `journal.py` (which imports sqlite3) so that the pure modules
(`machine`, `safety`, `analysis`) can use them without pulling in a database driver.
`journal.py` re-exports them, so `from preshift.act.journal import Migration` keeps working.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .phases import TERMINAL, Phase

APPROVALS = ("none", "pending", "approved")
REQUESTS = ("approve", "abort", "rollback")
ACTIONS = ("move", "scale_up", "new_instance")


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert of an Alertmanager notification, as journaled."""

    status: str  # firing | resolved
    alertname: str
    component: str
    fingerprint: str
    starts_at: str  # RFC 3339 as Alertmanager sent it
    labels: Mapping[str, str]
    group_key: str = ""
    id: int = 0
    received_at: float = 0.0
    handled_at: float | None = None
    outcome: str | None = None

    @property
    def dedupe_key(self) -> str:
        return f"{self.status}|{self.fingerprint}|{self.starts_at}"

    @property
    def alert_key(self) -> str:
        """The alert instance (same for its firing and resolved notifications)."""
        return f"{self.fingerprint}|{self.starts_at}"


@dataclass(frozen=True, slots=True)
class Migration:
    """A migration's journal row (the executor's whole state for it)."""

    id: str
    component: str
    action: str  # move | scale_up | new_instance
    target_node: str
    canary_name: str  # the new instance's container name (and HAProxy server name)
    phase: Phase = Phase.PLANNED
    alert_key: str | None = None  # fingerprint|startsAt of the alert that caused it
    source_node: str | None = None
    source_name: str | None = None  # the replica being replaced (move) or copied (scale_up)
    backend: str | None = None  # HAProxy backend, None without a traffic layer
    weight: int = 0  # the new instance's current share, percent
    step: int = 0  # index into migration.step_weights
    failed_checks: int = 0
    attempt: int = 0  # transient errors retried in this phase
    dry_run: bool = False
    approval: str = "none"  # none | pending | approved
    request: str | None = None  # approve | abort | rollback, asked through the API
    reason: str = ""
    priority: float = 0.0
    data: Mapping[str, Any] = field(default_factory=dict)  # counters baselines etc.
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    phase_since: float = 0.0
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = str(self.phase)
        d["data"] = dict(self.data)
        return d


@dataclass(frozen=True, slots=True)
class Step:
    id: int
    migration_id: str
    at: float
    phase: str
    action: str
    detail: str
    outcome: str | None
    done_at: float | None


@dataclass(frozen=True, slots=True)
class ReplicaRef:
    """A container of a component as the exporter's footprint lists it."""

    node: str
    name: str
    state: str = "running"


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One entry of the exporter's plan (`plan.entries[]` of /api/v1/footprint), plus the
    component's replicas from the same document (the candidates a scale-up may copy)."""

    action: str  # move | scale_up | new_instance
    component: str
    replica: str  # "" for a new replica that replaces none
    from_node: str | None
    to_node: str
    reason: str = ""
    priority: float = 0.0
    hps: float | None = None
    target_hps: float | None = None
    replicas: tuple[ReplicaRef, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["replicas"] = [asdict(r) for r in self.replicas]
        return d


def new_migration_id() -> str:
    return secrets.token_hex(4)


def request_problem(m: Migration, what: str) -> str | None:
    """Why `what` cannot be asked of `m` now (None when it can)."""
    if m.terminal:
        return "it has finished"
    if what == "approve" and m.approval != "pending":
        return "it is not waiting for approval"
    if what == "rollback" and m.phase == Phase.PLANNED:
        return "nothing has changed yet; use abort"
    return None
