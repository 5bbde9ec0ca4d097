"""Assessor: forecasts → scores → plan on a small fake world, and the memory it keeps."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import pytest

from preshift.assess import Assessor, _last_finite, lean_batch
from preshift.config import Config, parse_config
from preshift.model import FailureEvent, Footprint, Node, NodeLabels, Replica
from preshift.score.forecast import EtsParams, ModelKind, batch_from_history

NOW = 1_750_000_000.0
STEP = 60.0
NODES = ("n1", "n2", "n3", "n4")
# (container, component, node)
PLACED = (("web-1", "web", "n1"), ("web-2", "web", "n2"), ("api-1", "api", "n1"),
          ("api-2", "api", "n3"))


def config(**overrides: object) -> Config:
    raw: dict[str, object] = {
        "nodes": [{"name": n, "url": f"unix:///x/{n}.sock",
                   "labels": {"host": n, "rack": f"r-{n}", "site": "s1"}} for n in NODES],
        "services": {"web": {"min_available": 1}, "api": {"depends_on": ["web"]}},
        "signals": [
            {"name": "temperature", "scope": "node", "query": "t", "limit": 85, "weight": 0.5},
            {"name": "memory_pressure", "scope": "component", "query": "m", "limit": 0.9,
             "weight": 0.4},
        ],
    }
    raw.update(overrides)
    return parse_config(raw)


def footprint(placed: tuple[tuple[str, str, str], ...] = PLACED, labels: dict | None = None,
              ) -> Footprint:
    nodes = tuple(Node(n, f"unix:///x/{n}.sock", NodeLabels(n, f"r-{n}", "s1"), True)
                  for n in NODES)
    reps = tuple(
        Replica(f"id-{name}", name, comp, node, "running", "img",
                labels=MappingProxyType((labels or {}).get(name, {})))
        for name, comp, node in placed
    )
    return Footprint(NOW, nodes, reps)


def world(now: float = NOW, points: int = 120, hot: str | None = "n1", seed: int = 0,
          placed: tuple[tuple[str, str, str], ...] = PLACED) -> dict:
    """Temperatures at 50 °C with noise; `hot` climbs from 60 to 84 °C over the window."""
    rng = np.random.default_rng(seed)
    ts = now - STEP * np.arange(points)[::-1]
    held = {}
    for n in NODES:
        v = 50 + rng.normal(0, 0.3, points)
        if n == hot:
            v = np.linspace(60, 84, points) + rng.normal(0, 0.2, points)
        held[("temperature", n)] = (ts, v)
    for name, _, _ in placed:
        held[("memory_pressure", name)] = (ts, 0.4 + rng.normal(0, 0.01, points))
    return held


class CountingFitter:
    """A fitter that records its calls and answers a plain level model."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, y: np.ndarray) -> EtsParams:
        self.calls += 1
        return EtsParams(ModelKind.ANN, 0.5, 0.0, 1.0, float(np.var(np.diff(y))), float(y[-1]),
                         0.0)


def test_a_node_heading_for_its_limit_gets_its_replicas_moved() -> None:
    a = Assessor(config(), fit_budget_per_refresh=0)
    res = a.assess(footprint(), world(), [], NOW)
    by_name = {s.replica: s for s in res.running}
    on_hot = [by_name["web-1"], by_name["api-1"]]
    elsewhere = [by_name["web-2"], by_name["api-2"]]
    assert max(s.hps for s in on_hot) < min(s.hps for s in elsewhere) - 20
    assert all(s.top_signal == "temperature" for s in on_hot)
    assert res.scores.nodes["n1"].hps < 60 < res.scores.nodes["n2"].hps
    moved = {(e.replica, e.from_node) for e in res.plan.entries}
    assert moved == {("web-1", "n1"), ("api-1", "n1")}
    assert all(e.to_node != "n1" and e.target_hps > e.hps for e in res.plan.entries)
    for comp in ("web", "api"):
        assert res.plan.discrepancy[comp] > res.plan.threshold[comp]
    assert res.component_hps["web"] == by_name["web-1"].hps  # the lowest replica
    # the forecasts say why
    i = list(res.forecasts.keys).index(("temperature", "n1"))
    assert res.forecasts.p_breach[i] > 0.9 and res.forecasts.mean[i] > 85
    assert res.forecasts.last[i] == pytest.approx(84, abs=1)
    assert set(res.timings) == {"forecast", "score", "plan"}
    assert res.quality["temperature"].series == 4
    assert res.settings.tolerance == 0.2


def test_a_steady_world_plans_nothing() -> None:
    a = Assessor(config(), fit_budget_per_refresh=0)
    res = a.assess(footprint(), world(hot=None), [], NOW)
    assert res.plan.entries == ()
    assert all(v == 0 for v in res.plan.discrepancy.values())
    assert all(s.hps > 95 for s in res.running)
    assert np.nanmax(res.forecasts.p_breach) < 1e-3


def test_the_forecaster_is_kept_and_fits_stay_within_budget() -> None:
    fitter = CountingFitter()
    a = Assessor(config(), fitter=fitter, fit_budget_per_refresh=3, fit_seconds=10)
    first = a.assess(footprint(), world(hot=None), [], NOW)
    assert first.forecast_stats.fitted == 3 and first.fits == {"ok": 3, "failed": 0}
    second = a.assess(footprint(), world(NOW + STEP, hot=None), [], NOW + STEP)
    stats = second.forecast_stats
    assert stats.fresh == 0 and stats.new_points == stats.series == 8  # one new point each
    assert stats.fitted == 3 and fitter.calls == 6  # never everything at once
    assert stats.fit_backlog == 2
    assert second.quality["temperature"].fitted + second.quality["memory_pressure"].fitted == 6


