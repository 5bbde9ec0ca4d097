"""Intake: notifications → migrations, with a static plan and the in-memory world."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from preshift.act.events import WITHHELD_REASONS
from preshift.act.phases import Phase
from preshift.act.plan_source import Plan, PlanError
from preshift.errors import SourceError

from .act_fakes import Harness, Recorder, move_item


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


def test_firing_handled_after_its_resolved_copy_starts_nothing(h: Harness) -> None:
    # HA peers and retries reorder: the resolved notification is journaled first
    h.fire(status="resolved")
    h.fire()
    assert h.ex.take_notifications() == 2
    assert not h.journal.migrations()
    assert outcomes(h)[-1] == "ignored: this alert has already resolved"
    h.fire(fingerprint="fp2")  # another alert instance still starts one
    h.ex.take_notifications()
    assert len(h.journal.migrations()) == 1


def test_alerts_refused_while_busy_get_their_turn_when_it_is_cancelled(h: Harness) -> None:
    h.fire("fp1")
    h.fire("fp2")  # the same component, another alert instance: refused while fp1's waits
    h.ex.take_notifications()
    first = h.m()
    assert "already has migration" in outcomes(h)[-1]
    h.fire("fp1", status="resolved")
    h.ex.take_notifications()  # cancels fp1's and reopens fp2's
    assert h.journal.get(first.id).phase == Phase.CANCELLED
    assert h.ex.take_notifications() == 1
    second = [m for m in h.journal.migrations() if m.alert_key.startswith("fp2|")]
    assert len(second) == 1 and second[0].phase == Phase.PLANNED


def test_alerts_refused_while_busy_get_their_turn_after_a_success(h: Harness) -> None:
    h.fire("fp1")
    h.fire("fp2")
    h.ex.take_notifications()
    h.fire("fp1", status="resolved")  # too late to cancel: it has started
    h.run(until=lambda m: m.phase == Phase.HEALTH_CHECK)
    h.ex.take_notifications()
    first = h.run()
    assert first.phase == Phase.SUCCEEDED
    h.tick()
    assert [m.alert_key[:3] for m in h.journal.migrations()] == ["fp2", "fp1"]


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


# --- fail-safe: no decision from data that cannot be trusted --------------------------------


class Seen(Recorder):
    """The harness's recorder plus the intake hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.withheld: list[str] = []
        self.ages: list[float] = []

    def on_withheld(self, reason: str) -> None:
        self.withheld.append(reason)

    def on_plan(self, age: float) -> None:
        self.ages.append(age)


class Source:
    """A plan source whose answer the test changes: a Plan, or an error to raise."""

    def __init__(self, answer: Plan | Exception) -> None:
        self.answer = answer

    def fetch(self) -> Plan:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def watched(h: Harness, answer: Plan | Exception) -> tuple[Seen, Source]:
    seen, src = Seen(), Source(answer)
    h.ex.intake.observer = seen
    h.ex.intake.plans = src
    return seen, src


def test_a_plan_older_than_max_plan_age_is_withheld_then_a_fresh_one_decides(
    h: Harness,
) -> None:
    """The exporter says fresh (plan.stale false) but assessed it 61 s ago: its refresh hangs
    or its clock is off. Default limit: 4 × refresh_interval (15 s), at least 60 s."""
    assert h.config.plan_age_limit() == 60.0
    seen, src = watched(h, Plan([move_item()], assessed_at=h.clock() - 61))
    h.fire()
    assert h.ex.take_notifications() == 0
    assert h.journal.count_unhandled() == 1 and not h.journal.migrations()
    assert seen.withheld == ["plan_too_old"] and seen.ages == [61.0]
    h.clock.advance(3)  # past the executor's backoff: retried, still too old
    h.ex.take_notifications()
    assert seen.withheld == ["plan_too_old"] * 2 and not h.journal.migrations()
    # the exporter recovers: a plan assessed 5 s ago is acted on (positive control)
    h.clock.advance(3)
    src.answer = Plan([move_item()], assessed_at=h.clock() - 5)
    assert h.ex.take_notifications() == 1
    assert len(h.journal.migrations()) == 1 and seen.withheld == ["plan_too_old"] * 2
    assert outcomes(h)[0].startswith("migration ") and seen.ages[-1] == 5.0


def test_the_age_limit_is_configurable_and_a_plan_from_the_future_is_too_old(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path / "j.sqlite3", max_plan_age="5m")
    watched(h, Plan([move_item()], assessed_at=h.clock() - 200))
    h.fire()
    assert h.ex.take_notifications() == 1 and len(h.journal.migrations()) == 1
    h2 = Harness(tmp_path / "k.sqlite3")
    seen, _ = watched(h2, Plan([move_item()], assessed_at=h2.clock() + 120))
    h2.fire()
    assert h2.ex.take_notifications() == 0 and seen.withheld == ["plan_too_old"]
    h2.clock.advance(h2.config.migration.progress_deadline + 5)
    h2.ex.take_notifications()  # given up at the deadline: the outcome says why
    out = outcomes(h2)[0]
    assert out.startswith("error:") and "in the future" in out and "max_plan_age" in out
    assert not h2.journal.migrations()


