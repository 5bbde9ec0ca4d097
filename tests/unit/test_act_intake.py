"""Intake: notifications → migrations, with a static plan and the in-memory world."""

from __future__ import annotations

from pathlib import Path

import pytest

from preshift.act.phases import Phase
from preshift.errors import SourceError

from .act_fakes import Harness, move_item


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "j.sqlite3")


def outcomes(h: Harness) -> list[str]:
    return [n.outcome or "" for n in reversed(h.journal.notifications())]


def test_firing_creates_one_planned_migration(h: Harness) -> None:
    h.fire()
    assert h.ex.take_notifications() == 1
    m = h.m()
    assert m.phase == Phase.PLANNED and m.source_name == "web-1" and m.backend == "be_web"
    assert m.canary_name == f"web-{m.id}" and m.alert_key == "fp1|2025-01-01T00:00:00Z"
    assert h.journal.count_unhandled() == 0 and not h.world.mutations()


def test_duplicate_alert_is_idempotent(h: Harness) -> None:
    h.fire()
    h.ex.take_notifications()
    # A crash between creating the migration and marking the notification handled.
    h.journal._db.execute("UPDATE notifications SET handled_at=NULL, outcome=NULL")
    h.ex.take_notifications()
    assert len(h.journal.migrations()) == 1
    assert outcomes(h)[-1].startswith("duplicate")


def test_no_component_label_is_ignored(h: Harness) -> None:
    h.fire(labels={"alertname": "x"})
    h.ex.take_notifications()
    assert outcomes(h) == ["ignored: no component label"] and not h.journal.migrations()


def test_service_label_works_too(h: Harness) -> None:
    h.fire(labels={"service": "web"})
    h.ex.take_notifications()
    assert len(h.journal.migrations()) == 1


def test_stale_entry_is_skipped(h: Harness) -> None:
    h.world.boxes[("n1", "web-1")].state = "exited"
    h.fire()
    h.ex.take_notifications()
    assert "plan is stale" in outcomes(h)[0] and not h.journal.migrations()


def test_refusal_is_journaled(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", services={"web": {"stateful": True}})
    h.fire()
    h.ex.take_notifications()
    assert "refused" in outcomes(h)[0] and "stateful" in outcomes(h)[0]


def test_resolved_cancels_planned(h: Harness) -> None:
    h.fire()
    h.ex.take_notifications()
    h.fire(status="resolved")
    h.ex.take_notifications()
    assert h.m().phase == Phase.CANCELLED
    assert outcomes(h)[-1].startswith("resolved: cancelled")


def test_resolved_does_not_touch_a_started_migration(h: Harness) -> None:
    h.fire()
    h.run(until=lambda m: m.phase == Phase.HEALTH_CHECK)
    h.fire(status="resolved")
    h.ex.take_notifications()
    assert h.m().phase == Phase.HEALTH_CHECK
    assert outcomes(h)[-1] == "resolved: nothing planned to cancel"


def test_no_entry_for_component(h: Harness) -> None:
    h.fire(labels={"component": "api"})
    h.ex.take_notifications()
    assert outcomes(h) == ["nothing to do: the plan has no entry for api"]


def test_plan_unreachable_is_retried_then_given_up(h: Harness) -> None:
    class Down:
        def fetch(self) -> list[object]:
            raise SourceError("exporter plan", "connection refused")

    h.ex.intake.plans = Down()  # type: ignore[assignment]
    h.fire()
    h.ex.take_notifications()
    assert h.journal.count_unhandled() == 1  # kept for a later tick
    h.clock.advance(h.config.migration.progress_deadline + 5)
    h.ex.take_notifications()
    assert outcomes(h)[0].startswith("error: exporter plan: connection refused")


def test_only_the_first_admitted_entry_becomes_a_migration(tmp_path: Path) -> None:
    items = [move_item("web-1", "n2"), move_item("web-2", "n3")]
    h = Harness(tmp_path / "j.sqlite3", items=items, replicas=2)
    h.fire()
    h.ex.take_notifications()
    assert len(h.journal.migrations()) == 1
    assert "1 more entry" in outcomes(h)[0]


def test_waiting_migration_starts_when_the_slot_frees(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", services={"web": {}, "api": {}})
    h.world.add("n1", "api-1", "api")
    h.plans.items.append(move_item("api-1", "n3").__class__(
        action="move", component="api", replica="api-1", from_node="n1", to_node="n3"))
    h.fire()
    h.tick()
    h.fire("fp2", labels={"component": "api"})
    h.tick()
    api = next(m for m in h.journal.migrations() if m.component == "api")
    assert api.phase == Phase.PLANNED and "max_concurrent" in api.data["waiting"]
    h.run(until=lambda m: all(x.terminal for x in h.journal.migrations()), dt=2.0)
    assert {m.component: str(m.phase) for m in h.journal.migrations()} == {
        "web": "succeeded", "api": "succeeded"}
