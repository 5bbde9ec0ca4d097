"""One look ahead per refresh: forecasts → breach probabilities → HPS → desired footprint → plan.

`Assessor` is the only stateful part of the core's maths: it keeps the `Forecaster` (fitted
models and states, refitted within a per-refresh budget, never all at once), the failure events
of the history window (rebuilt from Prometheus after a restart, then fed from the ledger), and
the planner's memory of (component, node) pairs recently left (never move straight back).
`assess()` is otherwise a pure pipeline: no I/O, no clock (the caller passes `now`), no
framework. Docs: docs/assess.md.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from .config import Config, SignalConfig
from .model import SCALE_UP_LABEL, FailureEvent, Footprint
from .plan import Plan, PlanSettings, make_plan
from .score.forecast import Fitter, Forecaster, ModelKind, RefreshStats, SeriesBatch
from .score.hps import (
    HpsParams,
    ReplicaScore,
    Scores,
    failure_tallies,
    learn_correlations,
    score,
)

FloatArray = npt.NDArray[np.float64]
SeriesKey = tuple[str, str]  # (signal, node or container name), as in sense.ports
#: Sub-stages of an assessment, timed separately.
PARTS: tuple[str, ...] = ("forecast", "score", "plan")

_EventId = tuple[float, str, str, str, str]


def _event_id(ev: FailureEvent) -> _EventId:
    return (ev.ts, ev.component, ev.node, ev.reason, ev.replica)


@dataclass(frozen=True, slots=True)
class Forecasts:
    """Per-series arrays in the order of `keys` (one entry per (signal, entity))."""

    keys: Sequence[SeriesKey]
    horizon: float  # seconds
    levels: tuple[float, ...]  # band levels, percent
    last: FloatArray  # last finite value held
    mean: FloatArray  # forecast mean at the end of the horizon
    lower: FloatArray  # (n, len(levels)) band edges at the end of the horizon
    upper: FloatArray
    p_breach: FloatArray  # P(crossing the signal's limit within the horizon); NaN: no forecast
    mae: FloatArray  # rolling one-step MAE; NaN until enough points were scored
    mase: FloatArray  # that MAE / the naive forecast's (< 1: better than "same as last")
    kind: npt.NDArray[np.int8]  # ModelKind


@dataclass(frozen=True, slots=True)
class SignalQuality:
    """How well one signal's series are forecast."""

    series: int
    fitted: int  # series with a fitted ETS model (the others use the fallback, or nothing)
    mase: float  # median over the series scored so far; NaN when none
    mae: float


@dataclass(frozen=True, slots=True)
class Assessment:
    """Everything one assessment decided, from one footprint and one signal history."""

    taken_at: float
    footprint: Footprint  # the footprint it was computed from
    signals: tuple[SignalConfig, ...]  # the enabled signals (scope, limit, direction)
    scores: Scores
    running: tuple[ReplicaScore, ...]  # scores of the running replicas (what is exported)
    component_hps: Mapping[str, float]  # lowest HPS of each component's running replicas
    plan: Plan
    forecasts: Forecasts
    quality: Mapping[str, SignalQuality]  # per enabled signal
    forecast_stats: RefreshStats
    timings: Mapping[str, float]  # seconds per PARTS entry
    failure_events: int  # events in the history window the score used
    recently_left: frozenset[tuple[str, str]]  # (component, node) pairs excluded as targets
    settings: PlanSettings  # the planner's settings (risk tolerance, hysteresis, ...)
    fits: Mapping[str, int]  # ETS fits attempted since the start: "ok" and "failed"