def test_failure_events_count_once_and_leave_with_the_window() -> None:
    cfg = config(prometheus={"history": "1h", "step": "1m"})
    a = Assessor(cfg, fit_budget_per_refresh=0)
    crash = FailureEvent(NOW - 600, "exit_nonzero", "n2", "web", "web-2")
    old = FailureEvent(NOW - 7200, "oom", "n2", "web", "web-2")
    assert a.add_history([old, crash], since=NOW - 3600) == 2
    calm = Assessor(cfg, fit_budget_per_refresh=0).assess(footprint(), world(hot=None), [], NOW)
    res = a.assess(footprint(), world(hot=None), [crash, crash], NOW)
    assert res.failure_events == 1  # the duplicate counts once, the old one left the window
    hist = {s.replica: s.p_history for s in res.running}
    assert hist["web-2"] > {s.replica: s.p_history for s in calm.running}["web-2"]
    assert hist["web-1"] == hist["web-2"]  # the history factor belongs to the component
    later = a.assess(footprint(), world(NOW + 3600, hot=None), [], NOW + 3600)
    assert later.failure_events == 0


def test_a_component_is_not_sent_back_to_a_node_a_move_just_left() -> None:
    before = (("api-1", "api", "n1"), ("api-2", "api", "n2"))
    moved = (("api-1", "api", "n1"), ("api-2", "api", "n4"))
    later = NOW + 3 * 3600  # later data: the forecasts start over on the new window

    def targets(a: Assessor, now: float) -> set[str]:
        res = a.assess(footprint(moved), world(later, hot="n4", placed=moved), [], now)
        assert {s.replica: s.hps for s in res.running}["api-2"] < 80  # n4 is heating up
        return {e.to_node for e in res.plan.entries if e.replica == "api-2"}

    # Without memory, api-2 leaving the hot n4 would go to n2 (n2 and n3 tie; by name) …
    assert targets(Assessor(config(), fit_budget_per_refresh=0), later) == {"n2"}
    # … but the plan has just moved it off n2 (n2 was hot then): not straight back.
    a = Assessor(config(), fit_budget_per_refresh=0, left_cooldown=4 * 3600)
    first = a.assess(footprint(before), world(hot="n2", placed=before), [], NOW)
    assert [(e.replica, e.from_node) for e in first.plan.entries] == [("api-2", "n2")]
    assert targets(a, later) == {"n3"}
    assert a.assess(footprint(moved), world(later, hot="n4", placed=moved), [],
                    later).recently_left == {("api", "n2")}
    assert targets(a, later + 4 * 3600) == {"n2"}  # the cooldown is over


def test_a_stop_no_plan_asked_for_leaves_no_memory() -> None:
    a = Assessor(config(), fit_budget_per_refresh=0)
    a.assess(footprint(), world(hot=None), [], NOW)
    gone = tuple(p for p in PLACED if p[0] != "api-2")  # removed, or crashed
    res = a.assess(footprint(gone), world(NOW + STEP, hot=None, placed=gone), [], NOW + STEP)
    assert res.recently_left == frozenset()


def test_replicas_the_executor_added_are_spares_not_intended() -> None:
    placed = (*PLACED, ("web-3", "web", "n4"))
    cfg = config(services={"web": {"min_available": 1}})
    a = Assessor(cfg, fit_budget_per_refresh=0)
    plain = a.assess(footprint(placed), world(placed=placed), [], NOW)
    assert any(e.replica == "web-1" for e in plain.plan.entries)
    spare = {"web-3": {"preshift.scale-up": "true"}}
    b = Assessor(cfg, fit_budget_per_refresh=0)
    res = b.assess(footprint(placed, labels=spare), world(placed=placed), [], NOW)
    held = {h.replica: h.why for h, _ in res.plan.held}
    assert held.get("web-1") == "spare"  # covered by the scale-up: no second one
    assert not any(e.replica == "web-1" for e in res.plan.entries)


def test_series_of_unknown_signals_have_no_breach_probability() -> None:
    a = Assessor(config(), fit_budget_per_refresh=0)
    held = world(hot=None)
    held[("retired_signal", "n1")] = held[("temperature", "n1")]
    res = a.assess(footprint(), held, [], NOW)
    i = list(res.forecasts.keys).index(("retired_signal", "n1"))
    assert math.isnan(res.forecasts.p_breach[i]) and "retired_signal" not in res.quality


def test_lean_batch_is_batch_from_history() -> None:
    rng = np.random.default_rng(1)
    held = {}
    for i in range(60):
        n = int(rng.integers(0, 20))
        ts = np.sort(rng.choice(np.arange(100), n, replace=False)).astype(float) * STEP + NOW
        held[("s", str(i))] = (ts, rng.normal(size=n))
    for h in (held, {k: v for k, v in held.items() if len(v[0]) in (0, 1)}, {}):
        a, b = lean_batch(h, STEP), batch_from_history(h, STEP)
        assert list(a.keys) == list(b.keys)
        assert np.array_equal(a.indptr, b.indptr)
        assert np.array_equal(a.values, b.values, equal_nan=True)
        assert np.array_equal(a.end, b.end, equal_nan=True)


def test_last_finite_value_of_each_series() -> None:
    values = np.array([1, 2, np.nan, 3, np.nan, np.nan, np.nan, 5.0])
    indptr = np.array([0, 3, 3, 6, 7, 8])
    assert np.array_equal(_last_finite(values, indptr), [2, np.nan, 3, np.nan, 5],
                          equal_nan=True)
