"""Safety limits: may a plan entry become a migration, and may a planned one start? Pure.

Two kinds of "no":

- a refusal (`Admission.ok` False, `wait` False): the entry never becomes a migration; the
  reason is journaled as the notification's outcome. Stateful services without
  `move_stateful`, a component that already has an unfinished migration, a move of a service
  that is already below min_available (a new copy comes first: the planner plans those first),
  and moves when `max_moves_per_node_per_hour` is 0.
- a wait (`wait` True): the entry becomes a PLANNED migration that starts when the limit
  allows — `max_concurrent`, the per-component cooldown, moves off a node per hour. A refusal
  here would lose the alert: Alertmanager's repeats carry the same fingerprint + startsAt and
  are deduplicated, so nothing would ask again until the alert resolves and fires anew.

`migrations` is what the journal returns for `since=now − window` (all unfinished ones plus
those that finished inside the window), newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import MigrationConfig, ServiceConfig
from .phases import IN_FLIGHT, Phase
from .records import Migration, PlanItem

HOUR = 3600.0
#: Finished phases in which nothing was changed: they start no cooldown and use no budget.
NOTHING_CHANGED = frozenset({Phase.CANCELLED, Phase.DRY_RUN})


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    reason: str = ""
    wait: bool = False  # ok, but it must wait in PLANNED: `reason` says for what


def window(cfg: MigrationConfig) -> float:
    """How far back the journal must be read for these checks."""
    return max(HOUR, cfg.cooldown)


def admit(
    item: PlanItem,
    *,
    running: int,
    service: ServiceConfig,
    cfg: MigrationConfig,
    migrations: Sequence[Migration],
    now: float,
) -> Admission:
    """May `item` become a migration? `running`: the component's running replicas now (live)."""
    if service.stateful and not cfg.move_stateful:
        return Admission(False, f"{item.component} is stateful: not migrated "
                         "(set migration.move_stateful to allow)")
    busy = [m for m in migrations if m.component == item.component and m.finished_at is None
            and not cleanup_only(m)]
    if busy:
        # journal.reopen_refused finds these by "already has migration <id> (": keep it
        return Admission(False, f"{item.component} already has migration {busy[0].id} "
                         f"({busy[0].phase})")
    if item.action == "move":
        if cfg.max_moves_per_node_per_hour == 0:
            return Admission(False, "moves are disabled (migration.max_moves_per_node_per_hour "
                             "is 0)")
        if running < service.min_available:
            # A move keeps the count, but with the service already short a new copy is the
            # urgent step; the planner plans those first.
            return Admission(False, f"{item.component} has {running} running replica(s), below "
                             f"min_available {service.min_available}: a new copy comes first")
    # scale_up / new_instance add a replica and never lower the count; a move starts the new
    # copy before the old one stops, so the count after the step is at least `running`.
    why = wait_reason(item.component, item.action, item.from_node, cfg=cfg,
                      migrations=migrations, now=now)
    return Admission(True, why or "", wait=why is not None)


def may_start(m: Migration, *, cfg: MigrationConfig, migrations: Sequence[Migration],
              now: float) -> str | None:
    """Why the PLANNED migration `m` must wait still, or None when it may start now."""
    others = [o for o in migrations if o.id != m.id]
    return wait_reason(m.component, m.action, m.source_node, cfg=cfg, migrations=others,
                       now=now)


def wait_reason(
    component: str,
    action: str,
    from_node: str | None,
    *,
    cfg: MigrationConfig,
    migrations: Sequence[Migration],
    now: float,
) -> str | None:
    """The first limit that holds a migration of `component` back now, or None."""
    flying = [m for m in migrations if m.phase in IN_FLIGHT and not cleanup_only(m)]
    if len(flying) >= cfg.max_concurrent:
        return (f"max_concurrent {cfg.max_concurrent} reached "
                f"({', '.join(sorted(m.id for m in flying))})")
    last = last_finished(component, migrations)
    if last is not None and last.finished_at is not None:
        left = last.finished_at + cfg.cooldown - now
        if left > 0:
            return (f"cooldown: {component}'s last migration {last.id} ended; "
                    f"{left:.0f}s of migration.cooldown left")
    if action == "move" and from_node is not None:
        n = moves_off(from_node, migrations, now)
        if n >= cfg.max_moves_per_node_per_hour:
            return (f"{n} move(s) off {from_node} in the last hour "
                    f"(max_moves_per_node_per_hour {cfg.max_moves_per_node_per_hour})")
    return None


def cleanup_only(m: Migration) -> bool:
    """Rolled back, restored or decommissioned except for removing a container (the canary,
    or the original) on an engine that does not answer (machine.py keeps that obligation
    without a deadline): it holds no slot and does not block its component, or a node that
    never returns would stop migrations for good."""
    return (m.phase in (Phase.ROLLING_BACK, Phase.RESTORING, Phase.STANDBY)
            and bool(m.data.get("cleanup")))


def last_finished(component: str, migrations: Sequence[Migration]) -> Migration | None:
    """The component's most recently finished migration that changed something."""
    done = [m for m in migrations if m.component == component and m.finished_at is not None
            and m.phase not in NOTHING_CHANGED]
    return max(done, key=lambda m: m.finished_at or 0.0, default=None)


def moves_off(node: str, migrations: Sequence[Migration], now: float) -> int:
    """Moves off `node` that started in the last hour (a PLANNED one has not moved anything)."""
    return sum(
        1 for m in migrations
        if m.action == "move" and m.source_node == node and m.phase not in NOTHING_CHANGED
        and m.phase != Phase.PLANNED and now - started_at(m) < HOUR
    )


def started_at(m: Migration) -> float:
    return float(m.data.get("started_at", m.created_at))
