"""SignalHistory: incremental fetch, trimming, isolation of failing signals."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType

import numpy as np
import pytest

from preshift.config import SignalConfig
from preshift.errors import SourceError
from preshift.sense.ports import RangeSeries, Sample
from preshift.sense.signals import SignalHistory


class FakeSource:
    """A MetricsSource on a grid: each query maps to {labels-dict-key: value(t)}."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[dict[str, str], Callable[[float], float]]]] = {}
        self.calls: list[tuple[str, float, float, float]] = []
        self.failing: set[str] = set()

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        raise NotImplementedError

    def is_online(self) -> bool:
        return True

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.calls.append((promql, start, end, step))
        if promql in self.failing:
            raise SourceError("prometheus", f"http://prom: query failed; query: {promql}")
        n = math.floor((end - start) / step + 1e-9) + 1
        ts = start + step * np.arange(n)
        out = []
        for labels, fn in self.series.get(promql, []):
            vals = np.array([fn(t) for t in ts])
            present = ~np.isnan(vals)  # NaN here = the series does not exist at t
            if present.any():
                out.append(RangeSeries(labels=labels, timestamps=ts[present],
                                       values=vals[present]))
        return out

    def calls_for(self, promql: str) -> list[tuple[float, float]]:
        return [(s, e) for q, s, e, _ in self.calls if q == promql]


LOAD = SignalConfig(name="node_load", scope="node", query="node_load1", limit=4)
MEM = SignalConfig(name="memory_pressure", scope="component", query="mem", limit=0.9)


def make(source: FakeSource, *signals: SignalConfig, step: float = 10,
         history: float = 100) -> SignalHistory:
    return SignalHistory(signals or (LOAD,), source, step=step, history=history)


def test_first_refresh_loads_the_window_then_only_new_points() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: t / 10), ({"node": "n2"}, lambda t: 1.0)]
    h = make(src)
    stats = h.refresh(10_005)
    assert src.calls_for("node_load1") == [(9_910, 10_000)]  # grid-aligned window
    assert stats.series == 2 and stats.fetched == 20 and stats.points == 20 and not stats.errors
    ts, vals = h.series()[("node_load", "n1")]
    np.testing.assert_array_equal(ts, np.arange(9_910, 10_001, 10))
    np.testing.assert_array_equal(vals, ts / 10)

    stats = h.refresh(10_032)
    assert src.calls_for("node_load1")[-1] == (10_010, 10_030)  # nothing held is asked again
    assert stats.fetched == 6
    ts, _ = h.series()[("node_load", "n1")]
    np.testing.assert_array_equal(ts, np.arange(9_940, 10_031, 10))  # older ones trimmed
    assert stats.points == 2 * len(ts)


def test_no_new_grid_point_means_no_query_and_no_copy() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0)]
    h = make(src)
    h.refresh(10_000)
    before = h.series()[("node_load", "n1")]
    stats = h.refresh(10_000)  # no new grid point
    assert len(src.calls) == 1 and stats.fetched == 0
    after = h.series()[("node_load", "n1")]
    assert after[0] is before[0] and after[1] is before[1]
    src.series["node_load1"] = []  # no new point: the window moves, the series is trimmed
    h.refresh(10_015)
    trimmed = h.series()[("node_load", "n1")][0]
    assert trimmed[0] == 9_920 and np.shares_memory(trimmed, before[0])  # a view, no copy


def test_failing_signal_is_isolated_and_retried_from_where_it_stopped() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0)]
    src.series["mem"] = [({"name": "web-1"}, lambda t: 0.5)]
    h = make(src, LOAD, MEM)
    h.refresh(10_000)
    src.failing.add("mem")
    stats = h.refresh(10_020)
    assert set(stats.errors) == {"memory_pressure"}
    assert "query failed; query: mem" in stats.errors["memory_pressure"]
    assert len(h.series()[("node_load", "n1")][0]) == 11  # the other signal moved on
    held = h.series()[("memory_pressure", "web-1")][0]
    assert held[-1] == 10_000 and held[0] == 9_920  # kept (and trimmed) while failing
    src.failing.clear()
    stats = h.refresh(10_030)
    assert src.calls_for("mem")[-1] == (10_010, 10_030)  # the gap is filled, not skipped
    assert not stats.errors
    ts, _ = h.series()[("memory_pressure", "web-1")]
    np.testing.assert_array_equal(ts, np.arange(9_930, 10_031, 10))


def test_series_without_the_label_are_ignored_and_reported() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0),
                                ({"instance": "10.0.0.9:9100"}, lambda t: 2.0)]
    stats = make(src).refresh(10_000)
    assert stats.series == 1
    assert "1 series without the label 'node' ignored" in stats.errors["node_load"]
    assert "10.0.0.9:9100" in stats.errors["node_load"]