@pytest.mark.parametrize("error, reason, retried", [
    (PlanError("stale", reason="plan_stale"), "plan_stale", True),
    (PlanError("503", reason="plan_unavailable"), "plan_unavailable", True),
    (SourceError("exporter plan", "connection refused"), "plan_unavailable", True),
    (SourceError("exporter plan", "bad shape", retriable=False), "plan_invalid", False),
])
def test_an_unusable_plan_is_withheld_with_its_reason(
    h: Harness, error: Exception, reason: str, retried: bool
) -> None:
    seen, _ = watched(h, error)
    h.fire()
    h.ex.take_notifications()
    assert seen.withheld == [reason] and reason in WITHHELD_REASONS
    assert not h.journal.migrations()
    # a retriable one waits for a later tick; the others are given up at once
    assert h.journal.count_unhandled() == (1 if retried else 0)


def failing_inspect(h: Harness, node: str) -> None:
    """The Docker engine of `node` does not answer."""
    real = h.world.inspect

    def inspect(n: str, name: str) -> Any:
        if n == node:
            raise SourceError(f"docker {n}", "connection refused")
        return real(n, name)

    h.world.inspect = inspect  # type: ignore[method-assign]


def test_an_unreadable_source_withholds_the_move_until_its_engine_answers(h: Harness) -> None:
    seen, _ = watched(h, Plan([move_item()], assessed_at=h.clock()))
    real = h.world.inspect
    failing_inspect(h, "n1")
    h.fire()
    assert h.ex.take_notifications() == 0
    assert seen.withheld == ["runtime_unavailable"] and not h.journal.migrations()
    h.world.inspect = real  # type: ignore[method-assign]
    h.clock.advance(3)
    h.ex.intake.plans.answer = Plan([move_item()], assessed_at=h.clock())  # type: ignore[attr-defined]
    assert h.ex.take_notifications() == 1 and len(h.journal.migrations()) == 1


def test_an_unreadable_entry_is_passed_over_for_a_readable_one(tmp_path: Path) -> None:
    """n3's engine is down: its replica's move cannot be checked, web-1's on n1 can."""
    h = Harness(tmp_path / "j.sqlite3", replicas=1)
    h.world.add("n3", "web-3", "web")
    first = replace(move_item("web-3", "n2"), from_node="n3", priority=90.0)
    seen, _ = watched(h, Plan([first, move_item()], assessed_at=h.clock()))
    failing_inspect(h, "n3")
    h.fire()
    assert h.ex.take_notifications() == 1
    m = h.m()
    assert m.source_name == "web-1" and seen.withheld == []
    assert "not checked move web-3@n3" in outcomes(h)[0]


def test_a_copy_is_not_called_impossible_when_no_replica_could_be_read(h: Harness) -> None:
    """A scale-up whose every replica is on an engine that does not answer: retried as
    runtime_unavailable rather than handled as "no running replica to copy"."""
    item = move_item("", "n2", action="scale_up")
    seen, _ = watched(h, Plan([item], assessed_at=h.clock()))
    failing_inspect(h, "n1")
    h.fire()
    assert h.ex.take_notifications() == 0
    assert seen.withheld == ["runtime_unavailable"] and h.journal.count_unhandled() == 1


def test_withheld_decisions_reach_the_webhook_metrics(h: Harness) -> None:
    from webhook.metrics import PREFIX, MetricsObserver, WebhookMetrics

    metrics = WebhookMetrics.create(multiprocess=False)
    h.ex.intake.observer = MetricsObserver(metrics)
    h.ex.intake.plans = Source(PlanError("stale", reason="plan_stale"))  # type: ignore[assignment]
    assert metrics.registry is not None

    def count(reason: str) -> float | None:
        return metrics.registry.get_sample_value(  # type: ignore[union-attr]
            PREFIX + "decisions_withheld_total", {"reason": reason})

    assert {r: count(r) for r in WITHHELD_REASONS} == dict.fromkeys(WITHHELD_REASONS, 0.0)
    h.fire()
    h.ex.take_notifications()
    assert count("plan_stale") == 1.0 and count("plan_too_old") == 0.0
    h.ex.intake.plans = Source(Plan([move_item()], assessed_at=h.clock() - 7))  # type: ignore[assignment]
    h.clock.advance(3)
    h.ex.take_notifications()
    assert metrics.registry.get_sample_value(PREFIX + "plan_age_seconds") == 10.0
    assert count("plan_stale") == 1.0 and len(h.journal.migrations()) == 1
