"""The exporter's assess stage: isolation, the stale-inputs fail-safe, the failure history after
a restart, the look-ahead metrics and JSON, and /metrics served from pre-rendered bytes."""

from __future__ import annotations

import gc
import gzip
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from exporter.collector import SnapshotCollector
from exporter.refresh import RefreshLoop
from exporter.service import build_service
from exporter.snapshot import Snapshot, Status, footprint_document, json_chunks, let_go
from exporter.testing import (
    FakeFailures,
    FakeInventory,
    FakeSignals,
    sample_assessor,
    sample_config,
    sample_failures,
    sample_inventory,
    sample_signals,
)
from preshift.assess import Assessor
from preshift.errors import SourceError
from preshift.model import FailureEvent
from preshift.sense.ports import SignalStats

NOW = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FlakyAssessor(Assessor):
    """Raises on demand, otherwise assesses."""

    fail_next = 0

    def assess(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("bug in the planner")
        return super().assess(*args, **kwargs)


def make_loop(down: Sequence[str] = (), **kwargs: Any) -> tuple[RefreshLoop, Clock, dict]:
    clock = Clock()
    parts = {
        "inventory": FakeInventory(sample_inventory(NOW, down=down)),
        "signals": sample_signals(NOW),
        "failures": FakeFailures(sample_failures(NOW)),
    }
    kwargs.setdefault("assessor", sample_assessor(sample_config()))
    loop = RefreshLoop(sample_config(), **parts, clock=clock, **kwargs)
    return loop, clock, parts


def registry(snap: Snapshot) -> CollectorRegistry:
    collector = SnapshotCollector(snap.interval)
    collector.update(snap)
    reg = CollectorRegistry()
    reg.register(collector)
    return reg


def test_look_ahead_metrics_have_the_right_labels() -> None:
    loop, _, _ = make_loop()
    snap = loop.refresh_once()
    assert gc.isenabled()  # off during the refresh only
    v = registry(snap).get_sample_value
    hps = {r: v("preshift_health_projection_score",
                {"component": c, "replica": r, "node": n})
           for c, r, n in (("web", "web-1", "n1"), ("web", "web-2", "n2"), ("db", "db-1", "n3"),
                           ("cache", "cache-1", "n1"))}
    assert all(h is not None and 0 <= h <= 100 for h in hps.values())
    assert hps["web-1"] < hps["web-2"] - 20  # n1 is heating up
    assert v("preshift_health_projection_score",  # exited: not scored
             {"component": "web", "replica": "web-3", "node": "n3"}) is None
    factors = {f: v("preshift_failure_probability_ratio",
                    {"component": "web", "replica": "web-1", "node": "n1", "factor": f})
               for f in ("history", "dependency", "environment", "node")}
    assert factors["environment"] == pytest.approx(0.5, abs=0.01)  # weight 0.5 × p ≈ 1
    assert hps["web-1"] == pytest.approx(100 * np.prod([1 - p for p in factors.values()]))
    assert v("preshift_component_health_projection_score", {"component": "web"}) == hps["web-1"]
    assert v("preshift_node_health_projection_score", {"node": "n1"}) < 60
    assert v("preshift_node_failure_probability_ratio",
             {"node": "n1", "factor": "environment"}) == pytest.approx(0.5, abs=0.01)
    assert v("preshift_node_failure_probability_ratio", {"node": "n2", "factor": "node"}) > 0
    assert v("preshift_risk_tolerance_ratio") == 0.2
    assert v("preshift_discrepancy_ratio", {"component": "web"}) == pytest.approx(1 / 3)
    assert v("preshift_discrepancy_threshold_ratio", {"component": "web"}) == 0.2
    assert v("preshift_plan_entries", {"component": "web", "action": "scale_up"}) == 1
    assert v("preshift_plan_entries", {"component": "cache", "action": "move"}) == 1
    # node-scoped: no replica label (empty); component-scoped: the container and its node
    assert v("preshift_signal_breach_probability_ratio",
             {"signal": "temperature", "node": "n1", "replica": ""}) > 0.99
    assert v("preshift_signal_breach_probability_ratio",
             {"signal": "memory_pressure", "node": "n1", "replica": "web-1"}) < 0.01
    assert v("preshift_forecast_fitted_series", {"signal": "temperature"}) == 0  # budget 0
    assert v("preshift_forecast_fit_backlog_series") == 8  # every series: the budget is 0
    assert v("preshift_forecast_fits_total", {"result": "ok"}) == 0
    assert v("preshift_assessment_timestamp_seconds") == NOW
    for stage in ("assess", "assess_forecast", "assess_score", "assess_plan"):
        assert v("preshift_refresh_stage_duration_seconds", {"stage": stage}) >= 0
    assert v("preshift_refresh_errors_total", {"stage": "assess"}) == 0


def test_a_failing_assessment_keeps_the_last_good_one(caplog: pytest.LogCaptureFixture) -> None:
    assessor = FlakyAssessor(sample_config(), fit_budget_per_refresh=0)
    loop, clock, _ = make_loop(assessor=assessor)
    good = loop.refresh_once()
    assessor.fail_next = 2
    for _ in range(2):
        clock.now += 15
        snap = loop.refresh_once()
    assert snap.stages["assess"].status is Status.FAILED and snap.stale and not snap.up
    assert "RuntimeError: bug in the planner" in (snap.stages["assess"].error or "")
    assert snap.assessment is good.assessment  # served, marked stale
    assert snap.errors_total["assess"] == 2
    assert all(snap.stages[s].status is Status.OK for s in ("signals", "failures"))
    assert json.loads(snap.footprint_json)["plan"]["stale"] is True
    v = registry(snap).get_sample_value
    assert v("preshift_refresh_errors_total", {"stage": "assess"}) == 2
    assert v("preshift_assessment_timestamp_seconds") == NOW
    assert v("preshift_discrepancy_ratio", {"component": "web"}) == pytest.approx(1 / 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "assess" in
                r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None  # a bug: traceback, once
    clock.now += 15
    snap = loop.refresh_once()
    assert snap.stages["assess"].status is Status.OK
    assert snap.assessment is not None and snap.assessment.taken_at == clock.now


def test_prometheus_down_never_invents_moves() -> None:
    """With no signal readable, a fresh plan would see no risk anywhere and drop the planned
    moves (or, on a half-read world, plan new ones): keep the last good plan, stale."""
    loop, clock, parts = make_loop()
    good = loop.refresh_once()
    held = parts["signals"].held
    every = {s.name: "prometheus: connection refused" for s in sample_config().signals}
    loop._signals = FakeSignals(SignalStats(0, 0, 0, errors=every), held)
    clock.now += 15
    snap = loop.refresh_once()
    assert snap.stages["signals"].status is Status.FAILED
    assert snap.stages["assess"].status is Status.FAILED
    assert "no signal could be read from Prometheus" in (snap.stages["assess"].error or "")
    assert snap.assessment is good.assessment
    doc = json.loads(snap.footprint_json)
    assert doc["plan"]["stale"] is True and doc["plan"]["assessed_at"] == NOW
    assert doc["plan"]["entries"] == json.loads(good.footprint_json)["plan"]["entries"]


def test_signal_data_too_old_is_not_planned_from() -> None:
    loop, clock, _ = make_loop(max_input_age=120)
    loop.refresh_once()
    clock.now += 300  # the signals answer, but nothing newer than 5 min ago
    snap = loop.refresh_once()
    assert snap.stages["signals"].status is Status.OK
    assert snap.stages["assess"].status is Status.FAILED
    assert "newest signal point is 360 s old" in (snap.stages["assess"].error or "")
    assert snap.assessment is not None and snap.assessment.taken_at == NOW


def test_no_plan_at_all_before_the_first_good_inputs() -> None:
    loop, _, parts = make_loop()
    parts["inventory"].fail(SourceError("docker", "no engine"))
    snap = loop.refresh_once()
    assert snap.assessment is None and snap.stages["assess"].status is Status.FAILED
    doc = json.loads(snap.footprint_json)
    assert doc["scores"] is doc["plan"] is doc["forecasts"] is None
    assert registry(snap).get_sample_value("preshift_discrepancy_ratio",
                                           {"component": "web"}) is None


def test_failure_history_from_prometheus_after_a_restart() -> None:
    """restore → history(since, until = the restore time) → the score sees the old failures;
    until both worked, nothing is assessed (the history factor would be too optimistic)."""
    calls: list[tuple[float, float]] = []
    old_crashes = [FailureEvent(NOW - 60 * i, "exit_nonzero", "n2", "web") for i in (5, 9, 14)]
    failing = [SourceError("prometheus", "connection refused")]

    def history(since: float, until: float) -> list[FailureEvent]:
        calls.append((since, until))
        if failing:
            raise failing.pop()
        return old_crashes

    assessor = sample_assessor(sample_config())
    loop, clock, _ = make_loop(assessor=assessor, restore=lambda: NOW - 30, history=history)
    first = loop.refresh_once()
    assert first.stages["failures"].status is Status.PARTIAL
    assert "loading the failure history" in (first.stages["failures"].error or "")
    assert first.sources_up["prometheus"] is False
    assert first.assessment is None
    assert "failure history is not restored" in (first.stages["assess"].error or "")
    clock.now += 15
    second = loop.refresh_once()
    assert calls == [(NOW - 86400, NOW), (NOW - 86400, NOW)]  # until: the restore time
    assert second.stages["failures"].status is Status.OK and second.assessment is not None
    assert second.assessment.failure_events == 4  # 3 rebuilt + the ledger's recent one
    clock.now += 15
    loop.refresh_once()
    assert len(calls) == 2  # loaded once


def test_metrics_are_served_from_the_pre_rendered_text() -> None:
    svc = build_service(sample_config(), FakeInventory(sample_inventory(NOW)),
                        sample_signals(NOW), FakeFailures(sample_failures(NOW)),
                        assessor=sample_assessor(sample_config()), clock=lambda: NOW)
    svc.loop.refresh_once()

    def get(**headers: str) -> tuple[str, dict[str, str], bytes]:
        env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "",
               **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
        seen: dict[str, Any] = {}
        body = b"".join(svc.app(env, lambda s, h: seen.update(status=s, headers=dict(h))))
        assert int(seen["headers"].get("Content-Length", len(body))) == len(body)
        return seen["status"], seen["headers"], body

    ours = svc.collector.exposition().text
    prom = ("application/openmetrics-text;version=1.0.0;q=0.5,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.1")
    status, headers, body = get(accept=prom, accept_encoding="gzip")
    assert status == "200 OK"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = gzip.decompress(body)  # two gzip members: ours, then the runtime metrics
    assert text.startswith(ours) and b"process_cpu_seconds_total" in text[len(ours):]
    _, headers, plain = get()
    assert "Content-Encoding" not in headers and plain.startswith(ours)
    assert b"python_info" in plain
    # only OpenMetrics, or a subset: prometheus_client renders it from the families
    _, headers, body = get(accept="application/openmetrics-text;version=1.0.0")
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert b"preshift_health_projection_score{" in body and body.endswith(b"# EOF\n")
    env_q = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET",
             "QUERY_STRING": "name[]=preshift_up"}
    subset = b"".join(svc.app(env_q, lambda s, h: None))
    assert b"preshift_up " in subset and b"preshift_replicas" not in subset


def test_the_footprint_json_is_built_in_pieces_and_its_sources_are_left_alone() -> None:
    loop, _, _ = make_loop()
    snap = loop.refresh_once()
    assert snap.assessment is not None
    doc = footprint_document(snap)
    whole = json.dumps(doc, separators=(",", ":"))
    assert snap.footprint_json == whole.encode() + b"\n"
    assert "".join(json_chunks(doc, chunk=2)) == whole  # every container split
    let_go(doc, big=1)
    assert doc == {}
    # the document was built from fresh containers only: emptying it touched no snapshot data
    assert json.dumps(footprint_document(snap), separators=(",", ":")) == whole
    assert snap.with_json().footprint_json == snap.footprint_json
