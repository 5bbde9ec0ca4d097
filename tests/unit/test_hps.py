"""HPS: the formulas on hand-checked examples, the properties users rely on, and its speed."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from preshift.config import DEFAULT_SIGNALS
from preshift.model import FailureEvent, Footprint, Node, NodeLabels, Replica
from preshift.score.hps import (
    HpsParams,
    SignalWeight,
    Tally,
    decay_weights,
    decayed_exposure,
    failure_tallies,
    learn_correlations,
    score,
)

P = HpsParams()
H = P.horizon
SIGNALS = (
    SignalWeight("temperature", "node", 0.5),
    SignalWeight("node_load", "node", 0.3),
    SignalWeight("memory_pressure", "component", 0.4),
)


def node(name: str, reachable: bool = True) -> Node:
    return Node(name, f"unix:///run/{name}.sock", NodeLabels(name, "r1", "s1"), reachable)


def replica(comp: str, i: int, on: str) -> Replica:
    return Replica(f"{comp}-id{i}", f"{comp}-{i}", comp, on, "running", "img:1")


def fp(nodes: list[Node], reps: list[Replica]) -> Footprint:
    return Footprint(0.0, tuple(nodes), tuple(reps))


def prior_p(a0: float = P.prior_failures, b0: float = P.prior_exposure) -> float:
    return 1 - math.exp(-a0 / b0 * H)


# --- examples -----------------------------------------------------------------------------------


def test_new_component_on_quiet_node_is_not_perfect() -> None:
    s = score(fp([node("n1")], [replica("api", 0, "n1")])).replicas[0]
    assert math.isclose(s.p_history, prior_p()) and math.isclose(s.p_node, prior_p())
    assert s.p_dependency == s.p_environment == 0.0
    assert math.isclose(s.hps, 100 * (1 - prior_p()) ** 2)
    assert 98 < s.hps < 100 and s.top_signal is None and s.top_dependency is None


def test_history_is_the_gamma_poisson_posterior_mean() -> None:
    t = Tally(failures=3.0, exposure=10 * 3600.0)
    s = score(fp([node("n1")], [replica("api", 0, "n1")]), history={"api": t}).replicas[0]
    lam = (P.prior_failures + 3.0) / (P.prior_exposure + 10 * 3600.0)
    assert math.isclose(s.p_history, 1 - math.exp(-lam * H))


def test_decay_and_exposure() -> None:
    h = 3600.0
    assert list(decay_weights([1000.0, 1000.0 - h, 1000.0 - 2 * h], 1000.0, h)) == [1, 0.5, 0.25]
    assert math.isclose(decayed_exposure(0.0, 1e9, h, replicas=3), 3 * h / math.log(2))
    assert math.isclose(decayed_exposure(0.0, 60.0, h), 60.0, rel_tol=1e-2)  # short: ≈ span
    assert decayed_exposure(10.0, 0.0, h) == 0.0


def test_failure_tallies_split_components_and_nodes() -> None:
    now, h = 10_000.0, 3600.0
    evs = [
        FailureEvent(now, "oom", "n1", "api"),
        FailureEvent(now - h, "exit_nonzero", "n1", "api"),
        FailureEvent(now - h, "unreachable", "n2"),
    ]
    params = HpsParams(half_life=h)
    comps, nodes = failure_tallies(evs, now, now - 2 * h, {"api": 2, "db": 1}, ["n1", "n2"], params)
    assert comps["api"].failures == 1.5 and comps["db"].failures == 0.0
    assert math.isclose(comps["api"].exposure, 2 * comps["db"].exposure)
    assert nodes["n2"].failures == 0.5 and nodes["n1"].failures == 0.0


def test_environment_combines_node_and_container_signals() -> None:
    f = fp([node("n1"), node("n2")], [replica("api", 0, "n1"), replica("api", 1, "n2")])
    breach = {("temperature", "n1"): 0.8, ("memory_pressure", "api-1"): 0.5,
              ("node_load", "n2"): float("nan"), ("unknown_signal", "n1"): 1.0}
    sc = score(f, signals=SIGNALS, breach=breach)
    a, b = sc.replicas
    assert math.isclose(a.p_environment, 0.5 * 0.8) and a.top_signal == "temperature"
    assert math.isclose(a.p_environment_node, 0.4)
    assert math.isclose(b.p_environment, 0.4 * 0.5) and b.top_signal == "memory_pressure"
    assert b.p_environment_node == 0.0 and math.isclose(b.top_signal_p, 0.2)
    assert math.isclose(sc.nodes["n1"].p_environment, 0.4)
    assert sc.nodes["n1"].top_signal == "temperature" and sc.nodes["n2"].top_signal is None
    # The carried part moves with the container; the placement part stays with the node.
    assert math.isclose(b.p_carried, 1 - (1 - b.p_history) * (1 - 0.2))
    assert math.isclose(a.p_placement, 1 - 0.6 * (1 - a.p_node))


def test_config_signals_are_accepted() -> None:
    f = fp([node("n1")], [replica("api", 0, "n1")])
    s = score(f, signals=DEFAULT_SIGNALS, breach={("voltage_deviation", "n1"): 1.0}).replicas[0]
    assert math.isclose(s.p_environment, 0.6) and s.top_signal == "voltage_deviation"


def test_unreachable_node_is_high_risk() -> None:
    f = Footprint(0.0, (node("n1", reachable=False), node("n2")),
                  (replica("api", 0, "n1"), replica("api", 1, "ghost")), frozenset({"n2"}))
    sc = score(f)
    assert all(s.p_node >= P.unreachable_p for s in sc.replicas)  # also a node not listed
    assert not sc.nodes["n2"].reachable and sc.nodes["n2"].hps < 5
    assert sc.replicas[0].top_factor == "node"


def test_one_dependency_scales_the_score_by_one_minus_corr_times_p() -> None:
    f = fp([node("n1"), node("n2")], [replica("api", 0, "n1"), replica("db", 0, "n2")])
    breach = {("temperature", "n2"): 0.6}
    base = score(f, signals=SIGNALS, breach=breach)
    dep = score(f, signals=SIGNALS, breach=breach, correlations={"api": {"db": 0.5}})
    p_db = base.p_component["db"]
    assert math.isclose(dep.replicas[0].hps, base.replicas[0].hps * (1 - 0.5 * p_db))
    assert dep.replicas[0].top_dependency == "db" and dep.replicas[1] == base.replicas[1]
    assert dep.components["api"] == dep.replicas[0].hps


def test_dependency_without_replicas_uses_its_history() -> None:
    f = fp([node("n1")], [replica("api", 0, "n1")])
    sc = score(f, correlations={"api": {"ext": 1.0}}, history={"ext": Tally(5.0, 3600.0)})
    assert math.isclose(sc.replicas[0].p_dependency, sc.p_component["ext"])
    assert sc.p_component["ext"] > 0.3


def test_learned_correlations_shrink_toward_the_prior() -> None:
    now, w = 100_000.0, P.cofailure_window
    params = HpsParams(cofailure_half_life=1e12)  # no decay: counts are plain counts
    assert learn_correlations([], {"api": ["db"]}, now, params) == {"api": {"db": 0.5}}
    evs = []
    for i in range(4):  # db fails 4 times, api follows within the window each time
        evs += [FailureEvent(1000.0 * i, "oom", "n1", "db"),
                FailureEvent(1000.0 * i + w / 2, "oom", "n2", "api")]
    evs.append(FailureEvent(now - w / 2, "oom", "n1", "db"))  # too recent to judge: censored
    corr = learn_correlations(evs, {"api": ["db"]}, now, params)
    s = params.dep_prior_strength
    assert math.isclose(corr["api"]["db"], (4 + s * 0.5) / (4 + s), rel_tol=1e-6)
    # Undeclared: learned only with enough evidence, and shrunk toward a small prior.
    undeclared = learn_correlations(evs, {}, now, params)
    assert math.isclose(undeclared["api"]["db"], (4 + s * 0.05) / (4 + s), rel_tol=1e-6)
    assert "db" not in undeclared  # db never failed soon after api
    one = learn_correlations(evs[:2], {}, now, params)
    assert one == {}  # one co-failure is a coincidence
    # A dependent that never failed: the evidence pulls corr down from the prior.
    quiet = learn_correlations(evs, {"web": ["db"]}, now, params)
    assert math.isclose(quiet["web"]["db"], (0 + s * 0.5) / (4 + s), rel_tol=1e-6)


# --- properties -------------------------------------------------------------------------------

COMPS = ("api", "db", "web", "cache")
NODES = ("n1", "n2", "n3")
prob = st.floats(0.0, 1.0)


@st.composite
def inputs(draw: st.DrawFn) -> dict[str, Any]:
    nodes = [node(n, draw(st.booleans()) or n == "n1") for n in NODES]
    reps = [replica(c, i, draw(st.sampled_from(NODES)))
            for c in COMPS for i in range(draw(st.integers(0, 2)))]
    keys = [("temperature", n) for n in NODES] + [("node_load", n) for n in NODES]
    keys += [("memory_pressure", r.name) for r in reps]
    breach = {k: draw(prob) for k in keys if draw(st.booleans())}
    tally = st.builds(Tally, st.floats(0, 20), st.floats(0, 1e6))
    history = {c: draw(tally) for c in COMPS if draw(st.booleans())}
    node_history = {n: draw(tally) for n in NODES if draw(st.booleans())}
    corr = {c: {d: draw(prob) for d in COMPS if d != c and draw(st.booleans())} for c in COMPS}
    return dict(footprint=fp(nodes, reps), signals=SIGNALS, breach=breach, history=history,
                node_history=node_history, correlations=corr)


def all_hps(kw: dict[str, Any]) -> list[float]:
    sc = score(**kw)
    return [s.hps for s in sc.replicas] + [n.hps for n in sc.nodes.values()]


@given(inputs())
def test_bounded(kw: dict[str, Any]) -> None:
    sc = score(**kw)
    for s in sc.replicas:
        assert 0.0 <= s.hps <= 100.0
        for p in (s.p_history, s.p_dependency, s.p_environment, s.p_node, s.p_carried):
            assert 0.0 <= p <= 1.0
    assert all(0.0 <= n.hps <= 100.0 for n in sc.nodes.values())


@given(inputs(), st.sampled_from(COMPS), st.floats(0.1, 50))
def test_more_failures_never_raise_a_score(kw: dict[str, Any], comp: str, extra: float) -> None:
    before = all_hps(kw)
    t = kw["history"].get(comp, Tally())
    worse = {**kw, "history": {**kw["history"], comp: dataclasses.replace(
        t, failures=t.failures + extra)}}
    assert all(b <= a + 1e-9 for a, b in zip(before, all_hps(worse), strict=True))


@given(inputs(), st.sampled_from(NODES), st.floats(0.01, 20))
def test_more_node_failures_never_raise_a_score(kw: dict[str, Any], n: str, extra: float) -> None:
    before = all_hps(kw)
    t = kw["node_history"].get(n, Tally())
    worse = {**kw, "node_history": {**kw["node_history"], n: Tally(t.failures + extra, t.exposure)}}
    assert all(b <= a + 1e-9 for a, b in zip(before, all_hps(worse), strict=True))


@given(inputs(), st.data())
def test_worse_forecast_never_raises_a_score(kw: dict[str, Any], data: st.DataObject) -> None:
    keys = [("temperature", n) for n in NODES]
    keys += [("memory_pressure", r.name) for r in kw["footprint"].replicas]
    key = data.draw(st.sampled_from(keys))
    old = kw["breach"].get(key, 0.0)
    new = data.draw(st.floats(old, 1.0))
    worse = {**kw, "breach": {**kw["breach"], key: new}}
    assert all(b <= a + 1e-9 for a, b in zip(all_hps(kw), all_hps(worse), strict=True))


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_failing_dependency_lowers_dependents_in_proportion(
    c1: float, c2: float, p_breach: float
) -> None:
    f = fp([node("n1"), node("n2")], [replica("api", 0, "n1"), replica("db", 0, "n2")])
    kw: dict[str, Any] = dict(signals=SIGNALS, breach={("temperature", "n2"): p_breach})
    base = score(f, **kw).replicas[0].hps
    lo, hi = sorted((c1, c2))
    h_lo = score(f, correlations={"api": {"db": lo}}, **kw).replicas[0].hps
    h_hi = score(f, correlations={"api": {"db": hi}}, **kw).replicas[0].hps
    assert h_hi <= h_lo + 1e-9 <= base + 2e-9  # monotone in corr
    # The drop is exactly linear in corr for one dependency: base · corr · p_db.
    p_db = score(f, **kw).p_component["db"]
    assert math.isclose(base - h_hi, base * hi * p_db, abs_tol=1e-9)


@given(st.floats(0.0, 0.05), st.floats(0.0, 0.05))
def test_two_small_dependencies_add_up(p1: float, p2: float) -> None:
    """For small p, 1 − Π(1 − corr·p) ≈ Σ corr·p (the product term is second order)."""
    f = fp([node("n1"), node("n2"), node("n3")],
           [replica("api", 0, "n1"), replica("db", 0, "n2"), replica("cache", 0, "n3")])
    kw: dict[str, Any] = dict(
        signals=(SignalWeight("temperature", "node", 1.0),),
        breach={("temperature", "n2"): p1, ("temperature", "n3"): p2},
        correlations={"api": {"db": 0.5, "cache": 0.5}},
    )
    sc = score(f, **kw)
    x, y = 0.5 * sc.p_component["db"], 0.5 * sc.p_component["cache"]
    assert math.isclose(sc.replicas[0].p_dependency, x + y - x * y)
    assert (x + y) - sc.replicas[0].p_dependency <= 0.05 * (x + y)  # within 5 % of linear


@given(inputs(), st.randoms())
def test_deterministic_and_order_free(kw: dict[str, Any], rnd: Any) -> None:
    a, b = score(**kw), score(**kw)
    assert a == b
    f = kw["footprint"]
    reps = list(f.replicas)
    rnd.shuffle(reps)
    shuffled = score(**{**kw, "footprint": dataclasses.replace(f, replicas=tuple(reps))})
    by_id = a.by_container()
    for s in shuffled.replicas:
        t = by_id[s.container_id]
        assert math.isclose(s.hps, t.hps, abs_tol=1e-9) and s.top_signal == t.top_signal


# --- speed ------------------------------------------------------------------------------------


def test_ten_thousand_components_in_well_under_a_second() -> None:
    nodes = [Node(f"n{i}", "unix:///x", NodeLabels(f"h{i}", f"r{i % 10}", f"s{i % 3}"), i % 9 > 0)
             for i in range(100)]
    reps = [replica(f"c{c}", k, f"n{(c * 7 + k * 31) % 100}") for c in range(10_000)
            for k in range(2)]
    breach: dict[tuple[str, str], float] = {}
    for i, s in enumerate(DEFAULT_SIGNALS):
        entities = [n.name for n in nodes] if s.scope == "node" else [r.name for r in reps]
        breach.update({(s.name, e): ((j + i) % 97) / 100 for j, e in enumerate(entities)})
    history = {f"c{c}": Tally(c % 5, 36_000.0) for c in range(10_000)}
    corr = {f"c{c}": {f"c{(c + 1) % 10_000}": 0.5} for c in range(10_000)}
    t0 = time.perf_counter()
    sc = score(fp(nodes, reps), signals=DEFAULT_SIGNALS, breach=breach, history=history,
               correlations=corr)
    took = time.perf_counter() - t0
    assert len(sc.replicas) == 20_000 and len(sc.components) == 10_000
    assert took < 1.0, f"{took:.2f} s"


@given(st.lists(st.tuples(st.floats(0, 5000), st.sampled_from(COMPS)), max_size=40),
       st.dictionaries(st.sampled_from(COMPS), st.lists(st.sampled_from(COMPS), max_size=3)))
def test_learned_correlations_are_probabilities(
    evs: list[tuple[float, str]], declared: dict[str, list[str]]
) -> None:
    events = [FailureEvent(t, "oom", "n1", c) for t, c in evs]
    corr = learn_correlations(events, declared, 6000.0, HpsParams(cofailure_window=600.0))
    for c, deps in corr.items():
        assert c not in deps and all(0.0 < v <= 1.0 for v in deps.values())
        assert set(deps) >= {d for d in declared.get(c, ()) if d != c}
