"""Issue 7, parts 3 and 5, against the real parts: stale or missing data → no decisions, and
the exporter under Docker and Prometheus faults keeps serving its last snapshot, marked stale.

A private testbed (3 Docker engines in network namespaces, a real Prometheus loading rules/),
the telemetry simulator (test equipment) holding n2 at 95 °C so that the plan moves web off
n2, and the exporter as a real process. The webhook's decision is taken by the real executor
and intake, reading the plan from this exporter over HTTP (ExporterPlanSource) and the live
state from the engines (DockerRuntime), with the webhook's metrics observer; dry run, so a
decision is a journaled dry-run migration and nothing moves.

Faults, each followed by a recovery whose decision is the positive control:
(i) Prometheus stopped by its PID, then started again, and hung (SIGSTOP, then SIGCONT);
(ii) one engine stopped (the plan stays fresh: docs/exporter-api.md); (iii) every engine
stopped; (iv) the exporter killed, then started again: the notification kept meanwhile is
decided by its retry. Before them, a webhook clock 2 minutes ahead: the fresh plan is too old
for it.
During each fault, /metrics and /api/v1/footprint are polled (bounded): every answer 200, the
last snapshot's look-ahead unchanged; the slowest answer is printed, not asserted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from preshift.act.executor import Executor
from preshift.act.factory import make_runtime
from preshift.act.journal import Journal
from preshift.act.nop import NoTraffic
from preshift.act.plan_source import ExporterPlanSource
from preshift.act.ports import Runtime
from preshift.act.records import Notification
from preshift.config import Config, parse_config
from preshift.testbed import Testbed, TestbedSpec
from preshift.testbed import prometheus as testbed_prometheus
from preshift.testbed.procs import State, stop
from webhook.metrics import PREFIX, MetricsObserver, WebhookMetrics

from .stack import ROOT, Exporter, Process, preshift_argv, promql, wait_for, write_yaml

pytestmark = pytest.mark.integration

PREFIX_TB, SUBNET = "rs", "198.18.19"
PROM_PORT = 20450
EXPORTER, SIMULATOR = "127.0.0.1:20451", "127.0.0.1:20452"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
NODES = ("n1", "n2", "n3")
#: Bounded polling while a fault lasts: at most this many rounds, this many seconds.
POLL_ROUNDS, POLL_SECONDS = 40, 4.0
#: The look-ahead series that must stay those of the last good assessment while it is stale.
LOOKAHEAD = ("preshift_health_projection_score", "preshift_component_health_projection_score",
             "preshift_discrepancy_ratio", "preshift_assessment_timestamp_seconds")


@dataclass
class Stack:
    tb: Testbed
    exporter: Exporter
    config: Config
    artifacts: Path
    runtime: Runtime
    plans: ExporterPlanSource
    metrics: WebhookMetrics
    decisions: int = 0
    slowest: dict[str, float] = field(default_factory=dict)

    def withheld(self) -> dict[str, float]:
        registry = self.metrics.registry
        assert registry is not None
        return {s.labels["reason"]: s.value for fam in registry.collect()
                if fam.name == PREFIX + "decisions_withheld" for s in fam.samples
                if s.name.endswith("_total")}

    def decide(self, skew: float = 0.0) -> tuple[int, str, int, dict[str, float]]:
        """One firing alert for web through the webhook's executor (fresh journal), its clock
        `skew` seconds ahead of this host's: (handled, outcome, migrations created, withheld
        counts added)."""
        self.decisions += 1
        before = self.withheld()
        def clock() -> float:
            return time.time() + skew

        journal = Journal(self.artifacts / f"journal-{self.decisions}.sqlite3", clock=clock)
        try:
            ex = Executor(self.config, journal, self.runtime, NoTraffic(), self.plans,
                          observer=MetricsObserver(self.metrics), clock=clock)
            journal.record_notifications([Notification(
                "firing", "PreshiftFootprintDiscrepancy", "web", f"fp{self.decisions}",
                "2026-01-01T00:00:00Z", {"component": "web",
                                         "alertname": "PreshiftFootprintDiscrepancy"})])
            handled = ex.take_notifications()
            outcome = journal.notifications()[0].outcome or ""
            created = len(journal.migrations())
        finally:
            journal.close()
        after = self.withheld()
        return handled, outcome, created, {r: after[r] - before.get(r, 0.0) for r in after
                                           if after[r] != before.get(r, 0.0)}


def _scenario(path: Path) -> Path:
    """steady.yaml with n2 held at 95 °C (limit 85): the plan moves web off n2 at once."""
    scenario = yaml.safe_load((ROOT / "scenarios" / "steady.yaml").read_text())
    scenario["overrides"] = {"n2": {"temperature_celsius": {"steady": 95, "noise": 0.3}}}
    return write_yaml(path, scenario)


def _config(tb: Testbed, artifacts: Path) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg.update(
        refresh_interval="1s", horizon="60s",
        services={"web": {"min_available": 1}},
        docker={"timeout": "2s"},
        exporter={"listen": EXPORTER},
        webhook={"listen": "127.0.0.1:20453", "journal": str(artifacts / "journal.sqlite3"),
                 "exporter_url": f"http://{EXPORTER}"},
        migration={"dry_run": True, "progress_deadline": "60s", "cooldown": 0},
    )
    cfg["prometheus"].update(step="1s", history="15m", timeout="2s")
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    artifacts = tmp_path_factory.mktemp("stale")
    tb = Testbed(TestbedSpec(
        prefix=PREFIX_TB, subnet=SUBNET, prometheus_port=PROM_PORT,
        exporter_address=EXPORTER, simulator_address=SIMULATOR,
        rule_files=tuple(sorted((ROOT / "rules").glob("*.yml"))),
    ))
    procs: list[Process] = []
    tb.up()
    try:
        for node in NODES:  # restart policy: an engine that comes back restarts its replica
            tb.client(node).containers.run(
                "preshift-box:latest", HTTPD, name=f"web-{node}", detach=True, init=True,
                labels={"preshift.service": "web"}, restart_policy={"Name": "always"})
        procs.append(Process(preshift_argv(
            "simulate", "--scenario", str(_scenario(artifacts / "scenario.yaml")),
            "--listen", SIMULATOR, "--nodes", ",".join(NODES),
            *[a for n in tb.nodes for a in ("--docker", f"{n.name}={n.socket_url}")],
        ), artifacts / "simulator.log").start())
        raw = _config(tb, artifacts)
        exporter = Exporter(write_yaml(artifacts / "preshift.yaml", raw), EXPORTER,
                            artifacts / "exporter.log")
        procs.append(exporter.start())
        exporter.wait_ready()
        config = parse_config(raw)
        yield Stack(tb, exporter, config, artifacts, make_runtime(config),
                    ExporterPlanSource(exporter.url, timeout=2.0),
                    WebhookMetrics.create(multiprocess=False))
    finally:
        for p in reversed(procs):
            p.stop()
        tb.down()


# --- helpers --------------------------------------------------------------------------------


def samples(text: str, names: tuple[str, ...]) -> dict[str, str]:
    """Exposition lines of the given families: series (name and labels) → value text."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) in names:
            out[m.group(1) + (m.group(2) or "")] = m.group(3)
    return out


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the exposition")


