"""Planner properties (hypothesis): constraints hold, tolerance is monotone, plans are stable."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from preshift.config import ServiceConfig
from preshift.plan import Plan, PlanSettings, SpreadConstraint, discrepancy, make_plan, skew
from preshift.plan.footprint import _healthy

from .test_planner import footprint, node, replica, scores

COMPS = ("api", "db", "web")
risk = st.floats(0.0, 0.7)


@st.composite
def clusters(draw: st.DrawFn, *, roomy: bool = False, all_up: bool = False) -> dict[str, Any]:
    """A random cluster and plan inputs. roomy: no capacity limit and no hard spread, so the
    changes do not compete for room; all_up: every node reachable."""
    n_nodes = draw(st.integers(2, 7))
    nodes = [
        node(f"n{i}", rack=draw(st.sampled_from(["r1", "r2", "r3"])),
             site=draw(st.sampled_from(["s1", "s2"])),
             host=draw(st.sampled_from([None, "h1", "h2"])),
             reachable=all_up or i == 0 or draw(st.integers(0, 5)) > 0)
        for i in range(n_nodes)
    ]
    names = [n.name for n in nodes]
    reps = []
    for c in COMPS:
        for i in range(draw(st.integers(0, 4))):
            state = draw(st.sampled_from(["running"] * 5 + ["exited"]))
            health = draw(st.sampled_from([None, None, None, "unhealthy"]))
            reps.append(replica(c, i, draw(st.sampled_from(names)), state, health))
    fp = footprint(nodes, reps)
    node_risk = {n: draw(risk) for n in names}
    carried = {r.container_id: draw(st.floats(0.0, 0.4)) for r in reps}
    services = {
        c: ServiceConfig(min_available=draw(st.integers(0, 3)), stateful=draw(st.booleans()),
                         criticality=draw(st.floats(0.5, 3)),
                         depends_on=tuple(d for d in COMPS if d < c and draw(st.booleans())))
        for c in COMPS if draw(st.booleans())
    }
    levels = ("site", "rack", "host")
    spread = tuple(
        SpreadConstraint(lv, draw(st.integers(1, 2)), hard=not roomy and draw(st.booleans()))
        for lv in levels if draw(st.booleans())
    )
    capacity = None if roomy else draw(st.one_of(st.none(), st.integers(1, 5)))
    settings = PlanSettings(
        tolerance=draw(st.floats(0.05, 0.6)), spread=spread, capacity=capacity,
        move_stateful=draw(st.booleans()),
    )
    intended = {c: draw(st.integers(0, 4)) for c in COMPS if draw(st.booleans())}
    left = {(c, n) for c in COMPS for n in names if draw(st.integers(0, 9)) == 0}
    return dict(fp=fp, scores=scores(fp, node_risk, carried), settings=settings,
                services=services, intended=intended, recently_left=left)


def run(kw: dict[str, Any], **changes: Any) -> Plan:
    settings = dataclasses.replace(kw["settings"], **changes)
    return make_plan(kw["fp"], kw["scores"], settings, services=kw["services"],
                     intended=kw["intended"], recently_left=kw["recently_left"])


@given(clusters())
def test_constraints_hold_in_the_desired_footprint(kw: dict[str, Any]) -> None:
    fp, settings, services = kw["fp"], kw["settings"], kw["services"]
    p = run(kw)
    nodes = {n.name: n for n in fp.nodes}
    reachable = {n.name for n in fp.nodes if n.reachable}
    for e in p.entries:
        assert e.to_node in reachable and e.to_node != e.from_node
        assert (e.component, e.to_node) not in kw["recently_left"]
        assert e.action != "move" or e.from_node in reachable  # unreachable → new_instance
        if services.get(e.component, ServiceConfig()).stateful:
            assert settings.move_stateful  # stateful untouched unless allowed
    # capacity: never above the limit, nor above what a node already carries
    now = Counter(r.node for r in fp.replicas if r.running)
    after = Counter(n for nodes_ in p.desired.placements.values() for n in nodes_)
    for n in nodes:
        cap = settings.capacity
        if cap is not None:
            assert after[n] <= max(cap, now[n])
    for c, want in p.desired.placements.items():
        cur = p.desired.current.get(c, ())
        # spread: within maxSkew, or no worse than now
        for con in settings.spread:
            if con.hard:
                s_after = skew(Counter(want), nodes, con.level, p.desired.eligible)
                s_now = skew(Counter(cur), nodes, con.level, p.desired.eligible)
                assert s_after <= max(con.max_skew, s_now)
        # never fewer replicas than now, nor fewer on reachable nodes than are healthy now
        assert len(want) >= len(cur)
        healthy_now = sum(_healthy(r, reachable) for r in fp.replicas if r.component == c)
        assert sum(1 for n in want if n in reachable) >= healthy_now


@given(clusters(roomy=True, all_up=True))
def test_min_available_is_reached_when_there_is_room(kw: dict[str, Any]) -> None:
    fp, services = kw["fp"], kw["services"]
    p = run(kw)
    for c, cfg in services.items():
        if not any(r.component == c for r in fp.replicas):
            continue
        if cfg.stateful and not kw["settings"].move_stateful:
            assert not any(e.component == c for e in p.entries)
            continue
        healthy = sum(_healthy(r, {n.name for n in fp.nodes}) for r in fp.replicas
                      if r.component == c)
        added = sum(1 for e in p.entries if e.component == c and e.action != "move")
        free = [n for n in fp.nodes if (c, n.name) not in kw["recently_left"]]
        if free:
            assert healthy + added >= cfg.min_available


def low_high(kw: dict[str, Any], more: float) -> tuple[Plan, Plan]:
    tol = kw["settings"].tolerance
    return run(kw), run(kw, tolerance=min(tol + more, 0.99))


@given(clusters(roomy=True), st.floats(0.0, 0.5))
def test_higher_tolerance_never_plans_more(kw: dict[str, Any], more: float) -> None:
    low, high = low_high(kw, more)
    assert len(high.entries) <= len(low.entries)


@given(clusters(), st.floats(0.0, 0.5))
def test_higher_tolerance_only_touches_replicas_risky_under_the_lower(
    kw: dict[str, Any], more: float
) -> None:
    """With capacity limits and hard spread the changes compete for room, and a scale-up (at
    the lower tolerance) takes room a move (at the higher) leaves, so counts can differ; but a
    replica is only ever touched if it is risky under the lower tolerance too, and once."""
    low, high = low_high(kw, more)
    touched = [e.container_id for e in high.entries if e.container_id]
    assert len(touched) == len(set(touched))
    assert set(touched) <= {e.container_id for e in low.entries if e.container_id} | {
        h.container_id for h, _ in low.held}


@given(clusters())
def test_no_plan_when_every_risk_is_within_tolerance(kw: dict[str, Any]) -> None:
    fp, services = kw["fp"], kw["services"]
    reachable = {n.name for n in fp.nodes if n.reachable}
    for c, cfg in services.items():
        healthy = sum(_healthy(r, reachable) for r in fp.replicas if r.component == c)
        assume(healthy >= cfg.min_available)
    top = max((s.risk for s in kw["scores"].replicas), default=0.0)
    assume(top < 0.99)
    p = run(kw, tolerance=top)
    assert p.entries == () and all(d == 0.0 for d in p.discrepancy.values())


@given(clusters(), st.randoms())
def test_deterministic_and_independent_of_input_order(kw: dict[str, Any], rnd: Any) -> None:
    a, b = run(kw), run(kw)
    assert a == b
    reps = list(kw["fp"].replicas)
    rnd.shuffle(reps)
    shuffled = {**kw, "fp": dataclasses.replace(kw["fp"], replicas=tuple(reps))}
    assert run(shuffled).entries == a.entries


@given(clusters())
def test_discrepancy_is_a_ratio_and_zero_without_changes(kw: dict[str, Any]) -> None:
    p = run(kw)
    assert all(0.0 <= d <= 1.0 for d in p.discrepancy.values())
    assert all(0.0 <= t <= 1.0 for t in p.threshold.values())
    changed = {e.component for e in p.entries}
    for c, d in p.discrepancy.items():
        assert (d > 0) == (c in changed)


nodes_ = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6).map(lambda x: tuple(sorted(x)))


@given(nodes_, nodes_)
def test_discrepancy_bounds(cur: tuple[str, ...], want: tuple[str, ...]) -> None:
    d = discrepancy(cur, want)
    assert 0.0 <= d <= 1.0 and discrepancy(cur, cur) == 0.0
    assert (d == 0.0) == (cur == want)
