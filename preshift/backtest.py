"""Backtests: replay one recorded signal through the exporter's scoring, one refresh per point.

The replay drives the exporter's own `Assessor` (preshift.assess), so it uses the very code
of a refresh: the `Forecaster` (fallback model first, statsforecast AutoETS fits on the same
budget and schedule, the same state updates and first-passage breach probability), `hps.score`
and the planner, on a one-node, one-replica footprint configured with this one signal. The
history factor counts the failures marked in the trace so far. So a backtest answers "had
Preshift been watching this signal, when would it have raised the alarm (risk above the
tolerance, the point where the planner acts)?".

Everything here is plain data in, plain data out; reading the CSV is the only I/O. Writing
the outputs lives in :mod:`preshift.backtest_cli` and the figure in :mod:`preshift.backtest_plot`,
so the core never imports matplotlib.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

import numpy as np
import numpy.typing as npt

from .assess import Assessor
from .config import Config, parse_config
from .errors import InputError
from .model import FailureEvent, Footprint, Node, NodeLabels, Replica
from .score.forecast import Fitter

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: A backtest needs at least one model fit: the Forecaster's min_fit_points.
MIN_POINTS = 24
LEVELS: tuple[float, float] = (80.0, 95.0)
_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"", "0", "false", "no", "n", "f"})
_MISSING = frozenset({"", "nan", "NaN", "NA", "null"})
# The one node and replica the replayed signal belongs to.
_NODE, _COMPONENT, _SIGNAL = "node", "traced", "signal"


@dataclass(frozen=True, slots=True)
class Trace:
    """One signal as read from a CSV: timestamps increase; values may be NaN (missing)."""

    timestamps: FloatArray  # seconds since the epoch
    values: FloatArray
    failures: BoolArray  # a failure was marked at that timestamp
    source: str = "trace"


@dataclass(frozen=True, slots=True)
class BacktestSettings:
    """What to replay against. `step` None infers it from the timestamps (median spacing)."""

    limit: float
    above: bool = True
    step: float | None = None
    horizon: float = 1800.0
    weight: float = 1.0
    tolerance: float = 0.2
    history: float = 86400.0  # window each refresh sees, like prometheus.history

    @property
    def alarm_hps(self) -> float:
        """HPS below which the replayed replica is in alarm: risk = 1 − HPS/100 > tolerance."""
        return 100.0 * (1.0 - self.tolerance)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """One row per refresh (per CSV point). Forecast columns describe timestamp + horizon."""

    settings: BacktestSettings
    step: float
    horizon_steps: int
    timestamps: FloatArray
    values: FloatArray
    mean: FloatArray  # forecast mean at the end of the horizon
    lower: FloatArray  # (n, 2): 80 % and 95 % lower band at the end of the horizon
    upper: FloatArray  # (n, 2)
    p_breach: FloatArray
    p_environment: FloatArray
    p_history: FloatArray
    hps: FloatArray
    alarm: BoolArray
    failures: BoolArray
    model: npt.NDArray[np.int8]  # ModelKind per refresh
    fits: int  # successful statsforecast fits during the replay


@dataclass(frozen=True, slots=True)
class Episode:
    """A run of alarmed refreshes; runs less than one horizon apart count as one."""

    start: float
    end: float  # timestamp of its last alarmed refresh


@dataclass(frozen=True, slots=True)
class Summary:
    """What a person wants to know from a backtest. Times are epoch seconds, None: never."""

    points: int
    alarms: int  # refreshes in alarm
    episodes: tuple[Episode, ...]
    first_alarm: float | None
    crossings: tuple[float, ...]  # times the signal went beyond the limit
    crossings_warned: int
    first_crossing: float | None
    lead_time: float | None  # first crossing − start of the alarm that warned of it
    failures: tuple[float, ...]
    failures_warned: int
    false_alarms: int  # episodes followed by no crossing or failure within the horizon


# --- reading -----------------------------------------------------------------------------------


def parse_time(text: str) -> float:
    """Epoch seconds, or ISO 8601 (a time without an offset is UTC). Raises ValueError."""
    try:
        value = float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text.strip())
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def read_trace(
    source: str | Path | TextIO,
    *,
    time_column: str = "timestamp",
    value_column: str = "value",
    failure_column: str = "failure",
) -> Trace:
    """Read and validate a trace; every problem is an InputError naming the line and column."""
    if isinstance(source, str | Path):
        name = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8-sig")  # Excel adds a BOM
        except FileNotFoundError:
            raise InputError(f"{name}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read it: {exc}") from None
        stream: TextIO = io.StringIO(text)
    else:
        name, stream = getattr(source, "name", "trace"), source
    reader = csv.DictReader(stream)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in (time_column, value_column) if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header) or "nothing"
        raise InputError(
            f"{name} line 1: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"the header has {found} (need {time_column!r}, {value_column!r} and optionally "
            f"{failure_column!r})"
        )
    has_failure = failure_column in header
    ts: list[float] = []
    vals: list[float] = []
    fails: list[bool] = []
    prev_line = 0
    for row in reader:
        line = reader.line_num
        if None in row:  # more fields than the header names
            raise InputError(f"{name} line {line}: more fields than the header's {len(header)}")

        def cell(column: str, row: dict[str, str | None] = row) -> str:
            return (row.get(column) or "").strip()

        raw_t = cell(time_column)
        try:
            t = parse_time(raw_t)
        except ValueError:
            raise InputError(
                f"{name} line {line}, column {time_column!r}: {raw_t!r} is neither epoch "
                "seconds nor an ISO 8601 time (e.g. 2026-01-01T00:00:00Z)"
            ) from None
        if ts and t <= ts[-1]:
            raise InputError(
                f"{name} line {line}, column {time_column!r}: {raw_t!r} is not after the "
                f"previous timestamp (line {prev_line}); timestamps must increase"
            )
        raw_v = cell(value_column)
        try:
            v = math.nan if raw_v in _MISSING else float(raw_v)
        except ValueError:
            v = math.inf  # reported just below, with the infinite ones
        if math.isinf(v):
            raise InputError(
                f"{name} line {line}, column {value_column!r}: {raw_v!r} is not a finite number "
                "(leave it empty for a missing point)"
            )
        raw_f = cell(failure_column).lower() if has_failure else ""
        if raw_f not in _TRUE | _FALSE:
            raise InputError(
                f"{name} line {line}, column {failure_column!r}: {raw_f!r} is not a flag; "
                "use 1/true for a failure and 0/false or empty otherwise"
            )
        ts.append(t)
        vals.append(v)
        fails.append(raw_f in _TRUE)
        prev_line = line
    finite = sum(1 for v in vals if not math.isnan(v))
    if finite < MIN_POINTS:
        raise InputError(
            f"{name}: {finite} point(s) with a value; a backtest needs at least {MIN_POINTS} "
            "(one model fit)"
        )
    return Trace(
        np.asarray(ts, dtype=np.float64), np.asarray(vals, dtype=np.float64),
        np.asarray(fails, dtype=bool), name,
    )


def infer_step(timestamps: FloatArray) -> float:
    """The median spacing: robust to a few gaps or late points."""
    return float(np.median(np.diff(timestamps)))


def grid_positions(trace: Trace, step: float) -> npt.NDArray[np.int64]:
    """Each point's slot on the step grid; two points in one slot are an InputError."""
    pos = np.rint((trace.timestamps - trace.timestamps[0]) / step).astype(np.int64)
    same = np.flatnonzero(np.diff(pos) == 0)
    if same.size:
        i = int(same[0])
        raise InputError(
            f"{trace.source}: points {i + 1} and {i + 2} (timestamps {trace.timestamps[i]:g} and "
            f"{trace.timestamps[i + 1]:g}) fall in the same {step:g} s step; use a smaller --step"
        )
    return pos


