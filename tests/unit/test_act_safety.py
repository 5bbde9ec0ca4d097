"""Safety limits: refusals and waits."""

from __future__ import annotations

from typing import Any

from preshift.act import safety
from preshift.act.phases import Phase
from preshift.act.records import Migration
from preshift.config import MigrationConfig, ServiceConfig

from .act_fakes import move_item

NOW = 100_000.0
CFG = MigrationConfig(max_concurrent=1, cooldown=300, max_moves_per_node_per_hour=2)


def mig(mid: str, component: str = "api", phase: Phase = Phase.SHIFTING,
        finished_at: float | None = None, **kw: Any) -> Migration:
    return Migration(id=mid, component=component, action=kw.pop("action", "move"),
                     target_node="n2", canary_name=f"{component}-{mid}", phase=phase,
                     source_node=kw.pop("source_node", "n1"), finished_at=finished_at,
                     created_at=kw.pop("created_at", NOW - 10), **kw)


def admit(*ms: Migration, running: int = 2, service: ServiceConfig | None = None,
          cfg: MigrationConfig = CFG, **item: Any) -> safety.Admission:
    return safety.admit(move_item(**item), running=running, service=service or ServiceConfig(),
                        cfg=cfg, migrations=ms, now=NOW)


def test_free_world_admits() -> None:
    assert admit() == safety.Admission(True, "", False)


def test_hard_refusals() -> None:
    assert not admit(service=ServiceConfig(stateful=True)).ok
    assert admit(service=ServiceConfig(stateful=True),
                 cfg=MigrationConfig(move_stateful=True)).ok
    busy = admit(mig("m1", component="web", phase=Phase.PLANNED))
    assert not busy.ok and "already has migration m1" in busy.reason
    short = admit(running=1, service=ServiceConfig(min_available=2))
    assert not short.ok and "min_available" in short.reason
    # A new copy is fine below min_available: it adds one.
    assert admit(running=1, service=ServiceConfig(min_available=2), action="scale_up").ok
    assert not admit(cfg=MigrationConfig(max_moves_per_node_per_hour=0)).ok


def test_a_rollback_waiting_only_for_a_dead_engine_holds_no_slot() -> None:
    stuck = mig("m1", component="web", phase=Phase.ROLLING_BACK, data={"cleanup": True})
    assert admit(stuck) == safety.Admission(True, "", False)
    assert not admit(mig("m2", component="web", phase=Phase.ROLLING_BACK)).ok
    busy = admit(mig("m3", phase=Phase.RESTORING))
    assert busy.wait and "max_concurrent" in busy.reason


def test_waits() -> None:
    a = admit(mig("m1"))
    assert a.ok and a.wait and "max_concurrent" in a.reason
    cool = admit(mig("m2", component="web", phase=Phase.SUCCEEDED, finished_at=NOW - 100))
    assert cool.wait and "cooldown" in cool.reason
    # Cancelled and dry-run migrations changed nothing: no cooldown.
    assert not admit(mig("m3", component="web", phase=Phase.CANCELLED,
                         finished_at=NOW - 100)).wait
    moves = [mig(f"x{i}", component=f"c{i}", phase=Phase.ROLLED_BACK, finished_at=NOW - 50,
                 data={"started_at": NOW - 600}) for i in range(2)]
    budget = admit(*moves)
    assert budget.wait and "move(s) off n1" in budget.reason
    old = [mig(f"x{i}", component=f"c{i}", phase=Phase.ROLLED_BACK, finished_at=NOW - 50,
               data={"started_at": NOW - 4000}) for i in range(2)]
    assert not admit(*old).wait


def test_may_start_ignores_itself() -> None:
    me = mig("me", component="web", phase=Phase.PLANNED)
    assert safety.may_start(me, cfg=CFG, migrations=[me], now=NOW) is None
    assert safety.may_start(me, cfg=CFG, migrations=[me, mig("o")], now=NOW) is not None


def test_a_burst_of_planned_moves_starts_within_every_limit() -> None:
    """The executor's loop over a storm's PLANNED moves off one node (oldest first, the list
    re-read after each start): never more than max_concurrent in flight, exactly the node's
    budget started within the hour, and the next hour's budget only after it."""
    from dataclasses import replace

    cfg = MigrationConfig(max_concurrent=3, cooldown=600, max_moves_per_node_per_hour=7)
    ms = {f"m{i:02d}": mig(f"m{i:02d}", component=f"c{i}", phase=Phase.PLANNED,
                           source_node="n2", created_at=NOW + i * 0.001) for i in range(30)}
    now, most, started = NOW, 0, []
    for _ in range(2 * int(safety.HOUR) // 30):  # two hours in 30 s ticks
        now += 30
        for mid in sorted(ms):
            m = ms[mid]
            if m.phase == Phase.SHIFTING and now - safety.started_at(m) >= 60:
                ms[mid] = replace(m, phase=Phase.SUCCEEDED, finished_at=now)
            elif m.phase == Phase.PLANNED and safety.may_start(
                    m, cfg=cfg, migrations=list(ms.values()), now=now) is None:
                ms[mid] = replace(m, phase=Phase.SHIFTING, data={"started_at": now})
                started.append(now)
            most = max(most, sum(1 for x in ms.values() if x.phase in safety.IN_FLIGHT))
        if now - NOW < safety.HOUR:
            assert len(started) <= 7
    assert most == 3
    first_hour = [t for t in started if t - started[0] < safety.HOUR]
    assert len(first_hour) == 7 and len(started) == 14, started
    assert min(t for t in started if t not in first_hour) - started[0] >= safety.HOUR
