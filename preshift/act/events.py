"""The executor's observer: hooks for metrics without the core importing prometheus_client.

The webhook passes an object with these methods (its `MetricsObserver`); the executor calls
`on_step` and `on_phase` after each journaled step and each phase change, intake calls
`on_plan` after each plan it reads and `on_withheld` when it takes no decision because the
data it would decide from cannot be trusted (then the notification is retried or given up).
An observer that raises is logged and ignored: metrics never stop a migration. An observer
without `on_plan` / `on_withheld` (written before they existed) still works.
"""

from __future__ import annotations

from typing import Protocol

from .records import Migration

#: Why intake withheld a decision: the plan could not be read or was not there
#: (plan_unavailable), had another shape (plan_invalid), was kept by the exporter from stale
#: inputs (plan_stale), was assessed longer ago than migration.max_plan_age, or dated in the
#: future by more than that (plan_too_old), or a Docker engine (runtime) needed to check the
#: plan against the live state could not be read (runtime_unavailable).
WITHHELD_REASONS: tuple[str, ...] = (
    "plan_unavailable", "plan_invalid", "plan_stale", "plan_too_old", "runtime_unavailable",
)


class Observer(Protocol):
    def on_step(self, m: Migration, action: str, outcome: str) -> None:
        """A step was taken: `action` (clone, set_weights, phase, ...), `outcome` ok|error."""

    def on_phase(self, m_old: Migration | None, m_new: Migration) -> None:
        """`m_new` was written with a new phase; `m_old` is None for a new migration."""

    def on_plan(self, age: float) -> None:
        """Intake read the exporter's plan, assessed `age` seconds ago (webhook clock)."""

    def on_withheld(self, reason: str) -> None:
        """Intake took no decision for a notification: `reason` is one of WITHHELD_REASONS."""


class NoObserver:
    """The default observer: ignores everything."""

    def on_step(self, m: Migration, action: str, outcome: str) -> None:
        return None

    def on_phase(self, m_old: Migration | None, m_new: Migration) -> None:
        return None

    def on_plan(self, age: float) -> None:
        return None

    def on_withheld(self, reason: str) -> None:
        return None