# --- replay ------------------------------------------------------------------------------------


def _footprint(now: float) -> Footprint:
    node = Node(_NODE, "backtest://", NodeLabels(_NODE, _NODE, _NODE), reachable=True)
    rep = Replica("backtest", _COMPONENT, _COMPONENT, _NODE, "running", "",
                  labels=MappingProxyType({}))
    return Footprint(now, (node,), (rep,))


def backtest_config(settings: BacktestSettings, step: float) -> Config:
    """The configuration an exporter watching only this signal would run with."""
    return parse_config({
        "nodes": [{"name": _NODE, "url": "unix:///backtest.sock"}],
        "signals": [{"name": _SIGNAL, "scope": "node", "query": "backtest",
                     "limit": settings.limit, "weight": settings.weight,
                     "direction": "above" if settings.above else "below"}],
        "risk_tolerance": settings.tolerance,
        "horizon": settings.horizon,
        "refresh_interval": step,  # one refresh per point
        "prometheus": {"step": step, "history": settings.history},
    }, source="backtest settings")


def replay(
    trace: Trace,
    settings: BacktestSettings,
    *,
    fitter: Fitter | None = None,
    on_step: Callable[[], object] | None = None,
) -> BacktestResult:
    """Run one exporter assessment per point of `trace`; `on_step` is called after each one.

    Each refresh hands the exporter's `Assessor` what its SignalHistory would hold: the points
    of the last `settings.history` seconds on the step grid, plus the failures marked so far,
    for a one-replica footprint. `fitter` replaces statsforecast (tests).
    """
    step = settings.step if settings.step is not None else infer_step(trace.timestamps)
    if not step > 0:
        raise InputError(f"step must be > 0 (got {step:g})")
    pos = grid_positions(trace, step)
    config = backtest_config(settings, step)
    assessor = Assessor(config, levels=LEVELS, fitter=fitter)
    h_steps = assessor.forecaster.horizon_steps
    t0 = float(trace.timestamps[0])
    grid_ts = t0 + pos * step  # Prometheus answers query_range on an aligned grid too
    finite = np.isfinite(trace.values)
    f_ts, f_vals = grid_ts[finite], trace.values[finite]
    n = trace.timestamps.size
    cols = {k: np.full(n, np.nan) for k in ("mean", "p", "env", "hist", "hps")}
    lower, upper = np.full((n, len(LEVELS)), np.nan), np.full((n, len(LEVELS)), np.nan)
    model = np.zeros(n, dtype=np.int8)
    events: list[FailureEvent] = []
    fits = 0
    for i in range(n):
        now = float(grid_ts[i])
        lo = int(np.searchsorted(f_ts, now - settings.history, side="right"))
        hi = int(np.searchsorted(f_ts, now, side="right"))
        series = {(_SIGNAL, _NODE): (f_ts[lo:hi], f_vals[lo:hi])} if hi > lo else {}
        if trace.failures[i]:
            events.append(FailureEvent(now, "exit_nonzero", _NODE, _COMPONENT, _COMPONENT))
        a = assessor.assess(_footprint(now), series, events, now)
        fits = int(a.fits.get("ok", 0))
        scored = a.scores.replicas[0]
        cols["env"][i], cols["hist"][i] = scored.p_environment, scored.p_history
        cols["hps"][i] = scored.hps
        if len(a.forecasts.keys):
            f = a.forecasts
            cols["mean"][i], cols["p"][i] = f.mean[0], f.p_breach[0]
            lower[i], upper[i], model[i] = f.lower[0], f.upper[0], f.kind[0]
        if on_step is not None:
            on_step()
    return BacktestResult(
        settings, step, h_steps, trace.timestamps, trace.values, cols["mean"], lower, upper,
        cols["p"], cols["env"], cols["hist"], cols["hps"],
        cols["hps"] < settings.alarm_hps, trace.failures, model, fits,
    )


