"""The desired footprint: where each replica ought to run, and how far reality is from it. Pure.

Rules (docs/hps.md, "The planner"): a replica is acted on only when its risk (1 − HPS/100)
exceeds the tolerance; it moves to a node where its projected risk is at most
(1 − hysteresis) × tolerance and lower by at least `min_gain`; if none exists it is compensated
by a scale-up on the safest node (or, with no room for one, moved to the safest clearly better
node). Targets are reachable, have capacity, were not left by the component recently, and keep
every hard spread constraint within maxSkew (or no worse than now). Replicas are never removed,
so a service never drops below what it has: a move starts the new copy first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ServiceConfig
from ..model import Footprint, Node, Replica
from ..score.hps import ReplicaScore, Scores

Level = Literal["site", "rack", "host"]
Action = Literal["move", "scale_up", "new_instance"]
Why = Literal["risk", "unreachable", "no_safe_node", "safer", "min_available"]
LEVELS: tuple[Level, ...] = ("site", "rack", "host")
HoldWhy = Literal["stateful", "spare", "no_safer_node", "no_target"]


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """Like a Kubernetes topologySpreadConstraint on one node label (host, rack or site).

    skew = max − min of a component's replicas per eligible domain (one with a reachable node).
    Hard: a change may not leave skew above max(max_skew, skew now) (DoNotSchedule). Soft:
    targets that keep skew within max_skew are preferred (ScheduleAnyway).
    """

    level: Level
    max_skew: int = 1
    hard: bool = True


DEFAULT_SPREAD: tuple[SpreadConstraint, ...] = (
    SpreadConstraint("site"), SpreadConstraint("rack"), SpreadConstraint("host"),
)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """What the planner may do. `tolerance` is Config.risk_tolerance."""

    tolerance: float = 0.2
    hysteresis: float = 0.25  # targets must sit at or below (1 − hysteresis) × tolerance
    min_gain: float = 0.05  # ... and be at least this much less risky than where it is now
    spread: tuple[SpreadConstraint, ...] = DEFAULT_SPREAD
    capacity: int | Mapping[str, int] | None = None  # max running replicas per node (all comps)
    move_stateful: bool = False
    discrepancy_threshold: float | None = None  # default: the tolerance

    @property
    def safe_level(self) -> float:
        return (1.0 - self.hysteresis) * self.tolerance

    @classmethod
    def from_config(cls, config: object, **overrides: Any) -> PlanSettings:
        """Defaults with the configured risk tolerance (Config.risk_tolerance)."""
        return cls(tolerance=float(getattr(config, "risk_tolerance", 0.2)), **overrides)


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the current and the desired footprint."""

    action: Action
    component: str
    container_id: str  # "" for a new replica that replaces nothing
    replica: str
    from_node: str | None  # None for a new replica that replaces nothing
    to_node: str
    risk: float  # risk of the replica now (1.0 when it is missing)
    target_risk: float  # projected risk on to_node
    why: Why


@dataclass(frozen=True, slots=True)
class Hold:
    """A replica above the tolerance that the planner leaves where it is, and why."""

    component: str
    container_id: str
    replica: str
    node: str
    risk: float
    why: HoldWhy


@dataclass(frozen=True, slots=True)
class Desired:
    """Current and desired node per counted (running) replica, as sorted multisets."""

    current: Mapping[str, tuple[str, ...]]
    placements: Mapping[str, tuple[str, ...]]
    changes: tuple[Change, ...]  # in decision order (highest priority first)
    held: tuple[Hold, ...]
    eligible: frozenset[str] = field(default_factory=frozenset)  # nodes that define domains


def domain(node: Node, level: Level) -> str:
    return getattr(node.labels, level)


def skew(
    placed: Mapping[str, int], nodes: Mapping[str, Node], level: Level, eligible: Collection[str]
) -> int:
    """max − min replicas per domain, over the domains of the eligible nodes (0 if none)."""
    dom = {n: domain(node, level) for n, node in nodes.items()}
    return _skew(placed, dom, {dom[n] for n in eligible})