def web_move_off_n2(body: dict[str, Any]) -> bool:
    plan = body.get("plan") or {}
    return not plan.get("stale") and any(
        e["component"] == "web" and e["from_node"] == "n2" for e in plan.get("entries", []))


def fresh_plan(s: Stack) -> dict[str, Any]:
    """Wait for a fresh plan that moves web off n2 and a snapshot stale nowhere."""
    return wait_for(lambda: (lambda b: b if web_move_off_n2(b) and not b["stale"] else None)(
        s.exporter.footprint()), 60, "a fresh plan moving web off n2, nothing stale")


def assert_decides(s: Stack, when: str) -> None:
    """Positive control: the webhook decides (a dry-run migration for web)."""
    handled, outcome, created, withheld = s.decide()
    assert (handled, created, withheld) == (1, 1, {}), (when, outcome, withheld)
    assert outcome.startswith("migration ") and "[dry-run]" in outcome, (when, outcome)
    print(f"{when}: decided: {outcome}")


def assert_withholds(s: Stack, reason: str, when: str, skew: float = 0.0) -> None:
    handled, outcome, created, withheld = s.decide(skew)
    assert (handled, created) == (0, 0), (when, outcome)  # kept for a retry, nothing created
    assert withheld == {reason: 1.0}, (when, withheld)
    print(f"{when}: withheld ({reason}), notification kept for a retry")