class Assessor:
    """Keeps the forecaster and the planner's memory across refreshes; `assess` once each.

    Not thread-safe: call it from the refresh loop only. `fit_seconds` defaults to 30 % of the
    refresh interval (at most 5 s), so fits never crowd out the rest of a refresh.
    """

    def __init__(
        self,
        config: Config,
        *,
        levels: Sequence[float] = (80.0, 95.0),
        fit_budget_per_refresh: int = 400,
        fit_seconds: float | None = None,
        refit_after: float = 3600.0,
        fitter: Fitter | None = None,
        hps_params: HpsParams | None = None,
        plan_settings: PlanSettings | None = None,
        left_cooldown: float | None = None,
        event_window: float | None = None,
    ) -> None:
        self.config = config
        step = config.prometheus.step
        self.horizon = config.horizon
        self.forecaster = Forecaster(
            step=step,
            horizon_steps=max(1, math.ceil(config.horizon / step - 1e-9)),
            levels=levels,
            fit_budget_per_refresh=fit_budget_per_refresh,
            fit_seconds=min(5.0, 0.3 * config.refresh_interval)
            if fit_seconds is None else fit_seconds,
            refit_after=refit_after,
            fitter=fitter,
        )
        self.signals = tuple(s for s in config.signals if s.enabled)
        self.params = hps_params or HpsParams.from_config(config)
        self.settings = plan_settings or PlanSettings.from_config(config)
        self.left_cooldown = config.horizon if left_cooldown is None else left_cooldown
        self.event_window = config.prometheus.history if event_window is None else event_window
        self.scale_up_label = f"{config.docker.label_prefix}.{SCALE_UP_LABEL}"
        self._declared = {c: s.depends_on for c, s in config.services.items() if s.depends_on}
        self._events: dict[_EventId, FailureEvent] = {}
        self._since: float | None = None  # start of the observed failure history
        self._left: dict[tuple[str, str], float] = {}  # pair -> when the component left it
        self._running: Counter[tuple[str, str]] | None = None  # as of the last assessment
        self._moving: set[tuple[str, str]] = set()  # (component, from node) the last plan moves
        self._fits: Counter[str] = Counter(ok=0, failed=0)

    def add_history(self, events: Iterable[FailureEvent], since: float) -> int:
        """Failure events known from before this process (e.g. rebuilt from Prometheus),
        observed since `since`. Returns how many were new."""
        self._since = since if self._since is None else min(self._since, since)
        return self._merge(events)

    def assess(
        self,
        footprint: Footprint,
        series: Mapping[SeriesKey, tuple[npt.ArrayLike, npt.ArrayLike]],
        failure_events: Iterable[FailureEvent],
        now: float,
        *,
        intended: Mapping[str, int] | None = None,
    ) -> Assessment:
        """Forecast every series, score every replica and node, plan. `failure_events` may
        repeat earlier ones (e.g. the ledger's recent events every refresh): they count once.
        `intended`: replicas per component as the orchestrator wants them (Swarm's spec
        replicas); a component it leaves out counts its running non-spare replicas."""
        t0 = time.perf_counter()
        forecasts, stats, breach, quality = self._forecast(series, now)
        t1 = time.perf_counter()
        self._fits.update(ok=stats.fitted, failed=stats.fit_failed)
        if self._since is None:
            self._since = now
        self._merge(failure_events)
        events = self._window(now)
        running = Counter(r.component for r in footprint.replicas if r.running)
        nodes = [n.name for n in footprint.nodes]
        history, node_history = failure_tallies(
            events, now, max(self._since, now - self.event_window), running, nodes, self.params
        )
        correlations = learn_correlations(events, self._declared, now, self.params)
        scores = score(
            footprint, signals=self.signals, breach=breach, history=history,
            node_history=node_history, correlations=correlations, params=self.params,
        )
        t2 = time.perf_counter()
        left = self._recently_left(footprint, now)
        plan = make_plan(
            footprint, scores, self.settings, services=self.config.services,
            intended={**self._intended(footprint), **(intended or {})}, recently_left=left,
            correlations=correlations,
        )
        t3 = time.perf_counter()
        self._moving = {(e.component, e.from_node) for e in plan.entries
                        if e.action == "move" and e.from_node is not None}
        ids = {r.container_id for r in footprint.replicas if r.running}
        live = tuple(s for s in scores.replicas if s.container_id in ids)
        lowest: dict[str, float] = {}
        for s in live:
            lowest[s.component] = min(s.hps, lowest.get(s.component, math.inf))
        return Assessment(
            taken_at=now, footprint=footprint, signals=self.signals, scores=scores, running=live,
            component_hps=MappingProxyType(lowest), plan=plan,
            forecasts=forecasts, quality=MappingProxyType(quality), forecast_stats=stats,
            timings=MappingProxyType({"forecast": t1 - t0, "score": t2 - t1, "plan": t3 - t2}),
            failure_events=len(events), recently_left=left, settings=self.settings,
            fits=MappingProxyType(dict(self._fits)),
        )

    # -- steps --------------------------------------------------------------------------------

    def _forecast(
        self, series: Mapping[SeriesKey, tuple[npt.ArrayLike, npt.ArrayLike]], now: float
    ) -> tuple[Forecasts, RefreshStats, dict[SeriesKey, float], dict[str, SignalQuality]]:
        batch = lean_batch(series, self.forecaster.step)
        keys: list[SeriesKey] = list(batch.keys)  # type: ignore[arg-type]
        names = [s.name for s in self.signals]
        col = {name: i for i, name in enumerate(names)}
        sig = np.fromiter((col.get(k[0], -1) for k in keys), dtype=np.int64, count=len(keys))
        # Index -1 (a signal no longer configured) picks the appended NaN limit: p_breach NaN.
        limits = np.append([s.limit for s in self.signals], np.nan)[sig]
        above = np.append([s.direction == "above" for s in self.signals], True)[sig]
        res = self.forecaster.update(batch, limits=limits, above=above, now=now)
        forecasts = Forecasts(
            keys=keys, horizon=self.horizon, levels=res.levels,
            last=_last_finite(batch.values, batch.indptr), mean=res.mean_last,
            lower=res.lower, upper=res.upper, p_breach=res.p_breach, mae=res.mae,
            mase=res.mase, kind=res.kind,
        )
        breach = dict(zip(keys, res.p_breach.tolist(), strict=True))
        quality = {}
        for i, name in enumerate(names):
            mask = sig == i
            quality[name] = SignalQuality(
                series=int(mask.sum()),
                fitted=int((res.kind[mask] >= ModelKind.ANN).sum()),
                mase=_nanmedian(res.mase[mask]),
                mae=_nanmedian(res.mae[mask]),
            )
        return forecasts, res.stats, breach, quality

    def _merge(self, events: Iterable[FailureEvent]) -> int:
        added = 0
        for ev in events:
            eid = _event_id(ev)
            if eid not in self._events:
                self._events[eid] = ev
                added += 1
        return added

    def _window(self, now: float) -> list[FailureEvent]:
        """The events of the history window, oldest first; older ones are forgotten."""
        start = now - self.event_window
        old = [eid for eid, ev in self._events.items() if ev.ts < start]
        for eid in old:
            del self._events[eid]
        return sorted(self._events.values(), key=lambda e: e.ts)

    def _recently_left(self, footprint: Footprint, now: float) -> frozenset[tuple[str, str]]:
        """(component, node) pairs a planned move left within the cooldown: the last plan
        moved a replica of the component off the node, and the node (still answering) now
        runs fewer of them. The planner must not send the component straight back. A stop
        that no plan asked for (a crash, a removal) is not a move and leaves no memory."""
        running = footprint.running_counts()
        if self._running is not None and self._moving:
            fresh = {n.name for n in footprint.nodes if n.reachable} - footprint.stale_nodes
            for pair in self._moving:
                if pair[1] in fresh and running.get(pair, 0) < self._running.get(pair, 0):
                    self._left[pair] = now
        self._running = running
        for pair in [p for p, t in self._left.items() if now - t >= self.left_cooldown]:
            del self._left[pair]
        return frozenset(self._left)

    def _intended(self, footprint: Footprint) -> dict[str, int]:
        """Running replicas per component, minus the executor's scale-ups (spares)."""
        return dict(Counter(
            r.component for r in footprint.replicas
            if r.running and r.labels.get(self.scale_up_label) != "true"
        ))


