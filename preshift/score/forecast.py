"""Forecasts for every series on every refresh: fit rarely, update cheaply, batch everything.

``Forecaster.update`` takes all series as one flat array plus offsets (like statsforecast's
GroupedArray) and, per refresh:

1. runs the ETS recursion of each series over the points that arrived since the last refresh,
   with the parameters fitted earlier (a few vector operations per new point, all series at once);
2. refits at most ``fit_budget_per_refresh`` series with statsforecast's AutoETS (never fitted
   first, then those whose one-step errors drifted, then the oldest fit), within ``fit_seconds``;
3. computes the forecast at the end of the horizon, its prediction bands, the probability of
   crossing each series' limit within the horizon, and the rolling forecast quality.

A series seen for the first time gets a robust random walk with drift until its first fit, so
every series has a forecast from its first refresh. The maths functions are pure and take arrays;
statsforecast is imported only by :mod:`preshift.score.ets_fit`, and only when the default fitter
is first used.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from preshift.errors import InputError
from preshift.score.ets_model import EtsParams, ModelKind
from preshift.score.probability import breach_probability

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_MAD_TO_SD = 1.482602218505602  # 1/Φ⁻¹(3/4): MAD of a normal sample → its standard deviation


Fitter = Callable[[FloatArray], EtsParams]


class SeriesBatch(NamedTuple):
    """All series of one refresh: series ``i`` is ``values[indptr[i]:indptr[i + 1]]``.

    Values are oldest first at the forecaster's fixed step, NaN where a point is missing;
    ``end[i]`` is the timestamp (seconds) of series ``i``'s last value.
    """

    keys: Sequence[Hashable]
    values: FloatArray
    indptr: IntArray
    end: FloatArray


def make_batch(
    keys: Sequence[Hashable], series: Sequence[npt.ArrayLike], end: npt.ArrayLike
) -> SeriesBatch:
    """Build a batch from one array per series (convenience; not for the hot path)."""
    arrays = [np.asarray(s, dtype=np.float64).ravel() for s in series]
    indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.size for a in arrays], out=indptr[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return SeriesBatch(list(keys), values, indptr, np.asarray(end, dtype=np.float64))


def batch_from_history(
    history: Mapping[Hashable, tuple[npt.ArrayLike, npt.ArrayLike]], step: float
) -> SeriesBatch:
    """Place each ``(timestamps, values)`` series on its ``step`` grid; NaN where a point is absent.

    This is the shape ``SignalHistory.series()`` publishes: sorted grid timestamps, with the
    points Prometheus did not return simply missing. One concatenation, then vector maths.
    """
    keys = list(history)
    if not keys:
        return SeriesBatch([], np.zeros(0), np.zeros(1, dtype=np.int64), np.zeros(0))
    ts_list = [np.asarray(history[k][0], dtype=np.float64) for k in keys]
    sizes = np.fromiter((t.size for t in ts_list), dtype=np.int64, count=len(keys))
    ts = np.concatenate(ts_list)
    vals = np.concatenate([np.asarray(history[k][1], dtype=np.float64) for k in keys])
    nonempty = sizes > 0
    first_at = np.cumsum(sizes) - sizes
    last_at = first_at + sizes - 1
    sid = np.repeat(np.arange(len(keys)), sizes)
    start = np.where(nonempty, ts[np.minimum(first_at, ts.size - 1)], np.nan)
    end = np.where(nonempty, ts[np.minimum(last_at, ts.size - 1)], np.nan)
    pos = np.rint((ts - start[sid]) / step).astype(np.int64)
    length = np.where(nonempty, np.rint(np.nan_to_num(end - start) / step) + 1, 0).astype(np.int64)
    indptr = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(length, out=indptr[1:])
    values = np.full(int(indptr[-1]), np.nan)
    values[indptr[sid] + pos] = vals
    return SeriesBatch(keys, values, indptr, end)


class RefreshStats(NamedTuple):
    """What one refresh did, for the exporter's own health metrics."""

    series: int
    new_points: int  # points consumed by the state update
    fresh: int  # series (re)started with the fallback model
    fitted: int
    fit_failed: int
    fit_backlog: int  # series due for a fit that this refresh's budget left waiting
    seconds_update: float
    seconds_fit: float
    seconds_forecast: float


