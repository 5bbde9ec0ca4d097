"""Scenario files: the shipped ones load, bad ones fail with one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preshift.errors import ConfigError
from preshift.simulator import Simulator, load_scenario, parse_scenario
from preshift.simulator.metrics import NODE_FAMILIES, SELF_FAMILIES
from preshift.simulator.scenario import Signal, parse_duration
from preshift.simulator.shapes import base_value
from preshift.simulator.state import load_scenario_state, node_readings

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"


@pytest.mark.parametrize("name", ["steady", "degrade-n2", "spikes", "replay"])
def test_shipped_scenarios_load_and_round_trip(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.nodes == ("n1", "n2", "n3")
    again = parse_scenario(json.dumps(scenario.to_document()), base_dir=SCENARIOS, origin="test")
    assert again == scenario


def test_degrade_n2_warns_minutes_before_the_limit() -> None:
    scenario = load_scenario(SCENARIOS / "degrade-n2.yaml")
    temp = scenario.spec_for("n2", Signal.TEMPERATURE_CELSIUS)
    volts = scenario.spec_for("n2", Signal.VOLTAGE_VOLTS)
    assert base_value(temp, 60) == 50 and base_value(temp, 300) == 95
    assert base_value(temp, 180) < 75  # half-way up two minutes before the limit
    assert base_value(volts, 300) < 11.4 < base_value(volts, 200)
    healthy = scenario.spec_for("n1", Signal.TEMPERATURE_CELSIUS)
    assert base_value(healthy, 300) == 50


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("12", 12.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "1d", "-3s", -1, True, "m5"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


BAD_SCENARIOS = [
    pytest.param(
        "nodes: [n1]\nnodes_override: {}\n",
        ["(top level)", "unknown field 'nodes_override'", "allowed:", "overrides"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  temprature: {steady: 1}\n",
        ["defaults.temprature", "'temperature_celsius'"],
        id="unknown-signal",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {steady: 1, ramp: {from: 1, to: 2, over: 5}}\n",
        ["defaults.load", "exactly one shape", "got steady, ramp"],
        id="two-shapes",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {noise: 0.1}\n",
        ["defaults.load", "exactly one shape of steady, ramp, spikes, replay (got none)"],
        id="no-shape",
    ),
    pytest.param(
        "nodes: [n1]\noverrides:\n  n1:\n    load: {ramp: {from: 1, to: 2, over: 5 minutes}}\n",
        ["overrides.n1.load.ramp.over", "invalid duration '5 minutes'", "'5m'"],
        id="bad-duration",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {ramp: {from: 1, over: 5}}\n",
        ["defaults.load.ramp.to", "Field required"],
        id="missing-ramp-to",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  voltage_volts: "
        "{spikes: {base: 12, height: 1, every: 2s, width: 20s}}\n",
        ["defaults.voltage_volts.spikes", "width must be", "shorter than every (2 s)"],
        id="spike-wider-than-period",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {steady: 1, noise: -0.5}\n",
        ["defaults.load.noise", "greater than or equal to 0"],
        id="negative-noise",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {steady: high}\n",
        ["defaults.load.steady", "valid number"],
        id="not-a-number",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {replay: {csv: missing.csv}}\n",
        ["defaults.load.replay", "cannot read", "missing.csv"],
        id="replay-file-missing",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {replay: {csv: trace.csv, column: load}}\n",
        ["defaults.load.replay", "no column 'load'", "timestamp, value"],
        id="replay-column-missing",
    ),
    pytest.param(
        "nodes: [n1]\ndefaults:\n  load: {replay: {csv: unordered.csv}}\n",
        ["defaults.load.replay", "timestamps must increase"],
        id="replay-time-goes-back",
    ),
    pytest.param("nodes: [n1, n2, n1]\n", ["nodes", "unique", "repeated: n1"], id="duplicate-node"),
    pytest.param("nodes: [n1/x]\n", ["nodes[0]", "pattern"], id="bad-node-name"),
    pytest.param(
        "nodes: [n1, n2]\noverrides:\n  n9: {load: 1}\n",
        ["overrides.n9", "unknown node 'n9'", "n1, n2"],
        id="override-of-unknown-node",
    ),
    pytest.param(
        "nodes: [n1]\ncontainers:\n  n4: [web]\n",
        ["containers.n4", "unknown node 'n4'"],
        id="containers-of-unknown-node",
    ),
    pytest.param("defaults: {}\n", ["nodes", "--nodes"], id="no-nodes-anywhere"),
    pytest.param("- n1\n- n2\n", ["top level must be a mapping"], id="not-a-mapping"),
    pytest.param("nodes: [n1\n", ["line 2", "fix the syntax"], id="yaml-syntax"),
    pytest.param("nodes: [n1]\nmemory_limit_bytes: 0\n", ["memory_limit_bytes"], id="zero-limit"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SCENARIOS)
def test_bad_scenario_files_raise_config_error_naming_the_field(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    (tmp_path / "trace.csv").write_text("timestamp,value\n0,1\n5,2\n")
    (tmp_path / "unordered.csv").write_text("timestamp,value\n0,1\n5,2\n3,4\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        # The Simulator also checks the node references (nodes may come from --nodes).
        Simulator.from_file(path)
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message
    assert str(path) in message or "nodes:" in message


def test_missing_scenario_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read scenario file .*--scenario"):
        load_scenario(tmp_path / "nope.yaml")


def test_cli_nodes_are_used_when_the_scenario_has_none(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("overrides:\n  b: {load: 2}\n")
    sim = Simulator.from_file(path, nodes=("a", "b"))
    assert sim.nodes == ("a", "b")
    with pytest.raises(ConfigError, match=r"overrides\.b"):
        Simulator.from_file(path, nodes=("a",))


def test_many_problems_stay_on_one_line() -> None:
    text = "nodes: [n1]\ndefaults:\n" + "".join(
        f"  {s}: {{steady: x{i}}}\n" for i, s in enumerate(Signal)
    )
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, base_dir=Path("."), origin="t")
    assert "\n" not in str(info.value) and "and 1 more" in str(info.value)


def test_scenario_spec_lookup_prefers_override_then_default_then_builtin() -> None:
    scenario = parse_scenario(
        "nodes: [n1, n2]\ndefaults: {load: 2}\noverrides: {n2: {load: 3}}\n",
        base_dir=Path("."),
        origin="t",
    )
    state = load_scenario_state(None, scenario, ("n1", "n2"), source="api", now=0.0)
    assert node_readings(state, "n1", 5.0, ()).load1 == 2
    assert node_readings(state, "n2", 5.0, ()).load1 == 3
    assert scenario.spec_for("n1", Signal.POWER_WATTS).steady == 180.0


def test_docs_list_every_metric_family() -> None:
    docs = (REPO / "docs" / "simulator.md").read_text()
    for family in (*NODE_FAMILIES, *SELF_FAMILIES):
        assert f"`{family.name}" in docs, family.name
    for signal in Signal:
        assert f"`{signal.value}`" in docs, signal