def lean_batch(
    history: Mapping[SeriesKey, tuple[npt.ArrayLike, npt.ArrayLike]], step: float
) -> SeriesBatch:
    """The same batch as `score.forecast.batch_from_history`, with one output-sized array of
    extra memory instead of about six (20,000 series × 288 points: 46 MB, not ~280 MB).

    A series without gaps (the usual case: its length matches its grid span) is copied as
    is; only series with missing points are scattered onto their grid.
    """
    keys = list(history)
    n = len(keys)
    pairs = [history[k] for k in keys]
    end = np.full(n, np.nan)
    length = np.zeros(n, dtype=np.int64)
    gapped: list[int] = []
    for i, (ts, vals) in enumerate(pairs):
        size = len(vals)
        if size:
            first, last = float(ts[0]), float(ts[-1])  # type: ignore[index]
            end[i] = last
            length[i] = round((last - first) / step) + 1
            if length[i] != size:
                gapped.append(i)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=indptr[1:])
    if not gapped:
        values = np.empty(int(indptr[-1]))
        # In slices of 1,000 series: one concatenate of 20,000 holds the GIL for ~80 ms,
        # which a scrape served meanwhile would wait out.
        for i in range(0, n, 1000):
            part = [np.asarray(v, dtype=np.float64) for _, v in pairs[i:i + 1000]]
            np.concatenate(part, out=values[indptr[i]:indptr[min(i + 1000, n)]])
        return SeriesBatch(keys, values, indptr, end)
    values = np.full(int(indptr[-1]), np.nan)
    for i, (ts, vals) in enumerate(pairs):
        a, b = indptr[i], indptr[i + 1]
        if b - a == len(vals):  # type: ignore[arg-type]
            values[a:b] = vals
        elif b > a:
            t = np.asarray(ts, dtype=np.float64)
            values[a + np.rint((t - t[0]) / step).astype(np.int64)] = vals
    return SeriesBatch(keys, values, indptr, end)


def _last_finite(values: FloatArray, indptr: npt.NDArray[np.int64]) -> FloatArray:
    """The last finite value of each series of a batch (NaN when it has none).

    Usually the last point itself; only series ending in missing points are searched, so no
    temporary as large as `values` is made.
    """
    starts, ends = indptr[:-1], indptr[1:]
    out = np.full(starts.size, np.nan)
    nonempty = np.flatnonzero(ends > starts)
    out[nonempty] = values[ends[nonempty] - 1]
    for i in nonempty[~np.isfinite(out[nonempty])].tolist():
        window = values[starts[i]:ends[i]]
        finite = np.flatnonzero(np.isfinite(window))
        if finite.size:
            out[i] = window[finite[-1]]
    return out


def _nanmedian(a: FloatArray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


__all__ = [
    "PARTS",
    "SCALE_UP_LABEL",
    "Assessment",
    "Assessor",
    "Forecasts",
    "SignalQuality",
]
