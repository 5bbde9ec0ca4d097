"""The executor's observer: hooks for metrics without the core importing prometheus_client.

The webhook passes an object with these two methods (its `MetricsObserver`); the executor
calls them after each journaled step and each phase change. An observer that raises is
logged and ignored: metrics never stop a migration.
"""

from __future__ import annotations

from typing import Protocol

from .records import Migration


class Observer(Protocol):
    def on_step(self, m: Migration, action: str, outcome: str) -> None:
        """A step was taken: `action` (clone, set_weights, phase, ...), `outcome` ok|error."""

    def on_phase(self, m_old: Migration | None, m_new: Migration) -> None:
        """`m_new` was written with a new phase; `m_old` is None for a new migration."""


class NoObserver:
    """The default observer: ignores everything."""

    def on_step(self, m: Migration, action: str, outcome: str) -> None:
        return None

    def on_phase(self, m_old: Migration | None, m_new: Migration) -> None:
        return None
