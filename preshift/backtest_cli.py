"""`preshift backtest`: replay a recorded signal through the exporter's scoring.

Writes PREFIX.csv (one row per refresh) and PREFIX.png (the figure), and prints a summary:
alarms, the first limit crossing, the warning lead time, failures announced by an alarm.
Both files appear together or not at all: they are written beside their final names and
renamed only once both are complete.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from .backtest import (
    BacktestResult,
    BacktestSettings,
    Summary,
    read_trace,
    replay,
    summarize,
)
from .durations import format_duration, parse_duration
from .errors import InputError
from .score.forecast import ModelKind

CSV_COLUMNS: tuple[str, ...] = (
    "timestamp", "value", "forecast_for", "forecast_mean", "lower_80", "upper_80", "lower_95",
    "upper_95", "p_breach", "p_environment", "p_history", "hps", "alarm", "failure", "model",
)


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x + 0.0:.6g}"  # + 0.0: no "-0" in the file


def write_csv(result: BacktestResult, out: TextIO) -> None:
    """One row per refresh; `forecast_for` is the time the forecast columns describe."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    horizon = result.horizon_steps * result.step
    for i, t in enumerate(result.timestamps.tolist()):
        w.writerow([
            f"{t:.3f}".rstrip("0").rstrip("."), _num(result.values[i]),
            f"{t + horizon:.3f}".rstrip("0").rstrip("."), _num(result.mean[i]),
            _num(result.lower[i, 0]), _num(result.upper[i, 0]),
            _num(result.lower[i, 1]), _num(result.upper[i, 1]),
            _num(result.p_breach[i]), _num(result.p_environment[i]),
            _num(result.p_history[i]), f"{result.hps[i]:.3f}",
            int(result.alarm[i]), int(result.failures[i]),
            ModelKind(int(result.model[i])).name.lower(),
        ])