class ModelArrays(NamedTuple):
    """The current model of every series (copies), e.g. to simulate or to debug a forecast."""

    keys: Sequence[Hashable]
    kind: npt.NDArray[np.int8]
    level: FloatArray
    trend: FloatArray
    alpha: FloatArray
    beta: FloatArray
    phi: FloatArray
    sigma2: FloatArray


class ForecastResult(NamedTuple):
    """Per-series arrays, in the order of the batch's keys."""

    keys: Sequence[Hashable]
    levels: tuple[float, ...]
    mean_last: FloatArray  # forecast mean at the last step of the horizon
    sd_last: FloatArray  # forecast standard deviation at the last step
    lower: FloatArray  # (n, len(levels)): lower band at the last step, per level
    upper: FloatArray  # (n, len(levels))
    p_breach: FloatArray  # P(crossing the limit at some step within the horizon); NaN: no limit
    mae: FloatArray  # rolling one-step-ahead mean absolute error
    mase: FloatArray  # that MAE / the naive (last value) forecast's MAE on the same points
    drifted: BoolArray  # recent one-step errors far above the fitted variance
    kind: npt.NDArray[np.int8]  # ModelKind
    fit_age: FloatArray  # seconds since the last successful fit; NaN: never fitted
    stats: RefreshStats


# --- pure maths -----------------------------------------------------------------------------


