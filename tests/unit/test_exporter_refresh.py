"""The refresh loop: stage isolation, stale data, error counting, logging once, the thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import SnapshotCollector
from exporter.refresh import RefreshLoop
from exporter.snapshot import Snapshot, Status
from exporter.testing import (
    FakeFailures,
    FakeInventory,
    FakeSignals,
    FakeWatcher,
    sample_config,
    sample_failures,
    sample_inventory,
    sample_signals,
)
from preshift.errors import SourceError
from preshift.sense.ports import SignalStats

NOW = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def make_loop(**kwargs):
    clock = Clock()
    parts = {
        "inventory": FakeInventory(sample_inventory(NOW)),
        "signals": sample_signals(NOW),
        "failures": FakeFailures(sample_failures(NOW)),
    }
    loop = RefreshLoop(sample_config(), **parts, clock=clock, **kwargs)
    return loop, clock, parts


def metric(snap: Snapshot, name: str, labels: dict[str, str] | None = None) -> float | None:
    collector = SnapshotCollector(snap.interval)
    collector.update(snap)
    registry = CollectorRegistry()
    registry.register(collector)
    return registry.get_sample_value(name, labels or {})


def test_all_fresh() -> None:
    loop, _, _ = make_loop()
    snap = loop.refresh_once()
    assert not snap.stale and snap.up
    assert all(o.status is Status.OK for o in snap.stages.values())
    assert snap.sources_up == {"docker": True, "prometheus": True}
    assert snap.errors_total == {"inventory": 0, "signals": 0, "failures": 0, "assess": 0}
    assert snap.assessment is not None and snap.assessment.taken_at == NOW
    assert loop.current() is snap


@pytest.mark.parametrize("stage", ["inventory", "signals", "failures"])
def test_a_failing_stage_keeps_the_last_good_data_and_is_counted(
    stage: str, caplog: pytest.LogCaptureFixture
) -> None:
    loop, clock, parts = make_loop()
    good = loop.refresh_once()
    parts[stage].fail(SourceError("docker", "boom"), SourceError("docker", "boom"))
    caplog.set_level(logging.INFO, logger="exporter.refresh")
    for _ in range(2):
        clock.now += 15
        snap = loop.refresh_once()
    assert snap.stale and not snap.up
    assert snap.stages[stage].status is Status.FAILED
    assert snap.stages[stage].last_success == NOW  # the last good refresh
    assert "docker: boom" in (snap.stages[stage].error or "")
    assert snap.errors_total[stage] == 2
    assert snap.footprint is good.footprint or stage != "inventory"
    assert snap.failures is good.failures or stage != "failures"
    assert snap.signal_points == good.signal_points
    assert snap.taken_at == NOW + 30  # published anyway
    # Without Docker or Prometheus the assess stage keeps its last good plan (stale inputs).
    blind = stage in ("inventory", "signals")
    assert (snap.assessment is good.assessment) == blind
    assert snap.stages["assess"].status is (Status.FAILED if blind else Status.OK)
    # other stages stayed fresh
    assert all(o.status is Status.OK for s, o in snap.stages.items() if s not in (stage, "assess"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 + blind and warnings[0].exc_info is None  # once, no traceback
    assert metric(snap, "preshift_refresh_errors_total", {"stage": stage}) == 2
    assert metric(snap, "preshift_snapshot_stale") == 1
    # recovery
    clock.now += 15
    snap = loop.refresh_once()
    assert not snap.stale and snap.stages[stage].last_success == clock.now
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_an_unexpected_exception_is_logged_with_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, _, parts = make_loop()
    parts["failures"].fail(KeyError("x"), KeyError("x"))
    loop.refresh_once()
    loop.refresh_once()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is not None


def test_unreachable_node_is_reported_counted_and_marked_once() -> None:
    watcher = FakeWatcher()
    loop, _, parts = make_loop(watcher=watcher)
    parts["inventory"].value = sample_inventory(NOW, down=["n2"])
    loop.refresh_once()
    snap = loop.refresh_once()
    assert snap.stages["inventory"].status is Status.PARTIAL and snap.stale and snap.up
    assert snap.errors_total["inventory"] == 2
    assert watcher.marked == ["n2"]  # on the transition only
    assert watcher.back == ["n1", "n3"]
    assert metric(snap, "preshift_node_up", {"node": "n2"}) == 0
    assert metric(snap, "preshift_node_up", {"node": "n1"}) == 1
    assert metric(snap, "preshift_source_up", {"source": "docker"}) == 1
    # back, then down again: marked again
    parts["inventory"].value = sample_inventory(NOW)
    loop.refresh_once()
    parts["inventory"].value = sample_inventory(NOW, down=["n2"])
    loop.refresh_once()
    assert watcher.marked == ["n2", "n2"]
    assert watcher.back == ["n1", "n3", "n2"]


def test_every_node_down_fails_the_inventory_and_docker_is_down() -> None:
    loop, _, parts = make_loop(watcher=FakeWatcher())
    parts["inventory"].value = sample_inventory(NOW, down=["n1", "n2", "n3"])
    snap = loop.refresh_once()
    assert snap.stages["inventory"].status is Status.FAILED
    assert snap.sources_up["docker"] is False and not snap.up
    assert all(not n.reachable for n in snap.footprint.nodes)


def test_before_any_inventory_every_configured_node_is_down() -> None:
    loop, _, parts = make_loop()
    parts["inventory"].fail(SourceError("docker", "no engine"))
    snap = loop.refresh_once()
    assert [n.name for n in snap.footprint.nodes] == ["n1", "n2", "n3"]
    assert metric(snap, "preshift_node_up", {"node": "n1"}) == 0
    assert metric(snap, "preshift_replicas", {"component": "web", "node": "n1"}) == 0


def test_signals_partly_or_wholly_failing() -> None:
    loop, _, parts = make_loop()
    held = parts["signals"].held
    parts["signals"].value = SignalStats(5, 150, 0, errors={"temperature": "prometheus: down"})
    snap = loop.refresh_once()
    assert snap.stages["signals"].status is Status.PARTIAL and snap.sources_up["prometheus"]
    assert metric(snap, "preshift_signal_up", {"signal": "temperature"}) == 0
    assert metric(snap, "preshift_signal_up", {"signal": "node_load"}) == 1
    every = {s.name: "prometheus: connection refused" for s in sample_config().signals}
    loop._signals = FakeSignals(SignalStats(5, 150, 0, errors=every), held)
    snap = loop.refresh_once()
    assert snap.stages["signals"].status is Status.FAILED
    assert snap.sources_up["prometheus"] is False
    assert metric(snap, "preshift_source_up", {"source": "prometheus"}) == 0


def test_restore_is_retried_until_it_succeeds_and_failures_still_count() -> None:
    attempts: list[int] = []

    def restore() -> float:
        attempts.append(1)
        if len(attempts) < 3:
            raise SourceError("prometheus", "connection refused")
        return NOW

    loop, _, _ = make_loop(restore=restore)
    first = loop.refresh_once()
    assert first.stages["failures"].status is Status.PARTIAL
    assert first.sources_up["prometheus"] is False
    assert first.failures.by_component[("web", "n2", "oom")] == 2  # recorded meanwhile …
    oom = {"component": "web", "node": "n2", "reason": "oom"}
    # … but not exported: the restored baseline would later look like a burst of failures
    assert metric(first, "preshift_component_failures_total", oom) is None
    assert metric(first, "preshift_failures_last_event_timestamp_seconds") is None
    loop.refresh_once()
    third = loop.refresh_once()
    assert third.stages["failures"].status is Status.OK and third.sources_up["prometheus"]
    assert metric(third, "preshift_component_failures_total", oom) == 2
    loop.refresh_once()
    assert len(attempts) == 3  # not retried after success


def test_a_broken_consumer_does_not_stop_publishing() -> None:
    def explode(snapshot: Snapshot) -> None:
        raise RuntimeError("bug")

    loop, _, _ = make_loop(on_snapshot=explode)
    assert loop.refresh_once() is loop.current()


def test_the_thread_refreshes_publishes_and_stops_quickly() -> None:
    published: list[Snapshot] = []
    first = threading.Event()

    def on_snapshot(snapshot: Snapshot) -> None:
        published.append(snapshot)
        first.set()

    loop, _, _ = make_loop(on_snapshot=on_snapshot)
    loop.start()
    try:
        assert first.wait(5)
        deadline = time.monotonic() + 5  # current() is set right after on_snapshot returns
        while loop.current() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.current() is published[0]
    finally:
        started = time.monotonic()
        assert loop.stop(timeout=2)
        assert time.monotonic() - started < 1  # the 15 s wait is interrupted
    assert len(published) == 1
    with pytest.raises(RuntimeError):
        loop.start()