class DurationType(click.ParamType):
    """15s, 5m, 1h30m or plain seconds (the configuration's duration syntax)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail("must be greater than 0", param, ctx)
        return seconds


DURATION = DurationType()


def iso(t: float | None) -> str:
    """UTC ISO 8601 with a Z, or 'never'."""
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def summary_lines(result: BacktestResult, summary: Summary, source: str) -> list[str]:
    """The printed summary, one fact per line."""
    s = result.settings
    h = format_duration(result.horizon_steps * result.step)
    lines = [
        f"backtest {source}: {summary.points} points, step {format_duration(result.step)}, "
        f"horizon {h}, limit {s.limit:g} ({'above' if s.above else 'below'}), "
        f"weight {s.weight:g}, tolerance {s.tolerance:g} (alarm when HPS < {s.alarm_hps:g})",
    ]
    n_ep = len(summary.episodes)
    lines.append(
        f"  {'alarms':<21}{summary.alarms} refreshes in {n_ep} episode"
        f"{'' if n_ep == 1 else 's'}; first alarm {iso(summary.first_alarm)}"
    )
    n_cr = len(summary.crossings)
    lines.append(
        f"  {'first limit crossing':<21}{iso(summary.first_crossing)}"
        + (f" ({n_cr} crossing{'' if n_cr == 1 else 's'}, {summary.crossings_warned} "
           f"preceded by an alarm)" if n_cr else "")
    )
    if summary.lead_time is not None and summary.first_crossing is not None:
        since = iso(summary.first_crossing - summary.lead_time)
        lead = f"{format_duration(summary.lead_time)} (alarm from {since})"
    elif summary.first_crossing is not None:
        lead = f"none: no alarm in the {h} before the crossing"
    else:
        lead = "n/a: the signal never crossed the limit"
    lines.append(f"  {'warning lead time':<21}{lead}")
    n_f = len(summary.failures)
    lines.append(
        f"  {'failures':<21}{n_f}" + (f", {summary.failures_warned} preceded by an alarm "
                                          f"within {h}" if n_f else "")
    )
    lines.append(
        f"  {'false alarms':<21}{summary.false_alarms} episode"
        f"{'' if summary.false_alarms == 1 else 's'} with no crossing or failure within {h}"
    )
    last = ModelKind(int(result.model[-1])).name
    lines.append(f"  {'model':<21}{result.fits} ETS fit(s); last model {last}")
    return lines


def _progress(total: int, quiet: bool) -> Any:
    """A tqdm bar on stderr that appears only after 1 s, and never off a terminal."""
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, unit="pt", desc="replaying", file=sys.stderr, delay=1.0,
                disable=disable, leave=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_paths(prefix: Path) -> list[Path]:
    """PREFIX.csv and PREFIX.png (the prefix may itself contain dots)."""
    return [prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".png")]


def write_outputs(result: BacktestResult, summary: Summary, prefix: Path, title: str) -> list[Path]:
    """Write PREFIX.csv and PREFIX.png via temporary files: both or neither."""
    from .backtest_plot import render

    targets = output_paths(prefix)
    temps: list[Path] = []
    try:
        for target in targets:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            temps.append(Path(name))
            os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
            if target.suffix == ".csv":
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    write_csv(result, out)
            else:
                with os.fdopen(fd, "wb") as bout:
                    render(result, summary, bout, title=title)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"cannot write {prefix}.csv/.png: {exc.strerror or exc}") from None
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return targets


@click.command("backtest")
@click.argument("csv_path", metavar="CSV", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=float, required=True, help="the signal's limit")
@click.option("--direction", type=click.Choice(["above", "below"]), default="above",
              show_default=True, help="a breach is going above (or below) the limit")
@click.option("--step", type=DURATION, default=None,
              help="sampling step, e.g. 60s  [default: median spacing of the timestamps]")
@click.option("--horizon", type=DURATION, default="30m", show_default=True,
              help="how far ahead the score looks (Config.horizon)")
@click.option("--weight", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="how strongly a breach leads to failure (SignalConfig.weight)")
@click.option("--tolerance", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="alarm when the risk 1 − HPS/100 exceeds it")
@click.option("--history", type=DURATION, default="24h", show_default=True,
              help="window each refresh sees (prometheus.history)")
@click.option("--out", "prefix", type=click.Path(path_type=Path), default=None,
              help="output prefix: PREFIX.csv and PREFIX.png  [default: ./<CSV name>-backtest]")
@click.option("--time-column", default="timestamp", show_default=True)
@click.option("--value-column", default="value", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def backtest_command(
    csv_path: Path, limit: float, direction: str, step: float | None, horizon: float,
    weight: float, tolerance: float, history: float, prefix: Path | None, time_column: str,
    value_column: str, quiet: bool,
) -> None:
    """Replay a CSV of one signal through the exporter's forecast and score, one refresh per
    point, and report when the alarm (risk above the tolerance) would have fired.

    CSV columns: timestamp (epoch seconds or ISO 8601, UTC when no offset), value (empty for a
    missing point) and optionally failure (1/true marks a failure at that time).
    """
    if prefix is None:
        prefix = Path.cwd() / f"{csv_path.stem}-backtest"
    if not prefix.parent.is_dir():  # say so before a long replay, not after it
        raise InputError(f"--out {prefix}: directory {prefix.parent} does not exist")
    for target in output_paths(prefix):
        if target.exists() and csv_path.exists() and target.samefile(csv_path):
            raise InputError(f"--out {prefix}: would overwrite the input {csv_path}; "
                             "choose another prefix")
    trace = read_trace(csv_path, time_column=time_column, value_column=value_column)
    settings = BacktestSettings(
        limit=limit, above=direction == "above", step=step, horizon=horizon, weight=weight,
        tolerance=tolerance, history=history,
    )
    with _progress(trace.timestamps.size, quiet) as bar:
        result = replay(trace, settings, on_step=bar.update)
    summary = summarize(result)
    written = write_outputs(result, summary, prefix, title=f"backtest of {csv_path.name}")
    for line in summary_lines(result, summary, csv_path.name):
        click.echo(line)
    click.echo(f"  {'wrote':<21}{', '.join(str(p) for p in written)}")
