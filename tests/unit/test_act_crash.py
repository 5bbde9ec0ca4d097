"""Crash-resume: the process dies between a step's intent and its effect, or between the
effect and the row update; a fresh executor on the same journal file must converge with no
orphan canary and consistent weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from preshift.act.executor import INTERRUPTED
from preshift.act.phases import Phase
from preshift.errors import ActionError

from .act_fakes import Crash, Harness

P = Phase
FORWARD = ["clone", "add_server", "set_weight", "drain", "standby", "remove_server", "remove"]


def run_with_crash(h: Harness) -> None:
    """Tick until the injected crash fires, then restart the process."""
    for _ in range(200):
        try:
            h.tick()
        except Crash:
            h.restart()
            return
    raise AssertionError("the crash never happened")


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("method", FORWARD)
def test_crash_in_a_successful_move_resumes(tmp_path: Path, method: str, when: str) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    h.world.crash[method] = when
    h.fire()
    run_with_crash(h)
    m = h.run()
    assert m.phase == P.SUCCEEDED, m
    assert set(h.world.boxes) == {("n2", m.canary_name)}
    assert {n: s.weight for n, s in h.world.backends["be_web"].items()} == {m.canary_name: 100}
    assert not h.world.violations and not h.events.bad
    # The fresh executor closed the intent the crash interrupted, and says so.
    assert not h.journal.open_steps(m.id)
    interrupted = [s for s in h.journal.steps(m.id) if s.outcome == INTERRUPTED]
    assert len(interrupted) == 1, interrupted


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("method", ["set_weight", "remove_server", "remove"])
def test_crash_during_rollback_converges(tmp_path: Path, method: str, when: str) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == P.SHIFTING and m.step == 1)
    h.world.box_named(h.m().canary_name).fail_ratio = 1.0  # type: ignore[union-attr]
    h.run(until=lambda m: m.phase == P.ROLLING_BACK)
    h.world.crash[method] = when
    run_with_crash(h)
    m = h.run()
    assert m.phase == P.ROLLED_BACK, m
    assert set(h.world.boxes) == {("n1", "web-1")}
    assert {n: s.weight for n, s in h.world.backends["be_web"].items()} == {"web-1": 100}
    assert not h.world.violations
    assert not h.journal.open_steps(m.id)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("method", ["start", "add_server", "ready", "set_weight",
                                    "remove_server", "remove"])
def test_crash_while_restoring_converges(tmp_path: Path, method: str, when: str) -> None:
    h = Harness(tmp_path / "j.sqlite3")
    h.fire()
    m = h.run(until=lambda m: m.phase == P.STANDBY)
    h.world.backends["be_web"].pop("web-1")  # e.g. HAProxy reloaded: runtime servers vanish
    h.journal.request(m.id, "rollback")
    h.world.crash[method] = when
    run_with_crash(h)
    m = h.run()
    assert m.phase == P.ROLLED_BACK, m
    assert set(h.world.boxes) == {("n1", "web-1")}
    assert h.world.boxes[("n1", "web-1")].state == "running"
    assert h.world.boxes[("n1", "web-1")].restart_policy == "unless-stopped"
    assert {n: s.weight for n, s in h.world.backends["be_web"].items()} == {"web-1": 100}


def test_crash_after_standby_then_canary_fails_restarts_original(tmp_path: Path) -> None:
    """The standby happened but the row still says DRAINING; the canary then dies: the
    rollback must start the original again, not leave the component with nothing."""
    h = Harness(tmp_path / "j.sqlite3")
    h.world.crash["standby"] = "after"
    h.fire()
    run_with_crash(h)
    m = h.m()
    assert m.phase == P.DRAINING and h.world.boxes[("n1", "web-1")].state == "exited"
    h.world.boxes[("n2", m.canary_name)].state = "exited"
    m = h.run()
    assert m.phase == P.ROLLED_BACK
    assert h.world.boxes[("n1", "web-1")].state == "running"
    assert h.world.boxes[("n1", "web-1")].restart_policy == "unless-stopped"
    assert ("n2", m.canary_name) not in h.world.boxes


def test_cas_conflict_is_retried(tmp_path: Path) -> None:
    """An operator's request lands between the reload and the update: nothing is lost."""
    h = Harness(tmp_path / "j.sqlite3", require_approval=True)
    h.fire()
    m = h.run(until=lambda m: m.phase == P.AWAITING_APPROVAL)
    stale = h.journal.get(m.id)
    h.journal.request(m.id, "approve")
    assert stale is not None
    with pytest.raises(ActionError) as e:
        h.journal.update(stale, phase=P.ROLLING_BACK)
    assert e.value.retriable
    assert h.run().phase == P.SUCCEEDED


def test_restart_after_an_outage_longer_than_the_deadline_resumes(tmp_path: Path) -> None:
    """The webhook was down for longer than progress_deadline: a fresh executor resumes the
    shift (its deadlines count from its own start) instead of rolling back at once."""
    h = Harness(tmp_path / "j.sqlite3")
    h.fire()
    m = h.run(until=lambda m: m.phase == P.SHIFTING and m.step == 1)
    h.clock.advance(h.config.migration.progress_deadline * 3)  # the outage
    h.restart()
    m = h.run()
    assert m.phase == P.SUCCEEDED, m
    assert "rolling_back" not in [s.phase for s in h.journal.steps(m.id)]


def test_without_a_restart_a_stalled_shift_rolls_back(tmp_path: Path) -> None:
    """The same gap seen by a running executor is a stall: the deadline rolls it back."""
    h = Harness(tmp_path / "j.sqlite3")
    h.fire()
    h.run(until=lambda m: m.phase == P.SHIFTING and m.step == 1)
    h.tick(h.config.migration.progress_deadline * 3)
    assert h.m().phase == P.ROLLING_BACK
