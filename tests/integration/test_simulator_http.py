"""The simulator's HTTP server, in process on a free loopback port, with a clock the test moves."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from preshift.simulator import Simulator
from preshift.simulator.metrics import NODE_FAMILIES

REPO = Path(__file__).resolve().parents[2]
PROMTOOL = "/usr/bin/promtool"

SCENARIO = """\
seed: 9
nodes: [n1, n2, n3]
containers:
  n2: [web-1, db-1]
overrides:
  n2:
    temperature_celsius: {ramp: {from: 50, to: 95, start: 60s, over: 4m}}
    latency_seconds: {replay: {csv: traces/latency.csv, loop: true}}
"""


class Clock:
    """Time the test sets; the simulator reads it through its injectable clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def request(
        self, method: str, path: str, body: str | bytes | None = None
    ) -> tuple[int, dict[str, str], str]:
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def get(self, path: str) -> str:
        status, _, text = self.request("GET", path)
        assert status == 200, text
        return text

    def samples(self, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(self.get(f"/metrics/{node}")):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, node: str, metric: str, /, **labels: str) -> float:
        return self.samples(node)[(metric, tuple(sorted(labels.items())))]


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "scenarios" / "traces", tmp_path / "traces")
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(scenario_file: Path, clock: Clock) -> Iterator[Client]:
    sim = Simulator.from_file(scenario_file, clock=clock, reload_interval=0.05)
    srv = sim.serve("127.0.0.1", 0)
    try:
        yield Client(srv.url)
    finally:
        srv.shutdown()


def test_node_metrics_parse_and_hold_every_family_without_a_node_label(server: Client) -> None:
    status, headers, text = server.request("GET", "/metrics/n2")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {f.name for f in NODE_FAMILIES}
    for family in families.values():
        assert family.type == "gauge"
        for sample in family.samples:
            assert "node" not in sample.labels
    assert server.value("n2", "probe_icmp_duration_seconds", phase="rtt") == pytest.approx(0.002)
    assert server.value("n2", "probe_success") == 1.0
    assert server.value("n2", "ipmi_voltage_volts", name="12V") == pytest.approx(12.0, abs=0.2)
    assert server.value("n2", "ipmi_power_watts", name="Pwr Consumption") > 0
    hwmon = server.value(
        "n2", "node_hwmon_temp_celsius", chip="platform_coretemp_0", sensor="temp1"
    )
    assert hwmon == server.value("n2", "ipmi_temperature_celsius", name="CPU Temp") == 50.0
    assert server.value("n2", "container_spec_memory_limit_bytes", name="web-1") == 256 * 2**20
    ratio = server.value("n2", "container_memory_working_set_bytes", name="db-1") / 2**28
    assert ratio == pytest.approx(0.3, abs=0.05)
    # n1 has no containers: the families are there (with HELP/TYPE) but hold no series.
    assert ("container_memory_working_set_bytes", (("name", "web-1"),)) not in server.samples("n1")


def test_values_are_functions_of_time_since_the_scenario_started(
    server: Client, clock: Clock
) -> None:
    def temp() -> float:
        return server.value("n2", "ipmi_temperature_celsius", name="CPU Temp")

    assert temp() == 50.0
    clock.now += 60 + 120
    assert temp() == pytest.approx(72.5)
    clock.now += 120
    assert temp() == pytest.approx(95.0)
    # Same instant, same value: the noise is a function of time too.
    assert server.value("n1", "node_load1") == server.value("n1", "node_load1")


@pytest.mark.parametrize("path", ["/metrics/n1", "/metrics/n2", "/metrics"])
def test_promtool_finds_nothing_wrong(server: Client, path: str) -> None:
    text = server.get(path)
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == result.stderr == ""


def test_put_override_changes_a_signal_and_delete_returns_it(server: Client, clock: Clock) -> None:
    status, _, body = server.request("PUT", "/api/v1/nodes/n3/load", '{"steady": 90}')
    assert status == 200, body
    assert json.loads(body) == {"spec": {"steady": 90.0, "noise": 0.0}, "overridden": True,
                                "value": 90.0}  # fmt: skip
    assert server.value("n3", "node_load1") == 90.0
    clock.now += 60
    assert server.value("n3", "node_load5") == pytest.approx((240 * 0.6 + 60 * 90) / 300)
    assert server.value("n1", "node_load1") != 90.0  # only n3 changed

    ramp = {"ramp": {"from": 20, "to": 30, "over": "10s"}}
    status, _, body = server.request("PUT", "/api/v1/nodes/n3/temperature_celsius",
                                     json.dumps(ramp))  # fmt: skip
    assert status == 200, body
    clock.now += 5
    assert server.value("n3", "ipmi_temperature_celsius", name="CPU Temp") == pytest.approx(25)
    assert "preshift_simulator_overrides 2.0" in server.get("/metrics")

    status, _, _ = server.request("DELETE", "/api/v1/nodes/n3/load")
    assert status == 200
    assert server.value("n3", "node_load1") == pytest.approx(0.6, abs=0.3)
    assert json.loads(server.get("/api/v1/nodes/n3"))["signals"]["load"]["overridden"] is False