def hold_while_stale(s: Stack, fault: str, frozen: dict[str, str], assessed_at: float,
                     stale_stage: str) -> None:
    """Poll both endpoints (bounded): each answer 200, stale, the look-ahead unchanged."""
    slowest, rounds, t_end = 0.0, 0, time.monotonic() + POLL_SECONDS
    while rounds < POLL_ROUNDS and time.monotonic() < t_end:
        rounds += 1
        for path in ("/metrics", "/api/v1/footprint"):
            t0 = time.perf_counter()
            r = requests.get(s.exporter.url + path, timeout=10)
            slowest = max(slowest, time.perf_counter() - t0)
            assert r.status_code == 200, (fault, path, r.status_code)
            if path == "/metrics":
                assert value(r.text, "preshift_snapshot_stale") == 1.0, fault
                assert samples(r.text, LOOKAHEAD) == frozen, fault
            else:
                body = r.json()
                assert body["stale"] is True and body["plan"]["stale"] is True, fault
                assert body["plan"]["assessed_at"] == assessed_at, fault
                assert body["stages"][stale_stage]["status"] == "failed", (fault, body["errors"])
        time.sleep(0.1)
    s.slowest[fault] = slowest
    print(f"{fault}: {rounds} rounds of /metrics + /api/v1/footprint, all 200, look-ahead "
          f"unchanged; slowest answer {slowest * 1000:.0f} ms")


def frozen_lookahead(s: Stack, fault: str, timeout: float = 20) -> tuple[dict[str, str], float]:
    """Once the plan is stale: the look-ahead series and the plan's assessed_at it keeps."""
    t0 = time.monotonic()
    body = wait_for(lambda: (lambda b: b if (b.get("plan") or {}).get("stale") else None)(
        s.exporter.footprint()), timeout, f"plan.stale after {fault}")
    print(f"{fault}: plan.stale {time.monotonic() - t0:.1f} s after the fault")
    frozen = samples(s.exporter.metrics(), LOOKAHEAD)
    assert any(k.startswith("preshift_health_projection_score{") for k in frozen), frozen
    assert body["generated_at"] > body["plan"]["assessed_at"]  # kept, not recomputed
    return frozen, body["plan"]["assessed_at"]


def prom(s: Stack, query: str) -> dict[str, float]:
    return {r["metric"].get("node", r["metric"].get("source", "")): r["value"]
            for r in promql(s.tb.prometheus_url, query)}


# --- the faults -----------------------------------------------------------------------------


def test_prometheus_stopped_keeps_the_snapshot_and_withholds_decisions(stack: Stack) -> None:
    s = stack
    fresh_plan(s)
    assert_decides(s, "before the fault")
    assert set(s.withheld().values()) == {0.0}  # preset, nothing withheld yet
    # A plan that claims to be fresh, read by a webhook whose clock is 2 minutes ahead (or an
    # exporter whose refresh hangs): older than migration.max_plan_age (60 s here).
    assert s.config.plan_age_limit() == 60.0
    assert_withholds(s, "plan_too_old", "webhook clock 120 s ahead", skew=120.0)
    age = s.metrics.registry.get_sample_value(PREFIX + "plan_age_seconds")  # type: ignore[union-attr]
    assert age is not None and age > 100, age
    errors_before = value(s.exporter.metrics(), 'preshift_refresh_errors_total{stage="assess"}')

    state = State(s.tb.spec.state_file)
    proc = state.proc("prometheus")
    assert proc is not None and proc.owned()
    stop([proc])  # by its PID (the testbed checks the PID is still its Prometheus)
    state.drop_proc("prometheus")
    try:
        frozen, assessed_at = frozen_lookahead(s, "Prometheus stopped")
        text = s.exporter.metrics()
        assert value(text, 'preshift_source_up{source="prometheus"}') == 0.0
        assert value(text, "preshift_up") == 0.0
        hold_while_stale(s, "Prometheus stopped", frozen, assessed_at, "signals")
        assert_withholds(s, "plan_stale", "Prometheus stopped")
    finally:
        state.add_proc(testbed_prometheus.start(s.tb.spec))
        wait_for(lambda: testbed_prometheus.ready(s.tb.spec, 0.5), 30, "Prometheus back")

    fresh_plan(s)
    assert_decides(s, "after Prometheus came back")
    # Prometheus, back, sees the stale period in the counters and the recovery.
    wait_for(lambda: prom(s, 'preshift_refresh_errors_total{stage="assess"}').get("", 0)
             > errors_before, 20, "Prometheus to see the assess errors of the stale period")
    wait_for(lambda: prom(s, "preshift_snapshot_stale") == {"": 0.0}, 20,
             "Prometheus to see the snapshot fresh again")


def test_prometheus_hung_keeps_the_snapshot_and_withholds_decisions(stack: Stack) -> None:
    """SIGSTOP: Prometheus accepts connections but never answers; every query of the signals
    stage runs into its timeout (2 s here), so refreshes are slow as well as failing."""
    s = stack
    fresh_plan(s)
    proc = State(s.tb.spec.state_file).proc("prometheus")
    assert proc is not None and proc.owned()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        frozen, assessed_at = frozen_lookahead(s, "Prometheus hung", timeout=40)
        hold_while_stale(s, "Prometheus hung", frozen, assessed_at, "signals")
        assert_withholds(s, "plan_stale", "Prometheus hung")
        took = value(s.exporter.metrics(), "preshift_refresh_duration_seconds")
        print(f"Prometheus hung: a refresh took {took:.1f} s (queries time out after 2 s)")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    fresh_plan(s)
    assert_decides(s, "after Prometheus answered again")


