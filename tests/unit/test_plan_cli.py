"""`preshift plan` and `preshift explain`: rendering, --from against a tiny exporter on
127.0.0.1 serving a canned document, exit codes, and --config over fake adapters."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from preshift import plan_cli
from preshift.cli import main
from preshift.model import FailureEvent
from preshift.plan_view import Context, close_matches, failure_counters, render_plan
from preshift.score.forecast import EtsParams, ModelKind

NOW = 1_767_225_600.0

# The /api/v1/footprint document of a small world (shape: exporter/document.py): n2 runs hot,
# web-2 moves to n3, api scales up on n3, the stateful db-1 is held.
CANNED: dict[str, Any] = {
    "version": 1, "generated_at": NOW, "stale": False,
    "nodes": [{"name": n, "host": n, "rack": f"r{i}", "site": "dc1", "reachable": True,
               "stale": False, "engine_id": None, "error": None}
              for i, n in enumerate(("n1", "n2", "n3"), 1)],
    "components": {
        "web": {"replicas": [{"name": "web-1", "node": "n1", "state": "running", "health": None},
                             {"name": "web-2", "node": "n2", "state": "running", "health": None},
                             {"name": "web-3", "node": "n3", "state": "exited", "health": None}],
                "running_by_node": {"n1": 1, "n2": 1, "n3": 0}},
        "api": {"replicas": [{"name": "api-1", "node": "n2", "state": "running", "health": None}],
                "running_by_node": {"n1": 0, "n2": 1, "n3": 0}},
        "db": {"replicas": [{"name": "db-1", "node": "n2", "state": "running", "health": None}],
               "running_by_node": {"n1": 0, "n2": 1, "n3": 0}},
    },
    "scores": {
        "replicas": [
            {"replica": "web-1", "component": "web", "node": "n1", "hps": 98.4,
             "factors": {"history": 0.008, "dependency": 0.0, "environment": 0.0, "node": 0.008},
             "top_signal": None, "top_dependency": None},
            {"replica": "web-2", "component": "web", "node": "n2", "hps": 59.0,
             "factors": {"history": 0.008, "dependency": 0.0, "environment": 0.4, "node": 0.008},
             "top_signal": "temperature", "top_dependency": None},
            {"replica": "api-1", "component": "api", "node": "n2", "hps": 55.0,
             "factors": {"history": 0.05, "dependency": 0.2, "environment": 0.4, "node": 0.008},
             "top_signal": "temperature", "top_dependency": "db"},
            {"replica": "db-1", "component": "db", "node": "n2", "hps": 59.0,
             "factors": {"history": 0.008, "dependency": 0.0, "environment": 0.4, "node": 0.008},
             "top_signal": "temperature", "top_dependency": None},
        ],
        "nodes": {"n1": {"hps": 99.2, "reachable": True, "top_signal": None,
                         "factors": {"environment": 0.0, "node": 0.008}},
                  "n2": {"hps": 59.5, "reachable": True, "top_signal": "temperature",
                         "factors": {"environment": 0.4, "node": 0.008}},
                  "n3": {"hps": 99.2, "reachable": True, "top_signal": None,
                         "factors": {"environment": 0.0, "node": 0.008}}},
        "components": {"api": 55.0, "db": 59.0, "web": 59.0},
    },
    "plan": {
        "assessed_at": NOW, "stale": False, "tolerance": 0.2,
        "current": {"api": ["n2"], "db": ["n2"], "web": ["n1", "n2"]},
        "desired": {"api": ["n2", "n3"], "db": ["n2"], "web": ["n1", "n3"]},
        "entries": [
            {"action": "move", "component": "web", "replica": "web-2", "from_node": "n2",
             "to_node": "n3", "reason": "risk 0.41 > tolerance 0.20, mostly environment",
             "priority": 41.0, "hps": 59.0, "target_hps": 98.4},
            {"action": "scale_up", "component": "api", "replica": "api-1", "from_node": "n2",
             "to_node": "n3", "reason": "no node brings it to the safe level 0.15",
             "priority": 22.5, "hps": 55.0, "target_hps": 75.0},
        ],
        "held": [{"component": "db", "replica": "db-1", "node": "n2", "hps": 59.0,
                  "why": "stateful", "reason": "stateful service: not moved"}],
        "discrepancy": {"api": 0.5, "db": 0.0, "web": 0.5},
        "threshold": {"api": 0.0, "db": 0.0, "web": 0.2},
    },
    "forecasts": {
        "horizon_seconds": 1800.0, "levels": [80.0, 95.0],
        "signals": {
            "temperature": {"scope": "node", "limit": 85.0, "direction": "above", "quality": None,
                            "series": {
                                "n1": {"last": 60.0, "mean": 60.1, "lower": [59.0, 58.0],
                                       "upper": [61.0, 62.0], "p_breach": 0.0, "mase": 0.8},
                                "n2": {"last": 80.0, "mean": 86.0, "lower": [83.0, 82.0],
                                       "upper": [89.0, 90.0], "p_breach": 0.8, "mase": 0.9}}},
            "memory_pressure": {"scope": "component", "limit": 0.9, "direction": "above",
                                "quality": None, "series": {}},
        },
    },
    "errors": {"stages": {"inventory": None, "signals": None, "failures": None, "assess": None},
               "nodes": {}, "signals": {}},
    "sources_up": {"docker": True, "prometheus": True},
    "stages": {},
}
METRICS = (
    "# HELP preshift_component_failures_total Failures.\n"
    "# TYPE preshift_component_failures_total counter\n"
    'preshift_component_failures_total{component="api",node="n2",reason="oom"} 2.0\n'
    'preshift_component_failures_total{component="api",node="n2",reason="unhealthy"} 0.0\n'
    'preshift_node_failures_total{node="n2",reason="unreachable"} 1.0\n'
)


class _Exporter(BaseHTTPRequestHandler):
    """Answers like the exporter: the document, /metrics, or a scripted status."""

    doc: Any = CANNED
    status = 200

    def do_GET(self) -> None:  # http.server calls it by this name
        if self.path == "/api/v1/footprint":
            body, ctype = json.dumps(type(self).doc).encode(), "application/json"
        elif self.path == "/metrics":
            body, ctype = METRICS.encode(), "text/plain; version=0.0.4"
        else:
            self.send_error(404)
            return
        self.send_response(type(self).status if self.path != "/metrics" else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[str, type[_Exporter]]]:
    """A tiny exporter on 127.0.0.1 (a free port); yields its URL and the handler class."""
    handler = type("Handler", (_Exporter,), {"doc": copy.deepcopy(CANNED), "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # --detailed-exitcode's "changes"
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


# --- plan --------------------------------------------------------------------------------------


def test_plan_from_a_running_exporter(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = exporter
    code, out, err = run(["plan", "--from", url], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"Preshift plan from {url}")
    assert any(line.split()[:2] == ["web", "n1,"] and "→ n1, n3" in line and "0.50 > 0.20" in line
               for line in lines)
    assert "  ~ move web-2  n2 → n3  (priority 41.00, HPS 59.0 → 98.4)" in lines
    assert any(line.startswith("  + scale_up api on n3") for line in lines)
    assert any("db-1 (db) on n2" in line and "stateful" in line for line in lines)
    # highest priority first, summary last
    assert out.index("~ move web-2") < out.index("+ scale_up api")
    assert lines[-1] == "Plan: 1 to move, 1 to add, 1 held."


def test_plan_detailed_exitcode(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = exporter
    assert run(["plan", "--from", url, "--detailed-exitcode"], capsys)[0] == 2
    handler.doc["plan"]["entries"] = []
    code, out, _ = run(["plan", "--from", url, "--detailed-exitcode"], capsys)
    assert code == 0 and "No changes." in out and "Plan: 0 to move, 0 to add, 1 held." in out
    assert run(["plan", "--from", url], capsys)[0] == 0  # without the flag: 0 when it ran


def test_plan_json_prints_the_plan_section(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = exporter
    code, out, _ = run(["plan", "--from", url, "--json"], capsys)
    assert code == 0 and json.loads(out) == CANNED["plan"]


def test_plan_errors_are_one_line(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, handler = exporter
    handler.status = 503
    code, _, err = run(["plan", "--from", url], capsys)
    assert code == 2 and "has not finished its first refresh" in err and "Traceback" not in err
    # with --detailed-exitcode an error is 1, so that 2 keeps meaning "changes"
    assert run(["plan", "--from", url, "--detailed-exitcode"], capsys)[0] == 1
    handler.status = 200
    handler.doc["plan"] = None
    handler.doc["errors"]["stages"]["assess"] = "not assessed: no Docker engine could be read"
    code, _, err = run(["plan", "--from", url], capsys)
    assert code == 2 and "no plan yet: not assessed: no Docker engine" in err


def test_plan_cannot_reach_the_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(["plan", "--from", f"http://127.0.0.1:{port}", "--timeout", "2"], capsys)
    assert code == 2 and err.startswith("error: exporter: http://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def test_plan_needs_exactly_one_source(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRESHIFT_CONFIG", raising=False)
    code, _, err = run(["plan"], capsys)
    assert code == 2 and "exactly one of --config PATH or --from URL" in err
    url, _ = exporter
    code, _, err = run(["plan", "--config", "x.yaml", "--from", url], capsys)
    assert code == 2 and "exactly one of" in err
    # a configuration from the environment (as the exporter reads it) yields to --from
    monkeypatch.setenv("PRESHIFT_CONFIG", "/nonexistent.yaml")
    assert run(["plan", "--from", url], capsys)[0] == 0


def test_stale_plans_say_so() -> None:
    doc = copy.deepcopy(CANNED)
    doc["plan"]["stale"] = True
    doc["errors"]["stages"]["assess"] = "not assessed: the newest signal point is 900 s old"
    lines = render_plan(doc, Context(source="test"))
    assert lines[1] == "! stale: assess: not assessed: the newest signal point is 900 s old"


# --- explain -----------------------------------------------------------------------------------


def test_explain_a_replica(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = exporter
    code, out, err = run(["explain", "api-1", "--from", url], capsys)
    assert code == 0, err
    assert "api-1 (component api) on n2: HPS 55.0, risk 0.45 > tolerance 0.20" in out
    history = next(line for line in out.splitlines() if "history" in line)
    # p = 1 − exp(−λ·H): 0.05 over 30 min is a rate of 0.103 per hour
    assert "p=0.050" in history and "rate 0.103/h" in history
    assert "failures counted 2 (oom 2 on n2" in history
    # the dependency's own risk from its replica's factors, and the implied correlation
    own = 1 - (1 - 0.008) * (1 - 0.4) * (1 - 0.008)
    assert f"db: own risk p_d {own:.2f}" in out
    assert f"correlation ≈ {0.2 / own:.2f}" in out
    assert "temperature (node n2): now 80, forecast 86 [80 %: 83–89], limit 85.0 (above): " \
           "P(breach) 0.80  ← top" in out
    assert "no data (counts as 0): memory_pressure" in out
    assert "n2 reachable, node HPS 59.5; node failures counted: unreachable 1" in out
    assert "+ scale_up api on n3" in out and "api: discrepancy 0.50 vs threshold 0.00" in out


def test_explain_a_component_lists_its_replicas_riskiest_first(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = exporter
    code, out, _ = run(["explain", "web", "--from", url], capsys)
    assert code == 0
    assert "component web: 2 running replica(s), lowest HPS 59.0" in out
    assert out.index("web-2 (component web)") < out.index("web-1 (component web)")
    assert "~ move web-2  n2 → n3" in out


def test_explain_unknown_names_list_close_matches(
    exporter: tuple[str, type[_Exporter]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = exporter
    code, _, err = run(["explain", "web-9", "--from", url], capsys)
    assert code == 2 and "Traceback" not in err
    assert "no replica or component named 'web-9'; did you mean web-1, web-2, web-3" in err
    assert "(components: api, db, web)" in err
    code, _, err = run(["explain", "web-3", "--from", url], capsys)
    assert code == 2 and "web-3 (component web) is exited on n3" in err


def test_close_matches_and_counters() -> None:
    assert close_matches("wbe-1", {"web-1", "api-1", "db"})[0] == "web-1"
    assert close_matches("api", {"api-1", "api-2", "web"}) == ["api-1", "api-2"]
    comps, nodes = failure_counters(METRICS)
    assert comps == {("api", "n2", "oom"): 2.0, ("api", "n2", "unhealthy"): 0.0}
    assert nodes == {("n2", "unreachable"): 1.0}


# --- --config: one refresh over fake adapters --------------------------------------------------


def _ann(y: np.ndarray) -> EtsParams:
    """A fitted model without statsforecast: level at the last point, recent trend, σ from
    the differences (the test is about the wiring, not the fit)."""
    d = np.diff(y[-10:])
    return EtsParams(ModelKind.AAN, 0.5, 0.1, 1.0, float(np.var(d)) + 1e-6, float(y[-1]),
                     float(d.mean()))


def test_plan_and_explain_from_a_config_over_fake_adapters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.testing import (
        FakeFailures,
        FakeInventory,
        sample_config,
        sample_failures,
        sample_inventory,
        sample_signals,
    )

    config = sample_config()
    signals = sample_signals(NOW, points=60)
    ts = np.arange(60, dtype=float) * 60 + (NOW - 3600)
    rng = np.random.default_rng(1)
    held = dict(signals.held)
    for node in ("n1", "n2", "n3"):  # n2 heats up 0.5 °C a minute toward the 85 °C limit
        slope = 0.5 if node == "n2" else 0.0
        held[("temperature", node)] = (ts, 60 + slope * (ts - ts[0]) / 60
                                       + rng.normal(0, 0.3, 60))
    signals.held = held
    loaded: list[tuple[float, float]] = []

    def history(since: float, until: float) -> list[FailureEvent]:
        loaded.append((since, until))
        return []

    def fake_live(path: str) -> tuple[Any, Context]:
        assert path == "preshift.yaml"
        snap = plan_cli.snapshot_once(
            config, FakeInventory(sample_inventory(NOW, down=())), signals,
            FakeFailures(sample_failures(NOW)), history=history, fitter=_ann, clock=lambda: NOW,
        )
        assert snap.assessment is not None
        # every series got a fitted model in this one refresh
        assert all(q.fitted == q.series for q in snap.assessment.quality.values())
        return json.loads(snap.footprint_json), plan_cli.context_from(snap, config, path)

    monkeypatch.setattr(plan_cli, "live_document", fake_live)
    code, out, err = run(["plan", "--config", "preshift.yaml"], capsys)
    assert code == 0, err
    assert loaded, "the failure history was loaded"
    assert "web-2" in out and "n2" in out and out.rstrip().splitlines()[-1].startswith("Plan: ")
    code, out, err = run(["explain", "web-2", "--config", "preshift.yaml"], capsys)
    assert code == 0, err
    # the configuration adds what the document lacks: weights and exact dependency risks
    assert "temperature (node n2)" in out and "× weight 0.5 = " in out and "← top" in out
    assert "failures counted 3 (oom 2 on n2, exit_nonzero 1 on n3" in out


def test_live_document_builds_the_exporters_adapters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The real --config path: load the file, build_adapters, refresh, close the adapters."""
    import exporter.cli as exporter_cli

    closed: list[bool] = []
    histories: list[tuple[float, float]] = []

    class Adapters:
        def __init__(self) -> None:
            from exporter.testing import (
                FakeFailures,
                FakeInventory,
                sample_failures,
                sample_inventory,
                sample_signals,
            )

            self.inventory = FakeInventory(sample_inventory(time.time(), down=()))
            self.signals = sample_signals(time.time())
            self.ledger = FakeFailures(sample_failures(time.time()))
            self.prometheus = None

        def restore(self, config: Any) -> float:
            return 0.0

        def history(self, config: Any, since: float, until: float) -> list[FailureEvent]:
            histories.append((since, until))
            return []

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(exporter_cli, "build_adapters", lambda *a: Adapters())
    path = tmp_path / "preshift.yaml"
    path.write_text("nodes:\n" + "".join(
        f"  - {{name: {n}, url: 'unix:///nonexistent/{n}.sock'}}\n" for n in ("n1", "n2", "n3")),
        encoding="utf-8")
    doc, ctx = plan_cli.live_document(str(path))
    assert closed == [True] and len(histories) == 1
    assert doc["plan"] is not None and ctx.source == str(path)
