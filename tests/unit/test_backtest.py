"""`preshift backtest`: replay core, summary maths, outputs and the errors a person sees.

The replays use the real statsforecast fitter (the exporter's code path, about 1-2 s in all);
the summary maths is checked on hand-made arrays.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from preshift.backtest import (
    MIN_POINTS,
    BacktestSettings,
    Episode,
    Trace,
    alarm_episodes,
    crossings,
    read_trace,
    replay,
    summarize,
    warning_for,
)
from preshift.cli import main
from preshift.errors import InputError

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP = 60.0


def ramp_values(
    n: int = 360, start_ramp: int = 180, slope: float = 0.15, seed: int = 3
) -> np.ndarray:
    """60 °C with noise, then rising `slope` °C per minute from `start_ramp` on."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return 60 + np.where(i > start_ramp, (i - start_ramp) * slope, 0.0) + rng.normal(0, 0.5, n)


def write_trace(path: Path, values: np.ndarray, failures: set[int] = frozenset(),  # type: ignore[assignment]
                iso: bool = False) -> Path:
    lines = ["timestamp,value,failure"]
    for k, v in enumerate(values):
        t = T0 + STEP * k
        stamp = (np.datetime64(int(t), "s").astype(str) + "Z") if iso else f"{t:.0f}"
        lines.append(f"{stamp},{v:.3f},{1 if k in failures else 0}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def trace_of(values: np.ndarray, failures: set[int] = frozenset()) -> Trace:  # type: ignore[assignment]
    n = values.size
    f = np.zeros(n, dtype=bool)
    f[list(failures)] = True
    return Trace(T0 + STEP * np.arange(n), np.asarray(values, dtype=np.float64), f, "test")


# --- replay -----------------------------------------------------------------------------------


def test_a_ramp_that_crosses_the_limit_alarms_before_the_crossing() -> None:
    values = ramp_values()
    result = replay(trace_of(values), BacktestSettings(limit=85.0))
    s = summarize(result)
    assert s.first_crossing is not None and s.first_alarm is not None
    assert s.first_alarm < s.first_crossing
    assert s.lead_time is not None and s.lead_time > 0
    assert s.crossings_warned == len(s.crossings) >= 1
    assert s.false_alarms == 0
    assert result.fits >= 1  # statsforecast did fit, on the exporter's schedule
    # before the ramp the replica is healthy: HPS near its priors, no alarm
    assert not result.alarm[:170].any()
    assert (result.hps[30:170] > 95).all()


def test_a_steady_series_raises_no_alarm() -> None:
    rng = np.random.default_rng(5)
    values = 60 + rng.normal(0, 0.5, 300)
    s = summarize(replay(trace_of(values), BacktestSettings(limit=85.0)))
    assert s.alarms == 0 and s.episodes == () and s.first_alarm is None
    assert s.first_crossing is None and s.lead_time is None


def test_below_limits_mirror_above_limits() -> None:
    values = 200 - ramp_values()  # falls toward 115 from 140
    s = summarize(replay(trace_of(values), BacktestSettings(limit=115.0, above=False)))
    assert s.lead_time is not None and s.lead_time > 0


def test_failures_feed_the_history_factor_and_count_as_warned_only_after_an_alarm() -> None:
    values = ramp_values()
    cross = int(crossings(values, 85.0, True)[0])
    result = replay(trace_of(values, {20, cross + 5}), BacktestSettings(limit=85.0))
    s = summarize(result)
    assert result.p_history[25] > result.p_history[15]  # the failure at 20 raised it
    assert len(s.failures) == 2 and s.failures_warned == 1  # the early one had no warning


def test_missing_points_and_an_irregular_clock_are_replayed() -> None:
    values = ramp_values(n=240, start_ramp=120)
    values[50:55] = np.nan
    tr = trace_of(values)
    jitter = np.random.default_rng(1).uniform(-5, 5, values.size)
    tr = Trace(tr.timestamps + jitter, tr.values, tr.failures, "jitter")
    result = replay(tr, BacktestSettings(limit=85.0))
    assert result.step == pytest.approx(STEP, abs=5)
    assert np.isfinite(result.hps).all()


# --- summary maths ----------------------------------------------------------------------------


def test_alarm_episodes_merge_quiet_spells_shorter_than_the_horizon() -> None:
    ts = np.arange(10, dtype=float) * 60
    alarm = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    assert alarm_episodes(ts, alarm, gap=150) == (Episode(60, 240), Episode(480, 480))
    assert alarm_episodes(ts, alarm, gap=30) == (
        Episode(60, 120), Episode(240, 240), Episode(480, 480))


def test_warning_needs_an_alarm_strictly_before_and_within_the_horizon() -> None:
    eps = (Episode(100, 200),)
    times = np.array([100.0, 200.0])
    assert warning_for(250, times, eps, horizon=60) == eps[0]
    assert warning_for(300, times, eps, horizon=60) is None  # the alarm had ended too long ago
    assert warning_for(100, times, eps, horizon=60) is None  # same refresh: not a warning


def test_crossings_are_transitions_beyond_the_limit() -> None:
    v = np.array([1, 2, 5, 6, 4, np.nan, 7, 7, 3])
    assert crossings(v, 5, True).tolist() == [2, 6]
    assert crossings(v, 3, False).tolist() == [8]


# --- reading ----------------------------------------------------------------------------------


def test_read_trace_accepts_iso_and_epoch_and_flags(tmp_path: Path) -> None:
    text = "timestamp,value,failure\n" + "\n".join(
        f"{f'2026-01-01T00:{k:02d}:00Z' if k % 2 else str(int(T0) + 60 * k)},{k},"
        f"{'true' if k == 3 else ''}" for k in range(MIN_POINTS)
    )
    tr = read_trace(io.StringIO(text))
    assert tr.timestamps[1] - tr.timestamps[0] == 60
    assert tr.failures.tolist().count(True) == 1 and tr.failures[3]


BAD = {
    "missing column": ("time,val\n1,2\n", "line 1: missing column(s) 'timestamp', 'value'"),
    "bad value": ("timestamp,value\n1,2\n2,abc\n", "line 3, column 'value': 'abc'"),
    "infinite value": ("timestamp,value\n1,inf\n", "line 2, column 'value': 'inf'"),
    "bad time": ("timestamp,value\n1,2\nyesterday,3\n", "line 3, column 'timestamp': 'yesterday'"),
    "not increasing": (
        "timestamp,value\n5,1\n5,2\n", "line 3, column 'timestamp': '5' is not after"
    ),
    "bad flag": ("timestamp,value,failure\n1,2,maybe\n", "line 2, column 'failure': 'maybe'"),
    "extra field": ("timestamp,value\n1,2,3\n", "line 2: more fields"),
    "too few": ("timestamp,value\n1,2\n2,3\n", f"needs at least {MIN_POINTS}"),
    "empty": ("", "missing column(s)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csv_is_an_input_error_naming_the_place(case: str) -> None:
    text, message = BAD[case]
    with pytest.raises(InputError) as err:
        read_trace(io.StringIO(text))
    assert message in str(err.value)


# --- the command ------------------------------------------------------------------------------


def test_command_writes_csv_and_png_and_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_trace(tmp_path / "ramp.csv", ramp_values(), failures={300}, iso=True)
    prefix = tmp_path / "out" / "ramp"
    prefix.parent.mkdir()
    assert main(["backtest", str(src), "--limit", "85", "--out", str(prefix)]) == 0
    out = capsys.readouterr()
    assert "warning lead time" in out.out and "preceded by an alarm" in out.out
    assert "replaying" not in out.err  # no progress bar off a terminal
    png = (tmp_path / "out" / "ramp.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    with (tmp_path / "out" / "ramp.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 360
    assert set(rows[0]) >= {"timestamp", "value", "forecast_mean", "lower_80", "upper_80",
                            "lower_95", "upper_95", "p_breach", "hps", "alarm", "failure"}
    assert sum(int(r["failure"]) for r in rows) == 1
    assert any(r["alarm"] == "1" for r in rows)
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["ramp.csv", "ramp.png"]


@pytest.mark.parametrize("case", ["bad value", "not increasing", "too few", "missing column"])
def test_command_on_a_bad_csv_exits_2_with_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD[case]
    src = tmp_path / "bad.csv"
    src.write_text(text, encoding="utf-8")
    assert main(["backtest", str(src), "--limit", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_command_rejects_a_missing_output_directory_before_replaying(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_trace(tmp_path / "ramp.csv", ramp_values(n=30))
    assert main(["backtest", str(src), "--limit", "85", "--out", str(tmp_path / "no/x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_command_never_overwrites_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_trace(tmp_path / "ramp.csv", ramp_values(n=30))
    before = src.read_bytes()
    assert main(["backtest", str(src), "--limit", "85", "--out", str(tmp_path / "ramp")]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == before and not (tmp_path / "ramp.png").exists()


def test_command_rejects_a_bad_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_trace(tmp_path / "ramp.csv", ramp_values(n=30))
    assert main(["backtest", str(src), "--limit", "85", "--horizon", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


# --- the shipped example and the docs ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_example_warns_before_its_crossing() -> None:
    trace = read_trace(ROOT / "docs" / "examples" / "temperature-ramp.csv")
    assert trace.failures.sum() == 1
    s = summarize(replay(trace, BacktestSettings(limit=85.0)))
    assert s.lead_time is not None and s.lead_time >= 15 * 60
    assert s.failures_warned == 1 and s.false_alarms == 0
    assert f"warning lead time    {s.lead_time / 60:.0f}m" in (
        ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_every_subcommand_is_documented() -> None:
    from preshift.cli import SUBCOMMANDS

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert f"## `preshift {name}" in text, f"docs/cli.md has no section for {name}"