def test_bad_put_is_400_naming_the_field_and_changes_nothing(server: Client, clock: Clock) -> None:
    before_doc = server.get("/api/v1/scenario")
    before = server.samples("n2")
    cases = [
        ("/api/v1/nodes/n2/load", '{"steddy": 90}', "unknown field 'steddy'"),
        ("/api/v1/nodes/n2/load", '{"ramp": {"from": 1, "to": 2}}', "load.ramp.over"),
        ("/api/v1/nodes/n2/load", "{not json", "fix the syntax"),
        ("/api/v1/scenario", "nodes: [n1]\ndefaults: {load: {steady: lots}}\n",
         "defaults.load.steady"),
        ("/api/v1/scenario", "nodes: [n1]\noverrides: {n2: {load: 1}}\n", "overrides.n2"),
        ("/api/v1/scenario", "nodes: [n1]\nseeed: 1\n", "unknown field 'seeed'"),
    ]  # fmt: skip
    for path, body, expected in cases:
        status, headers, text = server.request("PUT", path, body)
        assert status == 400, (path, body, text)
        assert headers["Content-Type"] == "application/json"
        assert expected in json.loads(text)["error"], text
    assert server.get("/api/v1/scenario") == before_doc
    assert server.samples("n2") == before
    assert 'preshift_simulator_reload_errors_total{source="api"} 3.0' in server.get("/metrics")


def test_put_scenario_replaces_it_atomically(server: Client, clock: Clock) -> None:
    yaml_body = "seed: 3\nnodes: [n1, n2, n4]\ndefaults:\n  power_watts: {steady: 321}\n"
    status, _, body = server.request("PUT", "/api/v1/scenario", yaml_body)
    assert status == 200, body
    assert json.loads(body)["nodes"] == ["n1", "n2", "n4"]
    assert server.value("n4", "ipmi_power_watts", name="Pwr Consumption") == 321
    assert server.request("GET", "/metrics/n3")[0] == 404
    # JSON is accepted too, and GET gives back what PUT accepts.
    doc = json.loads(server.get("/api/v1/scenario"))
    doc["defaults"]["power_watts"] = {"steady": 123}
    status, _, body = server.request("PUT", "/api/v1/scenario", json.dumps(doc))
    assert status == 200, body
    assert server.value("n1", "ipmi_power_watts", name="Pwr Consumption") == 123
    own = server.get("/metrics")
    assert 'preshift_simulator_reloads_total{source="api"} 2.0' in own
    assert 'preshift_simulator_scenario_info{digest="' in own and 'source="api"' in own


def test_unknown_node_signal_or_path_is_404(server: Client) -> None:
    for method, path, body in [
        ("GET", "/metrics/n9", None),
        ("GET", "/api/v1/nodes/n9", None),
        ("PUT", "/api/v1/nodes/n9/load", '{"steady": 1}'),
        ("PUT", "/api/v1/nodes/n1/humidity", '{"steady": 1}'),
        ("GET", "/nothing/here", None),
    ]:
        status, _, text = server.request(method, path, body)
        assert status == 404, (method, path, text)
    assert "unknown node 'n9'" in server.request("GET", "/metrics/n9")[2]
    status, headers, _ = server.request("POST", "/api/v1/scenario", "{}")
    assert (status, headers["Allow"]) == (405, "GET, PUT")


def wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_scenario_file_is_reloaded_when_it_changes(server: Client, scenario_file: Path) -> None:
    server.request("PUT", "/api/v1/nodes/n1/load", '{"steady": 7}')
    scenario_file.write_text("nodes: [n1, n2, n3]\ndefaults: {voltage_volts: 11.0}\n")
    assert wait_for(lambda: server.value("n1", "ipmi_voltage_volts", name="12V") == 11.0)
    assert server.value("n1", "node_load1") != 7  # a new scenario drops runtime overrides
    assert 'preshift_simulator_reloads_total{source="file"} 1.0' in server.get("/metrics")

    # A broken edit is logged and counted; the last good scenario keeps being served.
    scenario_file.write_text("nodes: [n1, n2, n3]\ndefaults: {voltage_volts: {ramp: {}}}\n")
    assert wait_for(
        lambda: (
            'preshift_simulator_reload_errors_total{source="file"} 1.0' in server.get("/metrics")
        )
    )
    assert server.value("n1", "ipmi_voltage_volts", name="12V") == 11.0