def _hist_skew(
    hist: Mapping[int, int], counts: Mapping[str, int] | None = None,
    delta: Mapping[str | None, int] | None = None,
) -> int:
    """max − min of the counts a histogram {count: domains} describes, after adding `delta`
    to the domains' `counts` (domains not in `counts` are not eligible and are ignored)."""
    h = dict(hist)
    for d, dv in (delta or {}).items():
        if dv and counts is not None and d in counts:
            v = counts[d]
            h[v] -= 1
            h[v + dv] = h.get(v + dv, 0) + 1
    keys = [k for k, c in h.items() if c > 0]
    return max(keys) - min(keys) if keys else 0


def _skew(placed: Mapping[str, int], dom: Mapping[str, str], doms: Collection[str]) -> int:
    if not doms:
        return 0
    counts = dict.fromkeys(doms, 0)
    for n, k in placed.items():
        d = dom.get(n)
        if d in counts:
            counts[d] += k
    return max(counts.values()) - min(counts.values())


def discrepancy(current: tuple[str, ...], desired: tuple[str, ...]) -> float:
    """Share of replicas not where the desired footprint puts them, in 0..1.

    1 − |C ∩ D| / max(|C|, |D|) over multisets of nodes: a move counts its replica once, a
    scale-up counts the missing replica against the desired size; 0 when both are empty.
    """
    size = max(len(current), len(desired))
    if size == 0:
        return 0.0
    same = sum((Counter(current) & Counter(desired)).values())
    return 1.0 - same / size


def discrepancy_threshold(
    current: tuple[str, ...], desired: tuple[str, ...], min_available: int, base: float
) -> float:
    """Alert above min(base, slack): slack is the share of replicas the service can lose and
    keep min_available, so misplacing more than that alerts even under a loose tolerance."""
    size = max(len(current), len(desired))
    if size == 0:
        return base
    return min(base, max(size - min_available, 0) / size)


class _State:
    """Mutable working copy of placements and loads while one plan is decided."""

    def __init__(self, fp: Footprint, scores: Scores, settings: PlanSettings) -> None:
        self.settings = settings
        self.nodes = {n.name: n for n in fp.nodes}
        self.reachable = {
            n.name for n in fp.nodes if n.reachable and n.name not in fp.stale_nodes
        }
        self.order = sorted(self.reachable)
        self.node_risk = {
            n: (s.risk if (s := scores.nodes.get(n)) else (0.0 if n in self.reachable else 1.0))
            for n in self.nodes
        }
        # Domains count for spread when they hold a reachable node that is not itself past
        # the tolerance, as Kubernetes ignores tainted nodes under nodeTaintsPolicy: Honor.
        # Spreading onto a node we expect to fail protects nothing, and counting it would
        # forbid evacuating it (3 replicas on 3 hosts could only scale up, never move).
        self.eligible = frozenset(
            n for n in self.reachable if self.node_risk[n] <= settings.tolerance
        )
        self.dom = {lv: {n: domain(node, lv) for n, node in self.nodes.items()} for lv in LEVELS}
        self.doms = {lv: {self.dom[lv][n] for n in self.eligible} for lv in LEVELS}
        # One constraint per level (the last one given wins).
        self.levels = {c.level: c for c in settings.spread}
        cap = settings.capacity
        self.caps = {
            n: (cap.get(n) if isinstance(cap, Mapping) else cap) for n in self.nodes
        }
        self.placed: dict[str, Counter[str]] = {}
        self.load: Counter[str] = Counter()
        for r in fp.replicas:
            if r.running:
                self.placed.setdefault(r.component, Counter())[r.node] += 1
                self.load[r.node] += 1

    def targets(
        self, comp: str, src: str | None, carried: float, left: Collection[tuple[str, str]]
    ) -> list[tuple[tuple[object, ...], str, float, bool]]:
        """Allowed targets for a replica of `comp` leaving `src` (None: an added replica),
        best first: (sort key, node, projected risk, safe)."""
        placed = self.placed.get(comp, Counter())
        per_level = []
        for lv in LEVELS:
            # Replicas per domain; those of the eligible domains as a histogram, so the skew
            # after a ±1 change costs O(distinct counts); the result depends only on the
            # target's domain, hence the cache.
            dmap = self.dom[lv]
            counts: Counter[str | None] = Counter()
            for n, k in placed.items():
                counts[dmap.get(n)] += k
            elig = {d: counts[d] for d in self.doms[lv]}
            hist = Counter(elig.values())
            src_d = dmap.get(src) if src is not None else None
            per_level.append((dmap, counts, elig, hist, _hist_skew(hist), src_d,
                              self.levels.get(lv), {}))
        out = []
        for n in self.order:
            cap = self.caps.get(n)
            if n == src or (comp, n) in left or (cap is not None and self.load[n] >= cap):
                continue
            ok, soft, near = True, 0, []
            for dmap, counts, elig, hist, before, src_d, con, cache in per_level:
                dst_d = dmap[n]
                near.append(counts[dst_d] + (dst_d != src_d or src is None))
                if con is None:
                    continue
                if dst_d not in cache:
                    delta = {dst_d: 1} if src is None else {dst_d: 1, src_d: -1}
                    after = before if src is not None and dst_d == src_d else (
                        _hist_skew(hist, elig, delta))
                    cache[dst_d] = (after <= max(con.max_skew, before) if con.hard else True,
                                    0 if con.hard else max(after - con.max_skew, 0))
                lv_ok, lv_soft = cache[dst_d]
                ok, soft = ok and lv_ok, soft + lv_soft
            if not ok:
                continue
            risk = 1.0 - (1.0 - carried) * (1.0 - self.node_risk[n])
            safe = risk <= self.settings.safe_level
            # Safest first, whatever the tolerance: then the same replica picks the same node
            # under any tolerance, which keeps "higher tolerance, fewer changes" true when
            # targets compete for capacity. Soft spread outranks risk; ties go to spread.
            out.append(((soft, risk, tuple(near), n), n, risk, safe))
        out.sort(key=lambda t: t[0])
        return out

    def best_move(
        self, r: Replica, risk: float, carried: float, left: Collection[tuple[str, str]]
    ) -> tuple[list[tuple[tuple[object, ...], str, float, bool]], tuple[str, float] | None]:
        """All move targets for `r`, and the best safe one that gains at least min_gain."""
        cands = self.targets(r.component, r.node, carried, left)
        gain = self.settings.min_gain
        best = next(((n, t) for _, n, t, safe in cands if safe and risk - t >= gain), None)
        return cands, best

    def apply(self, comp: str, src: str | None, dst: str) -> None:
        placed = self.placed.setdefault(comp, Counter())
        if src is not None:
            placed[src] -= 1
            if placed[src] <= 0:
                del placed[src]
        placed[dst] += 1
        self.load[dst] += 1  # the source is freed only after the move, so keep counting it


