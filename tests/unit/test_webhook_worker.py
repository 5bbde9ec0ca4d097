"""The executor thread (leader lock, tick, errors, stop) and the metrics it and the observer
publish. The executor is a fake with the real one's shape: `tick()`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from preshift.act.journal import Journal, Migration
from preshift.act.leader import LeaderLock
from preshift.act.phases import Phase
from webhook.metrics import FAMILIES, PREFIX, MetricsObserver, WebhookMetrics
from webhook.testing import MarkHandledExecutor
from webhook.worker import ExecutorWorker

from .webhook_support import BEARER, make_app, make_config, payload


def wait_until(fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not reached")


class FakeExecutor:
    def __init__(self, journal: Journal, observer: Any, fail: int = 0) -> None:
        self.journal, self.observer, self.fail = journal, observer, fail
        self.ticks = 0
        self.threads: set[int] = set()

    def tick(self) -> None:
        self.ticks += 1
        self.threads.add(threading.get_ident())
        if self.ticks <= self.fail:
            raise RuntimeError(f"boom {self.ticks}")


def sample(metrics: WebhookMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    assert metrics.registry is not None
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    return path


def make_worker(journal_path: Path, built: list[FakeExecutor], **kw: Any) -> ExecutorWorker:
    def factory(config: Any, journal: Journal, *, observer: Any) -> FakeExecutor:
        ex = FakeExecutor(journal, observer, **kw)
        built.append(ex)
        return ex

    return ExecutorWorker(make_config(journal_path), journal_path, factory,
                          WebhookMetrics.create(multiprocess=False), tick=0.01)


def test_the_leader_builds_once_and_ticks_in_its_thread(journal_path: Path) -> None:
    built: list[FakeExecutor] = []
    w = make_worker(journal_path, built)
    w.start()
    try:
        wait_until(lambda: built and built[0].ticks >= 3)
        assert w.is_leader and len(built) == 1
        assert built[0].threads == {w._thread.ident}  # type: ignore[union-attr]
        assert isinstance(built[0].observer, MetricsObserver)
        assert sample(w.metrics, PREFIX + "leader") == 1
        assert sample(w.metrics, PREFIX + "queue_depth") == 0
    finally:
        w.stop()
    assert not w.is_leader  # stop released the lock
    assert LeaderLock(journal_path).try_acquire()


def test_only_one_of_two_workers_leads_and_the_other_takes_over(journal_path: Path) -> None:
    a_built: list[FakeExecutor] = []
    b_built: list[FakeExecutor] = []
    a, b = make_worker(journal_path, a_built), make_worker(journal_path, b_built)
    a.start()
    wait_until(lambda: a.is_leader)
    b.start()
    try:
        time.sleep(0.1)
        assert a.is_leader and not b.is_leader and b_built == []
        assert sample(b.metrics, PREFIX + "leader") == 0
        a.stop()
        wait_until(lambda: b.is_leader and b_built and b_built[0].ticks > 0)
    finally:
        a.stop()
        b.stop()


def test_a_failing_tick_is_logged_once_and_the_loop_goes_on(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built: list[FakeExecutor] = []
    w = make_worker(journal_path, built, fail=5)
    caplog.set_level(logging.INFO, logger="webhook.worker")
    w.start()
    try:
        wait_until(lambda: built and built[0].ticks >= 8)
    finally:
        w.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # the message differs each time ("boom 1", "boom 2", ...): each is logged, no traceback
    assert errors and all(r.exc_info is None for r in errors)
    assert sample(w.metrics, PREFIX + "executor_ticks_total", {"result": "error"}) == 5
    assert sample(w.metrics, PREFIX + "executor_ticks_total", {"result": "ok"}) >= 3


def test_the_same_error_repeated_is_not_logged_every_tick(
    journal_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def factory(config: Any, journal: Journal, *, observer: Any) -> Any:
        raise RuntimeError("cannot build the executor")

    w = ExecutorWorker(make_config(journal_path), journal_path, factory,
                       WebhookMetrics.create(multiprocess=False), tick=0.005)
    caplog.set_level(logging.INFO, logger="webhook.worker")
    w.start()
    time.sleep(0.2)
    w.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot build the executor" in errors[0].getMessage()


def test_the_trivial_executor_marks_notifications_handled(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.test_client().post("/api/v1/alerts", json=payload(), headers=BEARER)
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert MarkHandledExecutor(j).tick() == 1
        assert j.count_unhandled() == 0
        assert j.notifications()[0].outcome == "handled (test)"
    lines = Path(f"{app.config['PRESHIFT_JOURNAL']}.handled").read_text().split()
    assert lines[0] == "1"


def test_create_app_starts_the_worker_with_the_given_factory(tmp_path: Path) -> None:
    import webhook

    built: list[FakeExecutor] = []

    def factory(config: Any, journal: Journal, *, observer: Any) -> FakeExecutor:
        built.append(FakeExecutor(journal, observer))
        return built[-1]

    app = webhook.create_app(make_config(tmp_path / "j.sqlite3", tick="10ms"),
                             executor_factory=factory, environ={"PRESHIFT_WEBHOOK_TOKEN": "x"})
    try:
        wait_until(lambda: built and built[0].ticks > 0)
        assert "preshift_webhook_leader 1.0" in app.test_client().get("/metrics").get_data(
            as_text=True)
    finally:
        webhook.shutdown(app)
    assert not app.extensions["preshift.worker"].is_leader


# --- metrics ------------------------------------------------------------------------------


def test_metrics_text_has_every_family_with_help(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    obs = MetricsObserver(app.extensions["preshift.metrics"])
    m = Migration(id="m1", component="web", action="move", target_node="n2", canary_name="c")
    obs.on_step(m, "clone", "ok")  # families with labels show once they have a sample
    obs.on_phase(m, replace(m, phase=Phase.ROLLING_BACK))
    obs.on_phase(None, replace(m, phase=Phase.ROLLED_BACK, created_at=1.0, finished_at=2.0))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for kind, name, _doc, _labels, _kw in FAMILIES:
        family = PREFIX + name + ("_total" if kind == "counter" else "")  # text format 0.0.4
        assert f"# HELP {family}" in text and f"# TYPE {family} {kind}" in text, name


def test_observer_counts_steps_phases_rollbacks_and_durations() -> None:
    metrics = WebhookMetrics.create(multiprocess=False)
    obs = MetricsObserver(metrics, clock=lambda: 100.0)
    m = Migration(id="m1", component="web", action="move", target_node="n2",
                  canary_name="web-m1", phase=Phase.SHIFTING, weight=25, created_at=40.0)
    obs.on_step(m, "set_weight", "ok")
    obs.on_step(m, "set_weight", "ok")
    obs.on_step(m, "analysis", "fail")
    assert sample(metrics, PREFIX + "steps_total", {"action": "set_weight", "outcome": "ok"}) == 2
    labels = {"migration": "m1", "component": "web"}
    assert sample(metrics, PREFIX + "canary_weight_percent", labels) == 25
    back = replace(m, phase=Phase.ROLLING_BACK, weight=0)
    obs.on_phase(m, back)
    obs.on_phase(back, back)  # staying in a phase is not a second rollback
    assert sample(metrics, PREFIX + "rollbacks_total", {"component": "web"}) == 1
    done = replace(back, phase=Phase.ROLLED_BACK, finished_at=None)
    obs.on_phase(back, done)
    obs.on_phase(done, done)  # and finishing counts once
    assert sample(metrics, PREFIX + "migrations_finished_total", {"result": "rolled_back"}) == 1
    assert sample(metrics, PREFIX + "migration_duration_seconds_sum",
                  {"result": "rolled_back"}) == 60.0
    assert sample(metrics, PREFIX + "canary_weight_percent", labels) == 0


def test_the_worker_publishes_weights_of_active_migrations(journal_path: Path) -> None:
    with Journal(journal_path) as j:
        m = j.create_migration(Migration(id="m1", component="web", action="move",
                                         target_node="n2", canary_name="c"))
        m = j.update(m, phase=Phase.STARTING)
    built: list[FakeExecutor] = []
    w = make_worker(journal_path, built)
    labels = {"migration": "m1", "component": "web"}
    w.start()
    try:
        wait_until(lambda: built and built[0].ticks > 0)
        with Journal(journal_path) as j:
            m = j.update(j.get("m1"), weight=40)  # type: ignore[arg-type]
        wait_until(lambda: w.metrics.registry.get_sample_value(  # type: ignore[union-attr]
            PREFIX + "canary_weight_percent", labels) == 40)
        with Journal(journal_path) as j:
            j.update(m, phase=Phase.ROLLING_BACK)
            j.update(j.get("m1"), phase=Phase.ROLLED_BACK)  # type: ignore[arg-type]
        wait_until(lambda: w.metrics.registry.get_sample_value(  # type: ignore[union-attr]
            PREFIX + "canary_weight_percent", labels) == 0)
    finally:
        w.stop()
