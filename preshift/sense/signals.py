"""SignalSource: a rolling, incrementally fetched history of every enabled signal.

The first refresh loads `[now - history, now]` with `query_range`; each later refresh asks
Prometheus only for the grid points after the last one fetched for that signal, appends
them and trims what has fallen out of the window. Points are never fetched twice.

Timestamps sit on a grid of multiples of `step` (epoch-aligned), so all series share the
same timestamps and a forecast can batch them. A series is keyed by (signal name, entity):
the entity is the value of `signal.node_label` (scope node) or `signal.component_label`
(scope component). Series without that label are ignored and reported.

The published mapping is rebuilt on each refresh and never mutated afterwards, so a reader
on another thread always sees one consistent refresh. Unchanged series keep their arrays
(no copy); arrays are read-only, and series with the same timestamps share one array.
`refresh()` itself is meant for one thread (the refresh loop). Values are kept as
Prometheus gives them, NaN included (e.g. 0/0 in a ratio).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from ..config import SignalConfig
from ..errors import SourceError
from .ports import MetricsSource, RangeSeries, SeriesKey, SignalStats

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray]  # (timestamps, values), float64, read-only


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_EMPTY = (_frozen(np.empty(0)), _frozen(np.empty(0)))


class SignalHistory:
    """History of `signals` read from `source`, `step` seconds apart, `history` seconds long."""

    def __init__(
        self,
        signals: Sequence[SignalConfig],
        source: MetricsSource,
        step: float,
        history: float,
    ) -> None:
        if step <= 0 or history <= 0:
            raise ValueError("step and history must be greater than 0")
        self.signals = tuple(s for s in signals if s.enabled)
        self.source = source
        self.step = float(step)
        self.history = float(history)
        # last grid point fetched per signal (None: never fetched successfully)
        self._fetched_until: dict[str, float | None] = {s.name: None for s in self.signals}
        self._series: Mapping[SeriesKey, Arrays] = MappingProxyType({})

    # -- SignalSource ---------------------------------------------------------------------

    def refresh(self, now: float | None = None) -> SignalStats:
        """Fetch the new points of every signal; a failing signal does not stop the others."""
        now = time.time() if now is None else now
        # the epsilons keep float noise (10000.3 / 0.1 = 100002.99...) off the grid's edges
        end = math.floor(now / self.step + 1e-9) * self.step  # last grid point up to now
        window_start = math.ceil((now - self.history) / self.step - 1e-9) * self.step
        held_by_signal: dict[str, dict[str, Arrays]] = {}
        for (name, entity), arrays in self._series.items():
            held_by_signal.setdefault(name, {})[entity] = arrays
        new: dict[SeriesKey, Arrays] = {}
        errors: dict[str, str] = {}
        fetched = 0
        grids: dict[tuple[float, float, int], np.ndarray] = {}
        down: str | None = None  # the source did not answer: the rest are not asked
        for sig in self.signals:
            held = held_by_signal.get(sig.name, {})
            last = self._fetched_until[sig.name]
            start = window_start if last is None else max(window_start, last + self.step)
            incoming: dict[str, Arrays] = {}
            if down is not None:
                # A hung Prometheus would cost the timeout once per signal: with 5 signals
                # and 10 s, the snapshot would turn stale only after 50 s.
                errors[sig.name] = f"not queried: {down}"
            elif start <= end + 1e-9:
                try:
                    result = self.source.query_range(sig.query, start, end, self.step)
                except SourceError as exc:
                    errors[sig.name] = str(exc)  # retried from the same point next time
                    if exc.unreachable:
                        down = str(exc)
                except Exception as exc:  # a bug in one adapter must not blind every signal
                    log.exception("signal %s: query_range failed", sig.name)
                    errors[sig.name] = f"{type(exc).__name__}: {exc}"
                else:
                    incoming, problem = _by_entity(sig, result)
                    if problem:
                        errors[sig.name] = problem
                    self._fetched_until[sig.name] = end
            for entity in held.keys() | incoming.keys():
                ts, vals, added = _merge(held.get(entity, _EMPTY), incoming.get(entity),
                                         window_start)
                fetched += added
                if len(ts):  # an entity with no point left in the window is dropped
                    new[(sig.name, entity)] = (_shared(grids, ts) if added else ts, vals)
        self._series = MappingProxyType(new)
        return SignalStats(
            series=len(new),
            points=sum(len(ts) for ts, _ in new.values()),
            fetched=fetched,
            errors=errors,
        )

    def series(self) -> Mapping[SeriesKey, tuple[np.ndarray, np.ndarray]]:
        """Read-only view of (timestamps, values) per key, as of the last refresh."""
        return self._series

    def latest(self) -> dict[SeriesKey, tuple[float, float]]:
        """The newest (timestamp, value) of every held series."""
        return {k: (float(ts[-1]), float(v[-1])) for k, (ts, v) in self._series.items()}


def _shared(grids: dict[tuple[float, float, int], np.ndarray], ts: np.ndarray) -> np.ndarray:
    """One array for every series with the same timestamps: on the common grid most series
    have exactly the same ones, which halves the history's memory."""
    key = (float(ts[0]), float(ts[-1]), len(ts))
    seen = grids.get(key)
    if seen is not None and (seen is ts or np.array_equal(seen, ts)):
        return seen
    grids.setdefault(key, ts)
    return ts


