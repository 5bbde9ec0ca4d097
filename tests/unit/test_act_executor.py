"""Executor walk-throughs against the in-memory world (no sleeps: an injectable clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from preshift.act.phases import Phase
from preshift.act.records import ReplicaRef
from preshift.errors import ActionError

from .act_fakes import Harness, move_item

P = Phase


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "j.sqlite3")


def phases(h: Harness) -> list[str]:
    return [new for _, new in h.events.phases]


def test_move_succeeds_end_to_end(h: Harness) -> None:
    h.fire()
    m = h.run()
    assert m.phase == P.SUCCEEDED, m
    assert phases(h) == ["planned", "starting", "health_check", "routing", "shifting",
                         "promoted", "draining", "standby", "succeeded"]
    # The canary serves alone; the original and its server are gone.
    assert set(h.world.boxes) == {("n2", m.canary_name)}
    assert set(h.world.backends["be_web"]) == {m.canary_name}
    assert h.world.backends["be_web"][m.canary_name].weight == 100
    assert not h.world.violations and not h.events.bad
    # Every effect's intent was journaled with an outcome; none left open.
    assert not h.journal.open_steps(m.id)
    actions = [s.action for s in h.journal.steps(m.id)]
    for a in ("clone", "add_server", "set_weights", "drain", "standby", "remove_server",
              "remove_container"):
        assert a in actions
    labels = h.world.boxes[("n2", m.canary_name)].labels
    assert labels["preshift.migration"] == m.id and labels["preshift.replaces"] == "web-1"
    notes = h.journal.notifications()
    assert notes[0].outcome.startswith(f"migration {m.id} created")


def test_weights_follow_the_steps(h: Harness) -> None:
    h.fire()
    seen = []
    for _ in range(200):
        h.tick()
        srvs = h.world.backends.get("be_web", {})
        m = h.m()
        if m.canary_name in srvs and "web-1" in srvs:
            pair = (srvs[m.canary_name].weight, srvs["web-1"].weight)
            if not seen or seen[-1] != pair:
                seen.append(pair)
        if m.phase == P.PROMOTED or m.terminal:
            break
    assert seen == [(0, 100), (25, 75), (50, 50), (100, 0)]


def test_health_gate_fails_rolls_back_and_leaves_original(h: Harness) -> None:
    h.world.clone_health = "starting"
    h.fire()
    m = h.run()
    assert m.phase == P.ROLLED_BACK
    assert "not healthy within" in m.reason
    assert set(h.world.boxes) == {("n1", "web-1")}
    assert h.world.boxes[("n1", "web-1")].state == "running"
    assert h.world.backends["be_web"]["web-1"].weight == 100
    # The original was never touched.
    assert not [c for c in h.world.mutations() if "web-1" in c]


def test_analysis_failure_rolls_back(h: Harness) -> None:
    h.fire()
    h.run(until=lambda m: m.phase == P.ROUTING)
    h.world.box_named(h.m().canary_name).fail_ratio = 0.5  # type: ignore[union-attr]
    m = h.run()
    assert m.phase == P.ROLLED_BACK and m.failed_checks == 2
    assert "analysis failed" in m.reason
    assert set(h.world.backends["be_web"]) == {"web-1"}
    assert h.world.backends["be_web"]["web-1"].weight == 100
    assert ("n2", m.canary_name) not in h.world.boxes
    assert not h.world.violations


def test_hold_without_data_never_passes_and_times_out(h: Harness) -> None:
    h.world.requests_per_read = 0  # no traffic reaches anyone
    h.fire()
    m = h.run(until=lambda m: m.phase == P.SHIFTING)
    for _ in range(20):
        h.tick()
    m = h.m()
    assert m.phase == P.SHIFTING and m.step == 0 and m.failed_checks == 0
    assert m.data["last_check"]["verdict"] == "hold"
    m = h.run()
    assert m.phase == P.ROLLED_BACK and "no progress in shifting" in m.reason


def test_approval_gate(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", require_approval=True)
    h.fire()
    m = h.run(until=lambda m: m.phase == P.AWAITING_APPROVAL)
    assert m.approval == "pending"
    for _ in range(300):  # waits as long as it takes: no deadline for a person
        h.tick()
    assert h.m().phase == P.AWAITING_APPROVAL
    assert m.canary_name not in h.world.backends["be_web"]
    h.journal.request(m.id, "approve")
    m = h.run()
    assert m.phase == P.SUCCEEDED and m.approval == "approved"


def test_abort_while_awaiting_approval_rolls_back(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", require_approval=True)
    h.fire()
    m = h.run(until=lambda m: m.phase == P.AWAITING_APPROVAL)
    h.journal.request(m.id, "abort")
    m = h.run()
    assert m.phase == P.ROLLED_BACK and "abort" in m.reason and m.request is None
    assert set(h.world.boxes) == {("n1", "web-1")}


def test_abort_planned_cancels(h: Harness) -> None:
    h.fire()
    h.ex.take_notifications()
    m = h.m()
    assert m.phase == P.PLANNED
    h.journal.request(m.id, "abort")
    m = h.run()
    assert m.phase == P.CANCELLED and not h.world.mutations()


def test_rollback_request_in_standby_restores(h: Harness) -> None:
    h.fire()
    m = h.run(until=lambda m: m.phase == P.STANDBY)
    assert h.world.boxes[("n1", "web-1")].state == "exited"
    assert h.world.boxes[("n1", "web-1")].restart_policy == "no"
    h.journal.request(m.id, "rollback")
    m = h.run()
    assert m.phase == P.ROLLED_BACK, m
    assert phases(h)[-2:] == ["restoring", "rolled_back"]
    assert h.world.boxes[("n1", "web-1")].state == "running"
    assert h.world.boxes[("n1", "web-1")].restart_policy == "unless-stopped"  # given back
    assert set(h.world.boxes) == {("n1", "web-1")}
    assert set(h.world.backends["be_web"]) == {"web-1"}
    srv = h.world.backends["be_web"]["web-1"]
    assert srv.weight == 100 and srv.admin == "ready"
    assert not h.world.violations


def test_canary_dies_in_standby_restores(h: Harness) -> None:
    h.fire()
    m = h.run(until=lambda m: m.phase == P.STANDBY)
    h.world.boxes[("n2", m.canary_name)].state = "exited"
    m = h.run()
    assert m.phase == P.ROLLED_BACK and "exited" in m.reason
    assert h.world.boxes[("n1", "web-1")].state == "running"


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", dry_run=True)
    h.fire()
    m = h.run()
    assert m.phase == P.DRY_RUN and m.dry_run
    assert m.data["plan"]["replica"] == "web-1" and m.data["steps"]
    assert m.reason == "risk 0.5 > tolerance 0.2"
    assert not h.world.mutations()


def test_traffic_none_promotes_after_health_and_one_interval(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", traffic="none")
    h.fire()
    m = h.run()
    assert m.phase == P.SUCCEEDED and m.backend is None
    assert not [c for c in h.world.calls if c[0] in ("add_server", "set_weight", "drain")]
    assert set(h.world.boxes) == {("n2", m.canary_name)}


def test_scale_up_copies_a_running_replica(tmp_path: Path) -> None:
    item = move_item("web-1", "n3", action="scale_up",
                     replicas=(ReplicaRef("n1", "web-1"), ReplicaRef("n1", "web-2")))
    h = Harness(tmp_path / "j.sqlite3", items=[item], replicas=2)
    h.fire()
    h.ex.take_notifications()
    h.world.boxes[("n1", "web-1")].state = "exited"  # the plan's replica died meanwhile
    m = h.run()
    assert m.phase == P.SUCCEEDED and m.source_name == "web-2"
    srvs = h.world.backends["be_web"]
    assert srvs[m.canary_name].weight == 100 and srvs["web-2"].weight == 100
    assert ("n1", "web-2") in h.world.boxes  # nothing drained or removed
    labels = h.world.boxes[("n3", m.canary_name)].labels
    assert labels["preshift.copy_of"] == "web-2"
    assert labels["preshift.scale-up"] == "true"  # a spare: not in the intended count


def test_scale_up_with_nothing_to_copy_is_cancelled(tmp_path: Path) -> None:
    item = move_item("web-1", "n3", action="scale_up")
    h = Harness(tmp_path / "j.sqlite3", items=[item])
    h.fire()
    h.ex.take_notifications()
    h.world.boxes[("n1", "web-1")].state = "exited"
    m = h.run()
    assert m.phase == P.CANCELLED and "no running replica" in m.reason
    assert not h.world.mutations()


def test_transient_error_retries_in_place(h: Harness) -> None:
    h.fire()
    h.run(until=lambda m: m.phase == P.STARTING)
    h.world.fail["clone"] = ActionError("engine timeout", retriable=True)
    h.tick()
    m = h.m()
    assert m.phase == P.STARTING and m.attempt == 1 and "engine timeout" in (m.error or "")
    m = h.run()
    assert m.phase == P.SUCCEEDED
    assert any(s[1:] == ("clone", "error") for s in h.events.steps)


def test_permanent_error_rolls_back(h: Harness) -> None:
    h.fire()
    h.run(until=lambda m: m.phase == P.ROUTING)
    h.world.fail["add_server"] = ActionError("No such backend.")
    m = h.run()
    assert m.phase == P.ROLLED_BACK and "No such backend" in m.reason
    assert set(h.world.boxes) == {("n1", "web-1")}


def test_permanent_error_during_rollback_fails(h: Harness) -> None:
    h.fire()
    h.run(until=lambda m: m.phase == P.ROUTING)
    h.world.fail["add_server"] = ActionError("No such backend.")
    h.world.fail_always["remove"] = ActionError("conflict: container is pinned")
    m = h.run()
    assert m.phase == P.FAILED and "pinned" in m.reason


def test_source_gone_before_start_cancels_as_stale(h: Harness) -> None:
    h.fire()
    h.ex.take_notifications()
    del h.world.boxes[("n1", "web-1")]
    m = h.run()
    assert m.phase == P.CANCELLED and "stale" in m.reason and not h.world.mutations()


def test_promql_analysis_query(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3",
                analysis={"query": 'rate(x{c="{canary}",s="{component}"}[1m])',
                          "query_max": 1.0})
    asked: list[str] = []
    h.query = lambda q: asked.append(q) or 5.0  # too high
    h.fire()
    m = h.run()
    assert m.phase == P.ROLLED_BACK and "query_max" in m.reason
    assert asked[0] == f'rate(x{{c="{m.canary_name}",s="web"}}[1m])'


def test_observer_errors_do_not_stop_migrations(h: Harness) -> None:
    class Broken:
        def on_step(self, *a: object) -> None:
            raise RuntimeError("metrics down")

        def on_phase(self, *a: object) -> None:
            raise RuntimeError("metrics down")

    h.ex.observer = Broken()
    h.ex.intake.observer = Broken()
    h.fire()
    assert h.run().phase == P.SUCCEEDED


def test_a_component_needing_two_moves_gets_them_one_after_another(tmp_path: Path) -> None:
    """One alert instance, two plan entries: the second move starts from the then current
    plan after the first succeeded (Alertmanager's repeats are duplicates and never would)."""
    items = [move_item("web-1", "n2"), move_item("web-2", "n3")]
    h = Harness(tmp_path / "j.sqlite3", items=items, replicas=2)
    h.fire()
    first = h.run()
    assert first.phase == P.SUCCEEDED
    for _ in range(5):
        h.tick()
    ms = h.journal.migrations()
    assert len(ms) == 2, ms
    second = h.run()
    assert second.id != first.id and second.phase == P.SUCCEEDED
    assert {first.source_name, second.source_name} == {"web-1", "web-2"}
    outcome = h.journal.notifications()[0].outcome
    assert outcome.startswith(f"migration {first.id} created"), outcome
    assert f"reopened after migration {first.id}" in outcome


def test_a_resolved_alert_is_not_reopened(tmp_path: Path) -> None:
    items = [move_item("web-1", "n2"), move_item("web-2", "n3")]
    h = Harness(tmp_path / "j.sqlite3", items=items, replicas=2)
    h.fire()
    h.run(until=lambda m: m.phase == P.STANDBY)
    h.fire(status="resolved")
    h.run()
    for _ in range(5):
        h.tick()
    assert len(h.journal.migrations()) == 1


def test_a_migration_waiting_for_a_slot_is_not_inspected(tmp_path: Path) -> None:
    from preshift.act.records import Migration

    h = Harness(tmp_path / "j.sqlite3", max_concurrent=1)
    h.fire()
    h.run(until=lambda m: m.phase == P.SHIFTING)
    h.world.add("n1", "api-1", "api")
    h.journal.create_migration(Migration(
        id="m-api", component="api", action="move", target_node="n3", canary_name="api-m",
        source_node="n1", source_name="api-1"))
    seen: list[str] = []
    inspect = h.world.inspect
    h.world.inspect = lambda node, name: seen.append(name) or inspect(node, name)  # type: ignore[method-assign]
    h.tick()
    waiting = h.journal.get("m-api")
    assert waiting is not None and waiting.phase == P.PLANNED
    assert "max_concurrent" in waiting.data["waiting"] and "api-1" not in seen
    del h.world.boxes[("n1", "api-1")]  # gone while it waits: cancelled once it could start
    for _ in range(200):
        h.tick()
        done = h.journal.get("m-api")
        if done is not None and done.terminal:
            break
    assert done is not None and done.phase == P.CANCELLED and "plan is stale" in done.reason
    assert h.journal.migrations(component="web")[0].phase in (P.STANDBY, P.SUCCEEDED)
