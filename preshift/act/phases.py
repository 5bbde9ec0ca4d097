"""The migration state machine's phases and the one table of allowed transitions. Pure.

A migration moves one replica (action "move"), adds one ("scale_up"), or starts a
replacement for one that is gone ("new_instance"). Every phase is journaled before the
executor acts in it, so a restart re-enters the phase and re-observes the world.

    PLANNED ─► STARTING ─► HEALTH_CHECK ─► [AWAITING_APPROVAL] ─► ROUTING ─► SHIFTING ─► PROMOTED
       │                                                                                  │
       ├─► CANCELLED   (resolved / aborted / stale before anything started; also from
       │                STARTING when no replica is left to copy)          move: DRAINING ─┤
       └─► DRY_RUN     (dry-run: the plan is journaled, nothing changes)                   │
                                                                   STANDBY ◄──────────────┘
    any phase up to DRAINING ─► ROLLING_BACK ─► ROLLED_BACK            │ ttl healthy ─► SUCCEEDED
                                        └────► FAILED                  └ new one fails ─► RESTORING
                                                                           ─► ROLLED_BACK | FAILED
    scale_up / new_instance: PROMOTED ─► SUCCEEDED (nothing to drain or keep on standby)
    STANDBY ─► FAILED when removing the standby fails for good (the new instance is kept)
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PLANNED = "planned"
    """Journaled; waits for a slot (concurrency, cooldown, move budget)."""
    STARTING = "starting"
    """Creating the new instance on the target node (image copied there if needed)."""
    HEALTH_CHECK = "health_check"
    """Waiting for the new instance's healthcheck or HTTP probe to pass."""
    AWAITING_APPROVAL = "awaiting_approval"
    """The new instance is healthy; traffic moves only after someone approves."""
    ROUTING = "routing"
    """Registering the new instance in the traffic layer at weight 0, waiting until UP."""
    SHIFTING = "shifting"
    """Raising the new instance's weight step by step, with an analysis at every step."""
    PROMOTED = "promoted"
    """The new instance carries its full share of traffic."""
    DRAINING = "draining"
    """The original takes no new connections; waiting for its open ones to finish."""
    STANDBY = "standby"
    """The original is stopped and kept; the new one is watched for standby_ttl."""
    RESTORING = "restoring"
    """The new instance failed while the original was on standby: restart it, shift back."""
    ROLLING_BACK = "rolling_back"
    """Weights back to the original, new instance removed; the original was never touched."""
    SUCCEEDED = "succeeded"
    """Done; for a move the standby has been decommissioned (removed)."""
    ROLLED_BACK = "rolled_back"
    """Undone; the original serves as before."""
    CANCELLED = "cancelled"
    """Dropped before anything changed (alert resolved, aborted, superseded)."""
    DRY_RUN = "dry_run"
    """Dry-run: journaled for review, nothing changed."""
    FAILED = "failed"
    """A rollback or restore could not finish; needs a human (the runbook says how)."""


P = Phase
TERMINAL: frozenset[Phase] = frozenset(
    {P.SUCCEEDED, P.ROLLED_BACK, P.CANCELLED, P.DRY_RUN, P.FAILED}
)
#: Phases that move or may move traffic; these count against migration.max_concurrent.
IN_FLIGHT: frozenset[Phase] = frozenset(
    {P.STARTING, P.HEALTH_CHECK, P.AWAITING_APPROVAL, P.ROUTING, P.SHIFTING, P.PROMOTED,
     P.DRAINING, P.RESTORING, P.ROLLING_BACK}
)
_BACK = P.ROLLING_BACK

#: The only allowed transitions (staying in a phase is always allowed: a tick that waits).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    P.PLANNED: frozenset({P.STARTING, P.CANCELLED, P.DRY_RUN}),
    # STARTING → CANCELLED: no running replica left to copy and no new container created.
    P.STARTING: frozenset({P.HEALTH_CHECK, _BACK, P.CANCELLED}),
    P.HEALTH_CHECK: frozenset({P.AWAITING_APPROVAL, P.ROUTING, _BACK}),
    P.AWAITING_APPROVAL: frozenset({P.ROUTING, _BACK}),
    P.ROUTING: frozenset({P.SHIFTING, _BACK}),
    P.SHIFTING: frozenset({P.PROMOTED, _BACK}),
    P.PROMOTED: frozenset({P.DRAINING, P.SUCCEEDED, _BACK}),
    P.DRAINING: frozenset({P.STANDBY, _BACK}),
    # STANDBY → FAILED: decommissioning the standby failed for good while the new instance
    # is fine; restoring would undo a good migration, so a human removes the leftover.
    P.STANDBY: frozenset({P.SUCCEEDED, P.RESTORING, P.FAILED}),
    P.RESTORING: frozenset({P.ROLLED_BACK, P.FAILED}),
    P.ROLLING_BACK: frozenset({P.ROLLED_BACK, P.FAILED}),
    **{t: frozenset() for t in TERMINAL},
}


def allowed(old: Phase, new: Phase) -> bool:
    """True when the table permits old → new (or the phase stays)."""
    return new == old or new in TRANSITIONS[old]