def _merge(
    held: Arrays, incoming: Arrays | None, window_start: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Held points still inside the window, then the strictly newer incoming ones;
    returns (timestamps, values, number of points appended)."""
    ts, vals = held
    first = int(np.searchsorted(ts, window_start - 1e-9, side="left"))
    if first:
        ts, vals = ts[first:], vals[first:]  # views: trimming copies nothing
    if incoming is None or not len(incoming[0]):
        return ts, vals, 0
    its, ivals = incoming
    # never let time go backwards, even if the source misbehaves
    keep = its >= (ts[-1] + 1e-9 if len(ts) else window_start - 1e-9)
    its, ivals = its[keep], ivals[keep]  # boolean indexing copies: the source keeps its arrays
    if not len(its):
        return ts, vals, 0
    if len(ts):
        its, ivals = np.concatenate((ts, its)), np.concatenate((vals, ivals))
    return _frozen(its.astype(np.float64, copy=False)), _frozen(
        ivals.astype(np.float64, copy=False)), int(keep.sum())


def _by_entity(sig: SignalConfig, result: list[RangeSeries]) -> tuple[dict[str, Arrays], str]:
    """Map each result series to its entity; returns (entity -> arrays, problem or "")."""
    label = sig.node_label if sig.scope == "node" else sig.component_label
    groups: dict[str, list[RangeSeries]] = {}
    unlabelled: list[RangeSeries] = []
    for rs in result:
        entity = rs.labels.get(label)
        if entity:
            groups.setdefault(entity, []).append(rs)
        else:
            unlabelled.append(rs)
    problems = []
    if unlabelled:
        example = dict(unlabelled[0].labels)
        problems.append(
            f"{len(unlabelled)} series without the label {label!r} ignored "
            f"(e.g. {example}); add it with a relabel rule or aggregate "
            f"with 'by ({label})' in the query"
        )
    out: dict[str, Arrays] = {}
    duplicated = []
    for entity, group in groups.items():
        if len(group) == 1:
            out[entity] = (group[0].timestamps, group[0].values)
        else:
            duplicated.append(entity)
            out[entity] = _worst(group, sig.direction)
    if duplicated:
        problems.append(
            f"{len(duplicated)} {label}(s) with several series (e.g. {duplicated[0]!r}): "
            f"kept the worst value per timestamp; aggregate with 'by ({label})' in the query"
        )
    return out, "; ".join(problems)


def _worst(group: list[RangeSeries], direction: str) -> Arrays:
    """Several series for one entity: the value closest to the limit at each timestamp."""
    ts = np.concatenate([g.timestamps for g in group])
    vals = np.concatenate([g.values for g in group])
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    uniq, starts = np.unique(ts, return_index=True)
    reduce = np.fmax if direction == "above" else np.fmin  # fmax/fmin skip NaN
    return uniq, reduce.reduceat(vals, starts)