# --- summary -----------------------------------------------------------------------------------


def alarm_episodes(ts: FloatArray, alarm: BoolArray, gap: float) -> tuple[Episode, ...]:
    """Runs of alarms; a quiet spell shorter than `gap` (the horizon) does not end a run, so a
    risk hovering at the tolerance reads as one warning, not as many."""
    edges = np.diff(np.concatenate(([0], alarm.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    out: list[Episode] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):  # consecutive refreshes
        if out and ts[a] - out[-1].end < gap:
            out[-1] = Episode(out[-1].start, float(ts[b]))
        else:
            out.append(Episode(float(ts[a]), float(ts[b])))
    return tuple(out)


def warning_for(
    event: float, alarm_times: FloatArray, episodes: Sequence[Episode], horizon: float
) -> Episode | None:
    """The episode that warned of `event`: an alarm strictly before it (the refresh that sees
    the event itself does not warn) and no older than one horizon."""
    k = int(np.searchsorted(alarm_times, event, side="left")) - 1
    if k < 0 or alarm_times[k] < event - horizon:
        return None
    t = alarm_times[k]
    return next(e for e in episodes if e.start <= t <= e.end)


def crossings(values: FloatArray, limit: float, above: bool) -> npt.NDArray[np.int64]:
    """Indices where the signal goes beyond the limit from a point that was not beyond it."""
    with np.errstate(invalid="ignore"):
        beyond = values >= limit if above else values <= limit
    return np.flatnonzero(beyond[1:] & ~beyond[:-1]) + 1


def summarize(result: BacktestResult) -> Summary:
    """Alarms, crossings and failures, and which of them an alarm announced in time."""
    s, ts = result.settings, result.timestamps
    horizon = s.horizon
    episodes = alarm_episodes(ts, result.alarm, horizon)
    alarm_times = ts[result.alarm]
    cross = tuple(float(ts[i]) for i in crossings(result.values, s.limit, s.above))
    fails = tuple(float(t) for t in ts[result.failures])
    warned = [warning_for(t, alarm_times, episodes, horizon) for t in cross]
    fail_warned = [warning_for(t, alarm_times, episodes, horizon) for t in fails]
    lead = None
    if cross and warned[0] is not None:
        lead = cross[0] - warned[0].start
    events = np.sort(np.asarray(cross + fails, dtype=np.float64))
    confirmed = sum(
        1 for e in episodes
        if np.any((events > e.start) & (events <= e.end + horizon))
    )
    return Summary(
        points=int(ts.size),
        alarms=int(result.alarm.sum()),
        episodes=episodes,
        first_alarm=float(alarm_times[0]) if alarm_times.size else None,
        crossings=cross,
        crossings_warned=sum(w is not None for w in warned),
        first_crossing=cross[0] if cross else None,
        lead_time=lead,
        failures=fails,
        failures_warned=sum(w is not None for w in fail_warned),
        false_alarms=len(episodes) - confirmed,
    )
