"""The simulator's maths: each shape, its integral, the noise and the smoothed load averages."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preshift.simulator.scenario import Scenario, SignalSpec
from preshift.simulator.shapes import (
    Segment,
    base_value,
    gaussian,
    integral,
    timeline_mean,
    value,
)
from preshift.simulator.state import (
    Container,
    load_scenario_state,
    node_readings,
    with_override,
)


def spec(data: object, base_dir: Path | None = None) -> SignalSpec:
    return SignalSpec.model_validate(data, context={"base_dir": base_dir or Path(".")})


def numeric_integral(s: SignalSpec, a: float, b: float, steps: int = 20000) -> float:
    h = (b - a) / steps
    return sum(base_value(s, a + (i + 0.5) * h) for i in range(steps)) * h


RAMP = spec({"ramp": {"from": 50, "to": 95, "start": "60s", "over": "4m"}})
SPIKES = spec({"spikes": {"base": 12.0, "height": 0.9, "every": "20s", "width": "2s", "start": 5}})


def test_steady_is_constant() -> None:
    s = spec({"steady": 0.6})
    assert {base_value(s, t) for t in (-5, 0, 1, 1e6)} == {0.6}
    assert integral(s, 10) == pytest.approx(6.0)


def test_bare_number_means_steady() -> None:
    assert spec(0.6) == spec({"steady": 0.6})


def test_ramp_holds_then_climbs_then_reaches_to_after_over() -> None:
    assert base_value(RAMP, 0) == 50
    assert base_value(RAMP, 60) == 50
    assert base_value(RAMP, 60 + 120) == pytest.approx(72.5)  # halfway
    assert base_value(RAMP, 60 + 240) == 95  # `to` exactly after `over`
    assert base_value(RAMP, 10_000) == 95  # and holds
    values = [base_value(RAMP, t) for t in range(0, 400, 5)]
    assert values == sorted(values)


def test_ramp_with_zero_over_is_a_step() -> None:
    s = spec({"ramp": {"from": 1, "to": 3, "start": 10, "over": 0}})
    assert (base_value(s, 9.99), base_value(s, 10)) == (1, 3)
    assert integral(s, 20) == pytest.approx(10 * 1 + 10 * 3)


def test_spikes_are_periodic_rectangles() -> None:
    assert base_value(SPIKES, 0) == 12.0  # before `start`
    for k in range(5):
        first = 5 + 20 * k
        assert base_value(SPIKES, first) == pytest.approx(12.9)
        assert base_value(SPIKES, first + 1.99) == pytest.approx(12.9)
        assert base_value(SPIKES, first + 2) == 12.0
        assert base_value(SPIKES, first + 10) == 12.0
    for t in (5.5, 13.0, 24.9, 26.0):
        assert base_value(SPIKES, t) == base_value(SPIKES, t + 20) == base_value(SPIKES, t + 200)


@pytest.mark.parametrize(
    "s",
    [RAMP, SPIKES, spec({"ramp": {"from": 5, "to": -2, "start": 3, "over": 7}})],
    ids=["ramp", "spikes", "falling-ramp"],
)
@pytest.mark.parametrize(("a", "b"), [(0, 30), (10, 333), (-20, 61), (250, 900)])
def test_integral_matches_numeric_integration(s: SignalSpec, a: float, b: float) -> None:
    assert integral(s, b) - integral(s, a) == pytest.approx(numeric_integral(s, a, b), rel=1e-3)


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    rows = ["timestamp,value", "1000,1.0", "1010,3.0", "1020,2.0", "1030,6.0"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    iso = ["time,load", "2026-01-01T00:00:00,4", "2026-01-01T00:01:00,8"]
    (tmp_path / "iso.csv").write_text("\n".join(iso) + "\n")
    return tmp_path


def test_replay_follows_the_csv_with_relative_timing(trace_dir: Path) -> None:
    s = spec({"replay": {"csv": "t.csv"}}, trace_dir)
    assert [base_value(s, t) for t in (0, 10, 20, 30)] == [1.0, 3.0, 2.0, 6.0]
    assert base_value(s, 5) == pytest.approx(2.0)  # linear between rows
    assert base_value(s, 500) == 6.0  # holds the last value without `loop`


def test_replay_speed_and_loop(trace_dir: Path) -> None:
    fast = spec({"replay": {"csv": "t.csv", "speed": 2.0}}, trace_dir)
    assert base_value(fast, 5) == 3.0  # 10 s of trace in 5 s
    looped = spec({"replay": {"csv": "t.csv", "loop": True}}, trace_dir)
    # The last row holds one step (10 s) while sliding back, so the period is 40 s.
    assert base_value(looped, 40) == 1.0
    assert base_value(looped, 35) == pytest.approx(3.5)
    for t in (3.0, 12.5, 27.0):
        assert base_value(looped, t) == pytest.approx(base_value(looped, t + 40 * 7))


def test_replay_reads_iso_timestamps_and_named_columns(trace_dir: Path) -> None:
    s = spec({"replay": {"csv": "iso.csv", "time_column": "time", "column": "load"}}, trace_dir)
    assert base_value(s, 30) == pytest.approx(6.0)


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize(("a", "b"), [(0, 25), (7, 95), (-10, 300)])
def test_replay_integral_matches_numeric(trace_dir: Path, loop: bool, a: float, b: float) -> None:
    s = spec({"replay": {"csv": "t.csv", "loop": loop, "speed": 1.5}}, trace_dir)
    assert integral(s, b) - integral(s, a) == pytest.approx(numeric_integral(s, a, b), rel=1e-3)


def test_noise_is_deterministic_for_a_seed() -> None:
    s = spec({"steady": 50, "noise": 0.5})
    a = [value(s, t, seed=7, key="n2/temperature_celsius") for t in range(100)]
    b = [value(s, t, seed=7, key="n2/temperature_celsius") for t in range(100)]
    assert a == b
    assert a != [value(s, t, seed=8, key="n2/temperature_celsius") for t in range(100)]
    assert a != [value(s, t, seed=7, key="n1/temperature_celsius") for t in range(100)]
    # Constant within a one-second bucket, so two scrapes in a row agree.
    assert value(s, 3.1, seed=7, key="k") == value(s, 3.9, seed=7, key="k")


def test_noise_is_standard_normal() -> None:
    draws = [gaussian(1, "n1/load", b) for b in range(20000)]
    assert statistics.fmean(draws) == pytest.approx(0.0, abs=0.03)
    assert statistics.pstdev(draws) == pytest.approx(1.0, abs=0.03)
    assert all(math.isfinite(d) for d in draws)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    t=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_no_noise_means_exact_value(seed: int, t: float) -> None:
    assert value(RAMP, t, seed=seed, key="x") == base_value(RAMP, t)


def test_load_averages_follow_an_override_slowly() -> None:
    scenario = Scenario(nodes=("n1",), defaults={"load": spec({"steady": 0.6})})
    state = load_scenario_state(None, scenario, ("n1",), source="api", now=1000.0)
    state = with_override(state, "n1", "load", spec({"steady": 10.0}), now=2000.0)
    r = node_readings(state, "n1", 2060.0, ())
    assert r.load1 == 10.0
    assert r.load5 == pytest.approx((240 * 0.6 + 60 * 10) / 300)
    assert r.load15 == pytest.approx((840 * 0.6 + 60 * 10) / 900)
    assert r.load5 > r.load15
    assert node_readings(state, "n1", 2000.0 + 900, ()).load15 == pytest.approx(10.0)


def test_clearing_an_override_resumes_the_scenario_clock() -> None:
    scenario = Scenario(nodes=("n1",), defaults={"temperature_celsius": RAMP})
    state = load_scenario_state(None, scenario, ("n1",), source="api", now=0.0)
    state = with_override(state, "n1", "temperature_celsius", spec({"steady": 20}), now=100.0)
    assert node_readings(state, "n1", 150.0, ()).temperature_celsius == 20
    state = with_override(state, "n1", "temperature_celsius", None, now=200.0)
    assert not state.overrides
    assert node_readings(state, "n1", 240.0, ()).temperature_celsius == pytest.approx(83.75)


def test_readings_clamp_non_negative_signals_and_fill_containers() -> None:
    scenario = Scenario(
        nodes=("n1",),
        defaults={"load": spec({"steady": 0.0, "noise": 5.0}), "memory_ratio": spec(0.5)},
        memory_limit_bytes=1000,
    )
    state = load_scenario_state(None, scenario, ("n1",), source="api", now=0.0)
    loads = [node_readings(state, "n1", float(t), ()).load1 for t in range(50)]
    assert min(loads) == 0.0 and max(loads) > 0.0
    r = node_readings(state, "n1", 1.0, (Container("web"), Container("db", 4000)))
    assert [(c.name, c.working_set_bytes, c.limit_bytes) for c in r.containers] == [
        ("web", 500.0, 1000.0),
        ("db", 2000.0, 4000.0),
    ]
    with pytest.raises(KeyError):
        node_readings(state, "n9", 1.0, ())


def test_timeline_mean_before_any_history_holds_the_first_value() -> None:
    timeline = (Segment(100.0, 100.0, RAMP),)
    assert timeline_mean(timeline, 100.0, 300.0) == pytest.approx(50.0)
