"""End to end, against the real parts: 3 private Docker engines, the real Prometheus scraping
the real exporter process and the telemetry simulator.

Order matters only for speed: the engine-down test runs last and restores the engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from preshift.testbed import IMAGE, Testbed

from .conftest import EXPORTER, exporter_config
from .stack import Exporter, by_label, port_open, preshift_argv, promql, wait_for, write_yaml

pytestmark = pytest.mark.integration
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]


def run_replica(tb: Testbed, node: str, component: str, name: str, command=None) -> str:
    c = tb.client(node).containers.run(
        IMAGE, command or HTTPD, name=name, detach=True, init=True,
        labels={"preshift.service": component},
    )
    return c.id


def prom_counts(tb: Testbed, query: str, label: str = "node") -> dict[str, float]:
    return by_label(promql(tb.prometheus_url, query), label)


@pytest.fixture
def clean(testbed: Testbed, exporter: Exporter):
    testbed.reset()
    yield testbed
    testbed.reset()


def test_prometheus_sees_replicas_per_node_with_labels(clean: Testbed) -> None:
    tb = clean
    for node, component, name in [
        ("n1", "web", "web-1"), ("n1", "web", "web-2"), ("n2", "web", "web-3"),
        ("n2", "api", "api-1"), ("n3", "api", "api-2"),
    ]:
        run_replica(tb, node, component, name)
    tb.client("n3").containers.run(IMAGE, HTTPD, name="unlabelled", detach=True, init=True)

    want_web = {"n1": 2.0, "n2": 1.0}
    wait_for(
        lambda: {k: v for k, v in prom_counts(tb, 'preshift_replicas{component="web"}').items()
                 if v} == want_web,
        30, "web replicas per node in Prometheus",
    )
    wait_for(
        lambda: {k: v for k, v in prom_counts(tb, 'preshift_replicas{component="api"}').items()
                 if v} == {"n2": 1.0, "n3": 1.0},
        30, "api replicas per node in Prometheus",
    )
    # known pairs stay exported as 0 instead of vanishing
    assert prom_counts(tb, 'preshift_replicas{component="web"}').get("n3", 0.0) == 0.0
    # the unlabelled container is not Preshift's business
    assert prom_counts(tb, "sum by (component) (preshift_replicas)", "component").keys() == {
        "web", "api"
    }
    # node labels come along: replicas per rack and site through the info metric
    joined = promql(
        tb.prometheus_url,
        'sum by (rack, site) (preshift_replicas{component="web"} '
        "* on (node) group_left (rack, site) preshift_node_info)",
    )
    per_rack = {(s["metric"]["rack"], s["metric"]["site"]): s["value"] for s in joined}
    assert per_rack == {("r1", "dc1"): 2.0, ("r2", "dc1"): 1.0, ("r3", "dc2"): 0.0}
    info = promql(tb.prometheus_url, "preshift_node_info")
    assert {s["metric"]["node"]: s["metric"]["host"] for s in info} == {
        "n1": "n1", "n2": "n2", "n3": "n3"
    }
    assert all(s["metric"]["engine_id"] for s in info)


def test_node_signals_reach_prometheus_and_the_exporter(clean: Testbed, exporter: Exporter) -> None:
    tb = clean
    run_replica(tb, "n2", "web", "web-sig")
    temps = wait_for(
        lambda: prom_counts(tb, "max by (node) (node_hwmon_temp_celsius)"),
        30, "simulated temperatures in Prometheus",
    )
    assert set(temps) == {"n1", "n2", "n3"}
    # The exporter holds each configured signal's history, fetched from Prometheus.
    series = wait_for(
        lambda: (
            lambda m: m if m.get("temperature") == 3 and m.get("memory_pressure", 0) >= 1 else None
        )(prom_counts(tb, "preshift_signal_series", "signal")),
        45, "the exporter to hold node and component signal series",
    )
    assert series["node_load"] == 3
    assert series["voltage_deviation"] == 3
    points = prom_counts(tb, "preshift_signal_points", "signal")
    assert points["temperature"] >= 3


def _failures(tb: Testbed, component: str) -> float:
    res = promql(
        tb.prometheus_url,
        f'sum(preshift_component_failures_total{{component="{component}",reason="exit_nonzero"}})',
    )
    return res[0]["value"] if res else 0.0


def test_failure_is_counted_and_survives_an_exporter_restart(
    clean: Testbed, exporter: Exporter
) -> None:
    tb = clean
    run_replica(tb, "n1", "worker", "worker-ok")
    # a crash: the process exits with a non-zero code by itself
    run_replica(tb, "n2", "worker", "worker-crash", ["sh", "-c", "sleep 1; exit 3"])
    wait_for(lambda: _failures(tb, "worker") == 1.0, 30, "1 failure of worker in Prometheus")
    by_node = prom_counts(
        tb, 'preshift_component_failures_total{component="worker",reason="exit_nonzero"}'
    )
    assert {k: v for k, v in by_node.items() if v} == {"n2": 1.0}

    # a deliberate stop is not a failure
    tb.client("n1").containers.get("worker-ok").stop(timeout=2)
    assert wait_for(
        lambda: prom_counts(tb, "preshift_replicas{component=\"worker\"}").get("n1") == 0.0,
        20, "the stopped replica to leave the running count",
    )

    # restart the exporter: the history must be intact, and the counter must not reset
    assert exporter.stop() == 0, exporter.tail()
    exporter.start()
    exporter.wait_ready()
    wait_for(
        lambda: 'component="worker"' in exporter.metrics()
        and "preshift_component_failures_total" in exporter.metrics(),
        30, "the restarted exporter to publish the restored counter",
    )
    text = exporter.metrics()
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("preshift_component_failures_total{") and 'component="worker"' in ln
        and 'reason="exit_nonzero"' in ln and 'node="n2"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 1.0, line
    # Prometheus saw the new process (a fresh scrape after the restart) …
    wait_for(lambda: _failures(tb, "worker") == 1.0, 20, "the count to stay 1 after restart")
    resets = promql(
        tb.prometheus_url, 'sum(resets(preshift_component_failures_total{component="worker"}[5m]))'
    )
    assert resets and resets[0]["value"] == 0.0
    # … and a new failure after the restart continues from the restored count
    run_replica(tb, "n3", "worker", "worker-crash-2", ["sh", "-c", "exit 4"])
    wait_for(lambda: _failures(tb, "worker") == 2.0, 30, "the second failure in Prometheus")


def test_exposition_passes_promtool(clean: Testbed, exporter: Exporter) -> None:
    run_replica(clean, "n1", "web", "web-promtool")
    wait_for(lambda: 'component="web"' in exporter.metrics(), 20, "web in the exposition")
    proc = subprocess.run(
        [shutil.which("promtool") or "/usr/bin/promtool", "check", "metrics"],
        input=exporter.metrics(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_footprint_api_matches_docker(clean: Testbed, exporter: Exporter) -> None:
    run_replica(clean, "n3", "api", "api-json")
    body = wait_for(
        lambda: (lambda b: b if [
            r for r in b["components"].get("api", {}).get("replicas", [])
            if r["state"] == "running"
        ] else None)(exporter.footprint()),
        20, "api in /api/v1/footprint",
    )
    replicas = body["components"]["api"]["replicas"]
    assert [(r["name"], r["node"], r["state"]) for r in replicas] == [
        ("api-json", "n3", "running")
    ]
    nodes = {n["name"]: n for n in body["nodes"]}
    assert nodes["n3"]["rack"] == "r3" and nodes["n3"]["site"] == "dc2"
    assert all(n["reachable"] for n in nodes.values())


def test_bad_configs_start_nothing(testbed: Testbed, tmp_path: Path) -> None:
    good = exporter_config(testbed)
    listen = "127.0.0.1:19741"
    bad_cases = {
        "unknown field": {**good, "risk_tolrance": 0.2},
        "bad url": {**good, "nodes": [{"name": "n1", "url": "docker.sock"}]},
        "bad signal": {**good, "signals": [{"name": "x", "scope": "rack", "query": "up",
                                            "limit": 1}]},
        "bad duration": {**good, "refresh_interval": "often"},
    }
    for case, cfg in bad_cases.items():
        path = write_yaml(tmp_path / "bad.yaml", cfg)
        proc = subprocess.run(
            preshift_argv("exporter", "--config", str(path), "--listen", listen),
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2, (case, proc.stderr)
        assert "Traceback" not in proc.stderr, case
        assert proc.stderr.startswith("error:"), (case, proc.stderr)
        assert not port_open("127.0.0.1", 19741), case
    assert "risk_tolrance: unknown field" in subprocess.run(
        preshift_argv("config", "check", str(write_yaml(tmp_path / "b.yaml",
                                                        bad_cases["unknown field"]))),
        capture_output=True, text=True, timeout=60,
    ).stderr


def test_engine_down_marks_node_unreachable_and_exporter_keeps_serving(
    clean: Testbed, exporter: Exporter
) -> None:
    tb = clean
    run_replica(tb, "n3", "api", "api-n3")
    run_replica(tb, "n1", "api", "api-n1")
    wait_for(
        lambda: prom_counts(tb, 'preshift_replicas{component="api"}').get("n3") == 1.0,
        20, "api on n3 in Prometheus",
    )
    errors_before = sum(
        prom_counts(tb, 'preshift_refresh_errors_total{stage="inventory"}', "stage").values()
    )
    tb.stop_engine("n3")
    try:
        wait_for(
            lambda: prom_counts(tb, "preshift_node_up").get("n3") == 0.0,
            30, "n3 reported unreachable",
        )
        assert prom_counts(tb, "preshift_node_up").get("n1") == 1.0
        # the exporter keeps serving, the error is counted, the last-known replica is kept
        assert requests.get(f"http://{EXPORTER}/metrics", timeout=5).status_code == 200
        wait_for(
            lambda: sum(prom_counts(
                tb, 'preshift_refresh_errors_total{stage="inventory"}', "stage").values()
            ) > errors_before,
            20, "the inventory error to be counted",
        )
        api = prom_counts(tb, 'preshift_replicas{component="api"}')
        assert api.get("n1") == 1.0 and api.get("n3") == 1.0
        body = exporter.footprint()
        n3 = next(n for n in body["nodes"] if n["name"] == "n3")
        assert n3["reachable"] is False and n3["error"]
        outages = prom_counts(
            tb, 'preshift_node_failures_total{reason="unreachable"}'
        )
        assert outages.get("n3", 0) >= 1.0
    finally:
        tb.start_engine("n3")
    wait_for(
        lambda: prom_counts(tb, "preshift_node_up").get("n3") == 1.0, 30, "n3 reachable again"
    )