def test_component_scope_uses_component_label() -> None:
    src = FakeSource()
    src.series["mem"] = [({"name": "web-1", "node": "n1"}, lambda t: 0.5)]
    h = make(src, MEM)
    h.refresh(10_000)
    assert list(h.series()) == [("memory_pressure", "web-1")]


def test_entities_not_seen_for_history_are_dropped() -> None:
    src = FakeSource()
    src.series["node_load1"] = [
        ({"node": "n1"}, lambda t: 1.0),
        ({"node": "gone"}, lambda t: 1.0 if t <= 10_000 else math.nan),
    ]
    h = make(src)
    h.refresh(10_000)
    assert ("node_load", "gone") in h.series()
    h.refresh(10_100)
    assert len(h.series()[("node_load", "gone")][0]) == 1  # its last point is still in window
    h.refresh(10_110)
    assert ("node_load", "gone") not in h.series()
    assert ("node_load", "n1") in h.series()


def test_disabled_signal_is_never_queried() -> None:
    src = FakeSource()
    off = SignalConfig(name="off", scope="node", query="off_query", limit=1, enabled=False)
    h = make(src, LOAD, off)
    h.refresh(10_000)
    assert src.calls_for("off_query") == []


def test_views_are_read_only_and_latest() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: t)]
    h = make(src)
    h.refresh(10_000)
    view = h.series()
    assert isinstance(view, MappingProxyType)
    with pytest.raises(TypeError):
        view[("x", "y")] = (np.empty(0), np.empty(0))  # type: ignore[index]
    _, vals = view[("node_load", "n1")]
    with pytest.raises(ValueError):
        vals[0] = 1.0
    assert h.latest() == {("node_load", "n1"): (10_000.0, 10_000.0)}
    h.refresh(10_010)
    assert len(view[("node_load", "n1")][0]) == 11  # an old view stays as it was


def test_several_series_per_entity_keep_the_worst_value() -> None:
    src = FakeSource()
    src.series["temp"] = [({"node": "n1", "chip": "a"}, lambda t: 50.0),
                          ({"node": "n1", "chip": "b"}, lambda t: 70.0)]
    sig = SignalConfig(name="temperature", scope="node", query="temp", limit=85)
    h = make(src, sig)
    stats = h.refresh(10_000)
    assert set(h.series()[("temperature", "n1")][1]) == {70.0}
    assert "several series" in stats.errors["temperature"]


def test_long_outage_restarts_from_the_window() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0)]
    h = make(src)
    h.refresh(10_000)
    src.failing.add("node_load1")
    h.refresh(10_500)
    src.failing.clear()
    h.refresh(11_000)
    assert src.calls_for("node_load1")[-1] == (10_900, 11_000)  # never more than the window


def test_an_unexpected_error_in_one_signal_is_isolated_too() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0)]
    src.series["mem"] = [({"name": "web-1"}, lambda t: 1.0 / 0.0)]  # ZeroDivisionError
    h = make(src, MEM, LOAD)
    stats = h.refresh(10_000)
    assert stats.errors["memory_pressure"].startswith("ZeroDivisionError")
    assert list(h.series()) == [("node_load", "n1")]


def test_fractional_step_stays_on_the_grid() -> None:
    src = FakeSource()
    src.series["node_load1"] = [({"node": "n1"}, lambda t: 1.0)]
    h = make(src, step=0.1, history=1.0)
    h.refresh(10_000.3)
    start, end = src.calls_for("node_load1")[0]
    assert end == pytest.approx(10_000.3) and start == pytest.approx(9_999.3)
    assert len(h.series()[("node_load", "n1")][0]) == 11


def test_an_unreachable_source_is_asked_once_per_refresh() -> None:
    class Hung(FakeSource):
        def query_range(self, promql: str, start: float, end: float,
                        step: float) -> list[RangeSeries]:
            self.calls.append((promql, start, end, step))
            raise SourceError("prometheus", "http://prom: timed out after 10s",
                              unreachable=True)

    src = Hung()
    other = SignalConfig(name="temp", scope="node", query="temp", limit=80)
    h = make(src, LOAD, MEM, other)
    stats = h.refresh(now=1000)
    assert len(src.calls) == 1  # not once per signal
    assert set(stats.errors) == {"node_load", "memory_pressure", "temp"}
    assert stats.errors["temp"].startswith("not queried: prometheus: http://prom: timed out")
    # a query Prometheus rejects is not "unreachable": the others are still asked
    src2 = FakeSource()
    src2.failing = {"node_load1"}
    make(src2, LOAD, MEM, other).refresh(now=1000)
    assert [c[0] for c in src2.calls] == ["node_load1", "mem", "temp"]