def test_one_engine_down_marks_its_node_but_the_plan_stays_fresh(stack: Stack) -> None:
    """docs/exporter-api.md: "A node merely unreachable does not make the plan stale"."""
    s = stack
    fresh_plan(s)
    s.tb.stop_engine("n3")
    try:
        body = wait_for(lambda: (lambda b: b if not next(
            n for n in b["nodes"] if n["name"] == "n3")["reachable"] else None)(
                s.exporter.footprint()), 20, "n3 unreachable in the footprint")
        n3 = next(n for n in body["nodes"] if n["name"] == "n3")
        assert n3["stale"] is True and n3["error"], n3
        assert body["stale"] is True and body["stages"]["inventory"]["status"] == "partial"
        body = wait_for(lambda: (lambda b: b if web_move_off_n2(b) else None)(
            s.exporter.footprint()), 20, "a fresh plan while n3 is down")
        assert body["plan"]["assessed_at"] == body["generated_at"]
        assert body["sources_up"]["docker"] is True
        wait_for(lambda: prom(s, "preshift_node_up").get("n3") == 0.0, 20,
                 "Prometheus to see n3 down")
        wait_for(lambda: prom(s, "preshift_snapshot_stale") == {"": 1.0}, 20,
                 "Prometheus to see the snapshot stale")
        # the plan can be trusted: the webhook decides (from the engines that answer)
        assert_decides(s, "n3 down")
    finally:
        s.tb.start_engine("n3")
    fresh_plan(s)


def test_every_engine_down_keeps_the_snapshot_and_withholds_decisions(stack: Stack) -> None:
    s = stack
    fresh_plan(s)
    for node in NODES:
        s.tb.stop_engine(node)
    try:
        frozen, assessed_at = frozen_lookahead(s, "every engine stopped")
        text = s.exporter.metrics()
        assert value(text, 'preshift_source_up{source="docker"}') == 0.0
        hold_while_stale(s, "every engine stopped", frozen, assessed_at, "inventory")
        wait_for(lambda: prom(s, "preshift_snapshot_stale") == {"": 1.0}, 20,
                 "Prometheus to see the snapshot stale")
        assert prom(s, "preshift_source_up")["docker"] == 0.0
        assert_withholds(s, "plan_stale", "every engine stopped")
    finally:
        for node in NODES:
            s.tb.start_engine(node)
    fresh_plan(s)
    wait_for(lambda: prom(s, "preshift_snapshot_stale") == {"": 0.0}, 20,
             "Prometheus to see the snapshot fresh again")
    assert_decides(s, "after the engines came back")
    print("slowest answers during the faults: "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in s.slowest.items()))


def test_exporter_down_withholds_then_the_same_notification_is_decided(stack: Stack) -> None:
    """The exporter killed (SIGKILL by its PID): the webhook cannot read a plan, decides
    nothing and keeps the notification; once the exporter is back, the retry decides it."""
    s = stack
    fresh_plan(s)
    journal = Journal(s.artifacts / "journal-exporter-down.sqlite3")
    try:
        ex = Executor(s.config, journal, s.runtime, NoTraffic(), s.plans,
                      observer=MetricsObserver(s.metrics))
        journal.record_notifications([Notification(
            "firing", "PreshiftFootprintDiscrepancy", "web", "fpdown", "2026-01-01T00:00:00Z",
            {"component": "web", "alertname": "PreshiftFootprintDiscrepancy"})])
        before = s.withheld()
        assert s.exporter.stop(signal.SIGKILL) is not None
        assert ex.take_notifications() == 0
        assert journal.count_unhandled() == 1 and not journal.migrations()
        assert s.withheld()["plan_unavailable"] == before["plan_unavailable"] + 1
        s.exporter.start()
        s.exporter.wait_ready()
        fresh_plan(s)
        # the executor's intake backs off after a failed read: retry it as its ticks would
        handled = wait_for(ex.take_notifications, 30, "the kept notification to be decided",
                           interval=0.5)
        outcome = journal.notifications()[0].outcome or ""
        assert handled == 1 and outcome.startswith("migration ") and "[dry-run]" in outcome
        assert len(journal.migrations()) == 1
        print(f"exporter back: the kept notification decided: {outcome}")
    finally:
        journal.close()
        if not s.exporter.running:  # the next tests (and teardown) expect it
            s.exporter.start()
            s.exporter.wait_ready()