_NO_MIN = ServiceConfig(min_available=0)  # undeclared services: no top-ups, no floor


def _healthy(r: Replica, reachable: Collection[str]) -> bool:
    return r.running and r.health != "unhealthy" and r.node in reachable


def desired_footprint(
    footprint: Footprint,
    scores: Scores,
    settings: PlanSettings = PlanSettings(),
    *,
    services: Mapping[str, ServiceConfig] | None = None,
    intended: Mapping[str, int] | None = None,
    recently_left: Collection[tuple[str, str]] = (),
    priority: Mapping[str, float] | None = None,
) -> Desired:
    """Decide the desired footprint.

    `intended` is each service's intended replica count (Swarm spec replicas, or the
    configured count); healthy replicas beyond it and beyond min_available are spares that
    cover risky replicas, which is what stops repeated scale-ups. Without it the healthy count
    is used (no spares), so a replica placement cannot fix is scaled up on every refresh.
    `recently_left` holds (component, node) pairs a move left recently: never targets.
    `priority` orders contested decisions (container id → priority; default: risk).
    """
    services = services or {}
    intended = intended or {}
    st = _State(footprint, scores, settings)
    by_id = scores.by_container()
    current = {c: tuple(sorted(p.elements())) for c, p in st.placed.items()}
    tol = settings.tolerance

    def risk_of(r: Replica) -> tuple[float, float]:
        s: ReplicaScore | None = by_id.get(r.container_id)
        if s is None:  # unscored: its node's risk only
            return st.node_risk.get(r.node, 1.0), 0.0
        return s.risk, s.p_carried

    running = [r for r in footprint.replicas if r.running]
    healthy = Counter(r.component for r in running if _healthy(r, st.reachable))
    held: list[Hold] = []
    todo: list[tuple[Replica, float, float]] = []
    by_comp: dict[str, list[tuple[Replica, float, float]]] = {}
    for r in sorted(running, key=lambda r: r.container_id):
        risk, carried = risk_of(r)
        if risk <= tol:
            continue
        if services.get(r.component, ServiceConfig()).stateful and not settings.move_stateful:
            held.append(Hold(r.component, r.container_id, r.name, r.node, risk, "stateful"))
        else:
            by_comp.setdefault(r.component, []).append((r, risk, carried))
    for comp, risky in sorted(by_comp.items()):
        # Replicas beyond the intended count are spares, but never those min_available needs.
        need = max(intended.get(comp, healthy[comp]), services.get(comp, _NO_MIN).min_available)
        spare = max(healthy[comp] - need, 0)

        def cover_order(item: tuple[Replica, float, float]) -> tuple[object, ...]:
            # Spares first cover the replicas a new placement would help least (they are why
            # the spare exists); gain does not depend on the tolerance, so neither does this.
            r, risk, carried = item
            cands = st.targets(r.component, r.node, carried, recently_left)
            gain = risk - min((c[2] for c in cands), default=risk)
            return (gain, -risk, r.container_id)

        ordered = sorted(risky, key=cover_order) if spare else risky
        for r, risk, _ in ordered[:spare]:
            held.append(Hold(comp, r.container_id, r.name, r.node, risk, "spare"))
        todo.extend(ordered[spare:])

    changes: list[Change] = []

    def decide(r: Replica, risk: float, carried: float) -> None:
        lost = r.node not in st.reachable
        cands, move = st.best_move(r, risk, carried, recently_left)
        action: Action
        why: Why
        if move is not None:
            dst, t_risk = move
            action, why = ("new_instance", "unreachable") if lost else ("move", "risk")
            st.apply(r.component, r.node, dst)
        else:
            # No safe node: add a replica on the safest allowed node (spread checked as an
            # addition) if it is clearly safer than this one; if no node can take one, move
            # to a clearly safer node; replace a lost replica anywhere reachable.
            gain = settings.min_gain
            adds = cands if lost else st.targets(r.component, None, carried, recently_left)
            adds = [c for c in adds if c[1] != r.node]
            pick = next((c for c in adds if lost or c[2] <= risk - gain), None)
            # Without a pick, the safest clearly-better move.
            fallback = next((c for c in cands if c[2] <= risk - gain), None)
            if pick is not None:
                _, dst, t_risk, _ = pick
                action, why = (
                    ("new_instance", "unreachable") if lost else ("scale_up", "no_safe_node")
                )
                st.apply(r.component, r.node if lost else None, dst)
            elif fallback is not None:
                _, dst, t_risk, _ = fallback
                action, why = "move", "safer"
                st.apply(r.component, r.node, dst)
            else:
                why_not: HoldWhy = "no_safer_node" if adds or cands else "no_target"
                held.append(Hold(r.component, r.container_id, r.name, r.node, risk, why_not))
                return
        changes.append(
            Change(action, r.component, r.container_id, r.name, r.node, dst, risk, t_risk, why)
        )
        if action != "move":
            healthy[r.component] += 1

    prio = priority or {}
    todo.sort(key=lambda t: (-prio.get(t[0].container_id, t[1]), t[0].container_id))
    # Most urgent first, and in this order so that how many new replicas a service needs does
    # not depend on the tolerance: replace lost replicas, then top up declared services below
    # min_available, then deal with the risky ones.
    for item in todo:
        if item[0].node not in st.reachable:
            decide(*item)
    comp_risk = {s.component: 1.0 - (1.0 - s.p_history) * (1.0 - s.p_dependency)
                 for s in scores.replicas}
    known = {r.component for r in footprint.replicas}
    for comp in sorted(set(services) & known):
        if services[comp].stateful and not settings.move_stateful:
            continue  # a new copy of a stateful service is no safer than a move
        while healthy[comp] < services[comp].min_available:
            cands = st.targets(comp, None, comp_risk.get(comp, 0.0), recently_left)
            if not cands:
                break
            _, dst, t_risk, _ = cands[0]
            st.apply(comp, None, dst)
            healthy[comp] += 1
            changes.append(
                Change("new_instance", comp, "", "", None, dst, 1.0, t_risk, "min_available")
            )
    for item in todo:
        if item[0].node in st.reachable:
            decide(*item)

    placements = {c: tuple(sorted(p.elements())) for c, p in st.placed.items() if p}
    held.sort(key=lambda h: (h.component, h.container_id))
    return Desired(current, placements, tuple(changes), tuple(held), st.eligible)
