"""The journal: deduplication, compare-and-set, the transition table, operator requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from preshift.act.journal import Journal, Migration, Notification
from preshift.act.phases import TERMINAL, TRANSITIONS, Phase, allowed
from preshift.errors import ActionError, InputError

from .act_fakes import Clock


@pytest.fixture
def j(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.sqlite3", clock=Clock())


def note(status: str = "firing", fp: str = "f1") -> Notification:
    return Notification(status, "A", "web", fp, "2025-01-01T00:00:00Z", {"component": "web"})


def mig(mid: str = "m1", alert_key: str = "f1|2025-01-01T00:00:00Z") -> Migration:
    return Migration(id=mid, component="web", action="move", target_node="n2",
                     canary_name=f"web-{mid}", alert_key=alert_key)


def test_duplicates_are_recorded_once(j: Journal) -> None:
    assert j.record_notifications([note(), note(), note("resolved")]) == [True, False, True]
    assert j.record_notifications([note()]) == [False]
    assert [n.status for n in j.unhandled_notifications()] == ["firing", "resolved"]
    j.mark_handled(j.unhandled_notifications()[0].id, "done")
    assert j.count_unhandled() == 1


def test_compare_and_set(j: Journal) -> None:
    m = j.create_migration(mig())
    m2 = j.update(m, phase=Phase.STARTING)
    with pytest.raises(ActionError) as e:
        j.update(m, phase=Phase.CANCELLED)  # stale copy
    assert e.value.retriable
    assert j.get("m1") == m2


def test_updated_at_grows_even_when_the_clock_stands_still(j: Journal) -> None:
    m = j.create_migration(mig())
    a = j.update(m, weight=1)
    b = j.update(a, weight=2)
    assert m.updated_at < a.updated_at < b.updated_at


def test_transitions_outside_the_table_are_refused(j: Journal) -> None:
    m = j.create_migration(mig())
    with pytest.raises(ActionError, match="not allowed"):
        j.update(m, phase=Phase.SHIFTING)
    assert j.get("m1").phase == Phase.PLANNED  # type: ignore[union-attr]


def test_table_terminal_phases_are_final() -> None:
    for t in TERMINAL:
        assert TRANSITIONS[t] == frozenset()
        assert all(not allowed(t, p) for p in Phase if p != t)
    assert set(TRANSITIONS) == set(Phase)


def test_requests(j: Journal) -> None:
    m = j.create_migration(mig())
    with pytest.raises(InputError, match="use abort"):
        j.request("m1", "rollback")
    with pytest.raises(InputError, match="not waiting"):
        j.request("m1", "approve")
    with pytest.raises(InputError, match="unknown request"):
        j.request("m1", "promote")
    with pytest.raises(LookupError):
        j.request("nope", "abort")
    r = j.request("m1", "abort")
    assert r.request == "abort" and j.get("m1").request == "abort"  # type: ignore[union-attr]
    with pytest.raises(ActionError):  # the request changed the row: the old copy is stale
        j.update(m, phase=Phase.STARTING)
    done = j.update(r, phase=Phase.CANCELLED, request=None)
    assert done.terminal and done.finished_at is not None
    with pytest.raises(InputError, match="finished"):
        j.request("m1", "abort")


def test_filters(j: Journal) -> None:
    clock = j.clock
    old = j.create_migration(mig("old"))
    j.update(old, phase=Phase.CANCELLED)
    clock.advance(7200)  # type: ignore[attr-defined]
    j.create_migration(mig("new", alert_key="other"))
    assert [m.id for m in j.migrations(since=clock() - 3600)] == ["new"]  # type: ignore[operator]
    assert [m.id for m in j.migrations(alert_key="other")] == ["new"]
    assert [m.id for m in j.migrations(active=False)] == ["old"]


def test_steps_intent_then_outcome(j: Journal) -> None:
    m = j.create_migration(mig())
    sid = j.begin_step(m, "clone", "copy web-1")
    assert [s.action for s in j.open_steps("m1")] == ["clone"]
    j.end_step(sid, "ok")
    assert not j.open_steps("m1")