def ets_step(
    level: FloatArray,
    trend: FloatArray,
    alpha: FloatArray,
    beta: FloatArray,
    phi: FloatArray,
    y: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One step of the additive-error ETS recursion; returns (level, trend, one-step error).

    A missing ``y`` (NaN) advances the state by its forecast and gives a NaN error.
    """
    fcst = level + phi * trend
    err = y - fcst
    e0 = np.where(np.isfinite(err), err, 0.0)
    return fcst + alpha * e0, phi * trend + beta * e0, err


def forecast_paths(
    level: FloatArray,
    trend: FloatArray,
    alpha: FloatArray,
    beta: FloatArray,
    phi: FloatArray,
    sigma2: FloatArray,
    horizon: int,
) -> tuple[FloatArray, FloatArray]:
    """Forecast mean and variance for steps 1..horizon, each of shape ``(n, horizon)``.

    mean_h = l + b·(φ + … + φ^h);  var_h = σ²·(1 + Σ_{j<h} c_j²),  c_j = α + β·(φ + … + φ^j).
    """
    n = np.broadcast(level, trend, alpha, beta, phi, sigma2).shape
    mean = np.empty((*n, horizon))
    var = np.empty((*n, horizon))
    for h, (m, v) in enumerate(_moments(level, trend, alpha, beta, phi, sigma2, horizon)):
        mean[..., h] = m
        var[..., h] = v
    return mean, var


def horizon_moments(
    level: FloatArray,
    trend: FloatArray,
    alpha: FloatArray,
    beta: FloatArray,
    phi: FloatArray,
    sigma2: FloatArray,
    horizon: int,
) -> tuple[FloatArray, FloatArray]:
    """Forecast mean and variance at the last step only, without ``(n, horizon)`` arrays."""
    if horizon < 1:
        raise ValueError("horizon must be at least 1 step")
    # Keep only the last (mean, var): deque(maxlen=1) drains the generator without a loop body.
    (last,) = deque(_moments(level, trend, alpha, beta, phi, sigma2, horizon), maxlen=1)
    return last


def _moments(
    level: FloatArray,
    trend: FloatArray,
    alpha: FloatArray,
    beta: FloatArray,
    phi: FloatArray,
    sigma2: FloatArray,
    horizon: int,
) -> Iterator[tuple[FloatArray, FloatArray]]:
    """Yield (mean_h, var_h) for h = 1..horizon, carrying only (n,) running sums."""
    psum = np.zeros(np.broadcast(level, trend, phi).shape)  # φ + … + φ^h
    acc = np.zeros(np.broadcast(alpha, beta, phi).shape)  # Σ_{j<h} c_j²
    for _ in range(horizon):
        psum = phi * (1.0 + psum)
        yield level + psum * trend, sigma2 * (1.0 + acc)
        c = alpha + beta * psum
        acc = acc + c * c


class Fallback(NamedTuple):
    """Random walk with drift per row, its state at the end of the row's window."""

    level: FloatArray  # last finite value + drift × trailing missing points
    drift: FloatArray
    sigma2: FloatArray
    last_value: FloatArray  # last finite value
    n_finite: IntArray


def fallback_params(
    values: FloatArray, indptr: IntArray, rows: IntArray, chunk: int = 1024
) -> Fallback:
    """Robust random walk with drift for ``rows`` of a batch.

    Drift is the median first difference and σ comes from the differences' MAD, so a spike or
    a level shift in the history does not set the forecast. Rows are padded in chunks to bound
    memory. Rows with fewer than 3 finite points get NaN.
    """
    m = rows.size
    level = np.full(m, np.nan)
    last = np.full(m, np.nan)
    drift = np.full(m, np.nan)
    sigma2 = np.full(m, np.nan)
    n_finite = np.zeros(m, dtype=np.int64)
    if values.size == 0:
        return Fallback(level, drift, sigma2, last, n_finite)
    for s in range(0, m, chunk):
        r = rows[s : s + chunk]
        start = indptr[r]
        length = indptr[r + 1] - start
        width = max(int(length.max(initial=0)), 2)
        cols = np.arange(width)
        inside = cols < length[:, None]
        pad = np.where(inside, values.take(start[:, None] + cols, mode="clip"), np.nan)
        fin = np.isfinite(pad)
        nf = fin.sum(axis=1)
        last_pos = width - 1 - np.argmax(fin[:, ::-1], axis=1)
        diffs = np.diff(pad, axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, on purpose
            med = np.nanmedian(diffs, axis=1)
            sd = _MAD_TO_SD * np.nanmedian(np.abs(diffs - med[:, None]), axis=1)
            # A step-like series has MAD 0; its standard deviation still shows the jumps.
            sd = np.where(sd > 0, sd, np.nanstd(diffs, axis=1))
        # Shrink the drift by its own uncertainty (James-Stein style): a median of a few noisy
        # differences, carried over the whole horizon, turns white noise into a trend (20 σ
        # below a limit gave P(breach) ≈ 0.3 before). A real trend is many standard errors
        # away from 0 and keeps almost all of its drift.
        n_diffs = np.maximum(np.isfinite(diffs).sum(axis=1), 1)
        se = 1.2533 * sd / np.sqrt(n_diffs)  # standard error of a median
        with np.errstate(invalid="ignore", divide="ignore"):
            keep = np.clip(1.0 - (se / np.abs(med)) ** 2, 0.0, 1.0)
        med = np.where(np.abs(med) > 0, med * keep, med)
        ok = nf >= 3
        sl = slice(s, s + r.size)
        last[sl] = np.where(ok, pad[np.arange(r.size), last_pos], np.nan)
        drift[sl] = np.where(ok, med, np.nan)
        sigma2[sl] = np.where(ok, sd * sd, np.nan)
        n_finite[sl] = nf
        level[sl] = last[sl] + drift[sl] * (length - 1 - last_pos)
    return Fallback(level, drift, sigma2, last, n_finite)


def fill_gaps(y: FloatArray) -> FloatArray:
    """Interpolate missing points linearly and drop leading/trailing NaN (for fitting)."""
    fin = np.isfinite(y)
    if fin.all():
        return y
    idx = np.flatnonzero(fin)
    if idx.size == 0:
        return y[:0]
    lo, hi = idx[0], idx[-1] + 1
    pos = np.arange(lo, hi)
    return np.interp(pos, idx, y[idx])


def sigma2_floor(level: FloatArray) -> FloatArray:
    """Smallest variance we accept: a constant series still gets a defined probability."""
    return (1e-9 * np.maximum(np.abs(level), 1.0)) ** 2


# --- the stateful front door ----------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """Per-series arrays, aligned to the keys of the last batch."""

    level: FloatArray
    trend: FloatArray
    alpha: FloatArray
    beta: FloatArray
    phi: FloatArray
    sigma2: FloatArray
    kind: npt.NDArray[np.int8]
    last_t: FloatArray  # timestamp of the last point the state has consumed
    last_y: FloatArray  # last finite value, for the naive error
    fit_at: FloatArray  # last fit attempt (−inf: never)
    fitted_at: FloatArray  # last successful fit (NaN: never)
    q_abs: FloatArray  # exponentially weighted sums for the rolling quality
    q_naive: FloatArray
    q_w: FloatArray
    d_acc: FloatArray  # exponentially weighted e²/σ² since the last fit (drift detector)
    d_w: FloatArray

    @classmethod
    def empty(cls, n: int) -> _State:
        arrays = {}
        for f in fields(cls):
            dtype = _DTYPES.get(f.name, np.float64)
            arrays[f.name] = np.full(n, _DEFAULTS[f.name]).astype(dtype)
        return cls(**arrays)

    def take(self, idx: IntArray) -> _State:
        """Rows ``idx`` of the old state; ``-1`` gives a new row with default values."""
        known = idx >= 0
        out = {}
        for f in fields(self):
            old = getattr(self, f.name)
            new = np.full(idx.size, _DEFAULTS[f.name]).astype(old.dtype)
            new[known] = old[idx[known]]
            out[f.name] = new
        return _State(**out)


_DEFAULTS: dict[str, float] = {
    "level": np.nan, "trend": 0.0, "alpha": np.nan, "beta": 0.0, "phi": 1.0, "sigma2": np.nan,
    "kind": ModelKind.NONE, "last_t": np.nan, "last_y": np.nan, "fit_at": -np.inf,
    "fitted_at": np.nan, "q_abs": 0.0, "q_naive": 0.0, "q_w": 0.0, "d_acc": 0.0, "d_w": 0.0,
}
_DTYPES: dict[str, type] = {"kind": np.int8}


class Forecaster:
    """Keeps fitted ETS parameters and states for many series; ``update`` once per refresh.

    ``step`` is the series' fixed resolution in seconds and ``horizon_steps`` the horizon in
    steps. Not thread-safe: call ``update`` from the refresh loop only.
    """

    def __init__(
        self,
        *,
        step: float,
        horizon_steps: int,
        levels: Sequence[float] = (80.0, 95.0),
        fit_budget_per_refresh: int = 400,
        fit_seconds: float = 5.0,
        refit_after: float = 3600.0,
        min_fit_points: int = 24,
        min_points: int = 12,
        quality_window: int = 288,
        drift_window: int = 24,
        drift_ratio: float = 3.0,
        min_quality_points: int = 12,
        fitter: Fitter | None = None,
    ) -> None:
        if step <= 0 or horizon_steps < 1:
            raise ValueError("step must be > 0 and horizon_steps >= 1")
        if not all(0 < lv < 100 for lv in levels):
            raise ValueError("levels are percentages strictly between 0 and 100")
        if fit_budget_per_refresh < 0 or fit_seconds < 0 or refit_after < 0:
            raise ValueError("fit budget, fit_seconds and refit_after must be >= 0")
        if min_fit_points < 8 or quality_window < 2 or drift_window < 2 or drift_ratio <= 1:
            raise ValueError("min_fit_points >= 8, windows >= 2 and drift_ratio > 1")
        self.step = float(step)
        self.horizon_steps = int(horizon_steps)
        self.levels = tuple(float(lv) for lv in levels)
        self.fit_budget = int(fit_budget_per_refresh)
        self.fit_seconds = float(fit_seconds)
        self.refit_after = float(refit_after)
        self.min_fit_points = int(min_fit_points)
        self.min_points = max(3, int(min_points))
        self.min_quality_points = int(min_quality_points)
        self.drift_ratio = float(drift_ratio)
        # EWMA weights with pandas' span convention: the window is the effective sample size.
        self._q_decay = 1.0 - 2.0 / (quality_window + 1.0)
        self._d_decay = 1.0 - 2.0 / (drift_window + 1.0)
        # Detector weight after drift_window/2 points: judge drift only on that much evidence.
        self._d_ready = 1.0 - self._d_decay ** (drift_window / 2.0)
        self._q_ready = 1.0 - self._q_decay**min_quality_points
        self._z = ndtri(0.5 + np.asarray(self.levels) / 200.0)
        self._fitter = fitter
        self._index: dict[Hashable, int] = {}
        self._state = _State.empty(0)

    @property
    def fitter(self) -> Fitter:
        if self._fitter is None:
            # statsforecast's ETS alone: a few ms and ~1 MiB (preshift.score.ets_fit)
            from preshift.score.ets_fit import fit_auto_ets

            self._fitter = fit_auto_ets
        return self._fitter

    def update(
        self,
        batch: SeriesBatch,
        limits: npt.ArrayLike | None = None,
        above: npt.ArrayLike | None = None,
        now: float | None = None,
    ) -> ForecastResult:
        """Consume new points, refit within budget, forecast every series of ``batch``.

        ``limits``/``above`` (one per series) give each limit and whether a breach is above it;
        without them ``p_breach`` is NaN. ``now`` (seconds) orders refits; it defaults to the
        newest ``batch.end``. Series missing from ``batch`` are forgotten.
        """
        t0 = time.perf_counter()
        n = _check_batch(batch)
        values = np.asarray(batch.values, dtype=np.float64)
        indptr = np.asarray(batch.indptr, dtype=np.int64)
        end = np.asarray(batch.end, dtype=np.float64)
        if now is None:
            now = float(np.nanmax(end)) if n and np.isfinite(end).any() else 0.0
        st, fresh, start, count = self._align(batch.keys, indptr, end)
        new_points = self._advance(st, values, start, count)
        fresh_rows = np.flatnonzero(fresh)
        self._restart(st, values, indptr, end, fresh_rows)
        t1 = time.perf_counter()
        fitted, failed, backlog = self._fit(st, values, indptr, end, now)
        t2 = time.perf_counter()
        result = self._forecast(st, batch.keys, limits, above, now, n)
        t3 = time.perf_counter()
        stats = RefreshStats(
            series=n, new_points=new_points, fresh=int(fresh_rows.size), fitted=fitted,
            fit_failed=failed, fit_backlog=backlog, seconds_update=t1 - t0,
            seconds_fit=t2 - t1, seconds_forecast=t3 - t2,
        )
        return result._replace(stats=stats)

    def models(self) -> ModelArrays:
        """Parameters and states as of the last ``update``, in its key order."""
        st = self._state
        return ModelArrays(
            keys=list(self._index), kind=st.kind.copy(), level=st.level.copy(),
            trend=st.trend.copy(), alpha=st.alpha.copy(), beta=st.beta.copy(),
            phi=st.phi.copy(), sigma2=st.sigma2.copy(),
        )

    # -- steps of update -------------------------------------------------------------------

    def _align(
        self, keys: Sequence[Hashable], indptr: IntArray, end: FloatArray
    ) -> tuple[_State, BoolArray, IntArray, IntArray]:
        """Reorder the state to ``keys``; find each series' new points and who starts over."""
        index = {k: i for i, k in enumerate(keys)}
        if len(index) != len(keys):
            raise InputError("batch keys must be unique")
        old = self._index
        idx = np.fromiter((old.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        st = self._state.take(idx)
        self._index, self._state = index, st
        length = np.diff(indptr)
        with np.errstate(invalid="ignore"):
            ahead = np.rint((end - st.last_t) / self.step)
        # Start over when the series is new, had too few points, or the state lost track of it
        # (a gap longer than the window, or time going backwards).
        fresh = (idx < 0) | (st.kind == ModelKind.NONE) | ~(ahead >= 0) | (ahead > length)
        count = np.where(fresh, 0, np.nan_to_num(ahead)).astype(np.int64)
        return st, fresh, indptr[1:] - count, count

    def _advance(self, st: _State, values: FloatArray, start: IntArray, count: IntArray) -> int:
        """Run the ETS recursion over each series' new points, all series in lock-step."""
        total = int(count.sum())
        for j in range(int(count.max(initial=0))):
            rows = np.flatnonzero(count > j)
            y = values[start[rows] + j]
            lvl, trd, err = ets_step(
                st.level[rows], st.trend[rows], st.alpha[rows], st.beta[rows], st.phi[rows], y
            )
            st.level[rows], st.trend[rows] = lvl, trd
            naive = y - st.last_y[rows]
            ok = np.isfinite(err) & np.isfinite(naive)
            q, d = self._q_decay, self._d_decay
            okf = ok.astype(np.float64)
            e_abs = np.where(ok, np.abs(err), 0.0)
            # Decay only where a point was scored, so missing points do not age the window.
            keep_q = np.where(ok, q, 1.0)
            st.q_abs[rows] = st.q_abs[rows] * keep_q + (1 - q) * e_abs
            st.q_naive[rows] = st.q_naive[rows] * keep_q + (1 - q) * np.where(ok, np.abs(naive), 0)
            st.q_w[rows] = st.q_w[rows] * keep_q + (1 - q) * okf
            keep_d = np.where(ok, d, 1.0)
            st.d_acc[rows] = st.d_acc[rows] * keep_d + (1 - d) * e_abs**2 / st.sigma2[rows]
            st.d_w[rows] = st.d_w[rows] * keep_d + (1 - d) * okf
            st.last_y[rows] = np.where(np.isfinite(y), y, st.last_y[rows])
            st.last_t[rows] += self.step
        return total

    def _restart(
        self, st: _State, values: FloatArray, indptr: IntArray, end: FloatArray, rows: IntArray
    ) -> None:
        """Give ``rows`` the fallback model fitted on their whole window."""
        if rows.size == 0:
            return
        fb = fallback_params(values, indptr, rows)
        # Until a series has `min_points` points it is no evidence (kind NONE → p_breach NaN)
        # and is re-estimated on every refresh (see fallback_params for the drift's shrinkage).
        ok = fb.n_finite >= self.min_points
        st.kind[rows] = np.where(ok, ModelKind.FALLBACK, ModelKind.NONE)
        st.level[rows] = fb.level
        st.trend[rows] = np.where(ok, fb.drift, 0.0)
        st.alpha[rows] = np.where(ok, 1.0, np.nan)  # α = 1, β = 0, φ = 1: random walk + drift
        st.beta[rows] = 0.0
        st.phi[rows] = 1.0
        st.sigma2[rows] = np.where(ok, np.maximum(fb.sigma2, sigma2_floor(fb.level)), np.nan)
        st.last_t[rows] = end[rows]
        st.last_y[rows] = fb.last_value
        st.fit_at[rows] = -np.inf
        st.fitted_at[rows] = np.nan
        for name in ("q_abs", "q_naive", "q_w", "d_acc", "d_w"):
            getattr(st, name)[rows] = 0.0

    def _drifted(self, st: _State) -> BoolArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = st.d_acc / st.d_w
        return (st.d_w >= self._d_ready) & (ratio > self.drift_ratio)

    def _fit(
        self, st: _State, values: FloatArray, indptr: IntArray, end: FloatArray, now: float
    ) -> tuple[int, int, int]:
        """Refit the most urgent series within the budget; returns (fitted, failed, backlog)."""
        length = np.diff(indptr)
        never = st.fit_at == -np.inf
        drifted = self._drifted(st)
        due = never | drifted | (now - st.fit_at >= self.refit_after)
        cand = np.flatnonzero(due & (st.kind != ModelKind.NONE) & (length >= self.min_fit_points))
        if cand.size == 0 or self.fit_budget == 0:
            return 0, 0, int(cand.size)
        urgency = np.where(never[cand], 0, np.where(drifted[cand], 1, 2))
        order = cand[np.lexsort((st.fit_at[cand], urgency))][: self.fit_budget]
        fitter = self.fitter
        deadline = time.perf_counter() + self.fit_seconds
        fitted = failed = tried = 0
        for r in order:
            if time.perf_counter() >= deadline:
                break
            tried += 1
            st.fit_at[r] = now
            st.d_acc[r] = st.d_w[r] = 0.0  # judge drift afresh after every attempt
            window = values[indptr[r] : indptr[r + 1]]
            y = fill_gaps(window)
            finite = np.flatnonzero(np.isfinite(window))
            trailing = window.size - 1 - finite[-1] if finite.size else 0
            try:
                p = fitter(y) if y.size >= self.min_fit_points else None
            except Exception:  # any fit failure keeps the model the series already has
                p = None
            if p is None or not _usable(p):
                failed += 1
                continue
            st.kind[r] = p.kind
            st.alpha[r], st.beta[r], st.phi[r] = p.alpha, p.beta, p.phi
            st.sigma2[r] = max(p.sigma2, float(sigma2_floor(np.float64(p.level))))
            level, trend = p.level, p.trend
            for _ in range(trailing):  # the fit ends at the last finite point: catch up
                level, trend = level + p.phi * trend, p.phi * trend
            st.level[r], st.trend[r] = level, trend
            st.last_t[r] = end[r]
            st.fitted_at[r] = now
            fitted += 1
        return fitted, failed, int(cand.size) - tried

    def _forecast(
        self,
        st: _State,
        keys: Sequence[Hashable],
        limits: npt.ArrayLike | None,
        above: npt.ArrayLike | None,
        now: float,
        n: int,
    ) -> ForecastResult:
        h = self.horizon_steps
        mean, var = horizon_moments(st.level, st.trend, st.alpha, st.beta, st.phi, st.sigma2, h)
        sd = np.sqrt(var)
        band = sd[:, None] * self._z[None, :]
        if limits is None:
            p = np.full(n, np.nan)
        else:
            lim = np.broadcast_to(np.asarray(limits, dtype=np.float64), (n,))
            abv = np.broadcast_to(np.asarray(True if above is None else above, dtype=bool), (n,))
            p = breach_probability(
                st.level, st.trend, st.alpha, st.beta, st.phi, st.sigma2, lim, abv, h
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            ready = st.q_w >= self._q_ready
            mae = np.where(ready, st.q_abs / st.q_w, np.nan)
            mase = np.where(ready, st.q_abs / st.q_naive, np.nan)
        return ForecastResult(
            keys=keys, levels=self.levels, mean_last=mean, sd_last=sd,
            lower=mean[:, None] - band, upper=mean[:, None] + band, p_breach=p, mae=mae,
            mase=mase, drifted=self._drifted(st), kind=st.kind.copy(),
            fit_age=now - st.fitted_at, stats=_NO_STATS,
        )


_NO_STATS = RefreshStats(0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0)


def _usable(p: EtsParams) -> bool:
    nums = (p.alpha, p.beta, p.phi, p.sigma2, p.level, p.trend)
    return all(np.isfinite(nums)) and p.sigma2 >= 0 and 0 < p.alpha <= 1 + 1e-9


def _check_batch(batch: SeriesBatch) -> int:
    """Cheap shape checks; the values themselves may hold NaN for missing points."""
    n = len(batch.keys)
    indptr = np.asarray(batch.indptr)
    values = np.asarray(batch.values)
    if values.ndim != 1:
        raise InputError("batch.values must be one flat array")
    if indptr.shape != (n + 1,) or np.asarray(batch.end).shape != (n,):
        raise InputError(f"batch has {n} keys: indptr needs {n + 1} entries and end {n}")
    if indptr[0] != 0 or indptr[-1] != values.size or np.any(np.diff(indptr) < 0):
        raise InputError("batch.indptr must rise from 0 to len(values)")
    return n
