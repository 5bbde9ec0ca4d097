"""Health Projection Score: 100 × P(a replica keeps working over the horizon H). Pure maths.

Four hazards, treated as independent, each kept as a ratio so a low score explains itself::

    HPS = 100 · (1 − p_history) · (1 − p_dependency) · (1 − p_environment) · (1 − p_node)

- history: decayed Gamma-Poisson rate of the component's own failures,
  ``λ̂ = (a0 + Σ 2^(−age/h)) / (b0 + decayed replica-seconds)``, ``p = 1 − exp(−λ̂·H)``.
- dependency: ``1 − Π_d (1 − corr_d · p_d)``; ``p_d`` is the dependency's own projected failure
  probability (history, environment and node, *not* its dependencies: one level, so there is
  no cycle to resolve), averaged over its replicas; ``corr_d`` comes from `learn_correlations`.
- environment: ``1 − Π_s (1 − w_s · p_s)`` over node-scoped signals of the replica's node and
  component-scoped signals of its container.
- node: the node's decayed failure rate (same estimator), plus ``unreachable_p`` when the node is
  unreachable now.

Formulas, defaults and a worked example: docs/hps.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ..model import FailureEvent, Footprint

FloatArray = npt.NDArray[np.float64]
SeriesKey = tuple[str, str]  # (signal, node name or container name), as in sense.ports

FACTORS: tuple[str, ...] = ("history", "dependency", "environment", "node")


@dataclass(frozen=True, slots=True)
class HpsParams:
    """Settings of the score. Rates are per second; times in seconds."""

    horizon: float = 1800.0
    half_life: float = 3 * 3600.0  # weight of a failure halves every half_life
    prior_failures: float = 0.05  # a0: pseudo-failures, so a new component is not "perfect"
    prior_exposure: float = 3 * 3600.0  # b0: pseudo replica-seconds behind a0
    node_prior_failures: float = 0.05
    node_prior_exposure: float = 3 * 3600.0
    unreachable_p: float = 0.95  # p_node floor while the node's engine does not answer
    cofailure_window: float = 300.0  # a dependent failing this soon after its dependency counts
    cofailure_half_life: float = 7 * 86400.0  # dependencies change slowly: remember longer
    dep_prior_declared: float = 0.5  # prior mean of corr for a declared dependency
    dep_prior_undeclared: float = 0.05  # prior mean for a dependency learned from history only
    dep_prior_strength: float = 4.0  # pseudo-observations behind the prior mean
    dep_min_evidence: float = 2.0  # decayed co-failures before an undeclared pair counts

    @classmethod
    def from_config(cls, config: object, **overrides: float) -> HpsParams:
        """Defaults with the configured horizon (Config.horizon)."""
        return cls(horizon=float(getattr(config, "horizon", 1800.0)), **overrides)


@dataclass(frozen=True, slots=True)
class SignalWeight:
    """How strongly a breach of one signal leads to failure (SignalConfig has these fields)."""

    name: str
    scope: Literal["node", "component"]
    weight: float


@dataclass(frozen=True, slots=True)
class Tally:
    """Decayed evidence for a Gamma-Poisson rate: failures and exposure (replica-seconds)."""

    failures: float = 0.0
    exposure: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaScore:
    """The score of one replica and the four factors behind it (ratios 0..1)."""

    container_id: str
    replica: str
    component: str
    node: str
    hps: float
    p_history: float
    p_dependency: float
    p_environment: float
    p_node: float
    p_environment_node: float  # the node-scoped part of p_environment (stays with the node)
    top_signal: str | None  # the signal with the largest w·p, None when all are 0
    top_signal_p: float  # its w·p
    top_dependency: str | None  # the dependency with the largest corr·p_d

    @property
    def risk(self) -> float:
        """Projected failure probability, 1 − HPS/100."""
        return 1.0 - self.hps / 100.0

    @property
    def p_placement(self) -> float:
        """The part of the risk that belongs to the node (changes if the replica moves)."""
        return 1.0 - (1.0 - self.p_environment_node) * (1.0 - self.p_node)

    @property
    def p_carried(self) -> float:
        """The part of the risk the replica takes with it to any node."""
        keep_env = (1.0 - self.p_environment) / max(1.0 - self.p_environment_node, 1e-12)
        return 1.0 - (1.0 - self.p_history) * (1.0 - self.p_dependency) * min(keep_env, 1.0)

    @property
    def top_factor(self) -> str:
        ps = (self.p_history, self.p_dependency, self.p_environment, self.p_node)
        return FACTORS[max(range(4), key=lambda i: ps[i])]


@dataclass(frozen=True, slots=True)
class NodeScore:
    """A node's own score: 100 · (1 − p_environment) · (1 − p_node), node-scoped signals only."""

    node: str
    hps: float
    p_environment: float
    p_node: float
    reachable: bool
    top_signal: str | None
    top_signal_p: float

    @property
    def risk(self) -> float:
        return 1.0 - self.hps / 100.0


@dataclass(frozen=True, slots=True)
class Scores:
    """Every replica's and node's score from one refresh."""

    replicas: tuple[ReplicaScore, ...]  # in the footprint's replica order
    nodes: Mapping[str, NodeScore]
    components: Mapping[str, float]  # lowest replica HPS per component
    p_component: Mapping[str, float]  # own projected failure probability (the p_d of dependents)

    def by_container(self) -> dict[str, ReplicaScore]:
        return {s.container_id: s for s in self.replicas}


# --- evidence ---------------------------------------------------------------------------------


def decay_weights(ts: npt.ArrayLike, now: float, half_life: float) -> FloatArray:
    """2^(−age/half_life) per timestamp; events from the future weigh 1."""
    age = np.maximum(now - np.asarray(ts, dtype=np.float64), 0.0)
    return np.exp2(-age / half_life)


def decayed_exposure(since: float, now: float, half_life: float, replicas: float = 1.0) -> float:
    """∫ 2^(−(now−t)/h) dt from `since` to `now`, times the number of replicas observed."""
    span = max(now - since, 0.0)
    return replicas * half_life / math.log(2.0) * -math.expm1(-span * math.log(2.0) / half_life)


def failure_tallies(
    events: Iterable[FailureEvent],
    now: float,
    since: float,
    replicas: Mapping[str, int],
    nodes: Iterable[str],
    params: HpsParams = HpsParams(),
) -> tuple[dict[str, Tally], dict[str, Tally]]:
    """Per-component and per-node tallies from failure events observed since `since`.

    Events with a component count for it; the others (engine unreachable) for their node.
    Exposure assumes the current replica count held over the whole window.
    """
    by_comp: dict[str, list[float]] = defaultdict(list)
    by_node: dict[str, list[float]] = defaultdict(list)
    for ev in events:
        (by_comp[ev.component] if ev.component else by_node[ev.node]).append(ev.ts)
    h = params.half_life
    start = min([since, *(t for ts in (*by_comp.values(), *by_node.values()) for t in ts)])
    comps = {c: Tally(float(decay_weights(ts, now, h).sum()), 0.0) for c, ts in by_comp.items()}
    out_c = {
        c: Tally(comps.get(c, Tally()).failures,
                 decayed_exposure(start, now, h, max(replicas.get(c, 0), 1)))
        for c in {*comps, *replicas}
    }
    out_n = {
        n: Tally(float(decay_weights(by_node.get(n, []), now, h).sum()),
                 decayed_exposure(start, now, h))
        for n in {*by_node, *nodes}
    }
    return out_c, out_n


def learn_correlations(
    events: Sequence[FailureEvent],
    declared: Mapping[str, Sequence[str]],
    now: float,
    params: HpsParams = HpsParams(),
) -> dict[str, dict[str, float]]:
    """corr[c][d]: shrunk estimate of P(c fails within the window | d failed).

    ``corr = (k + s·μ) / (n + s)`` with n the failures of d (decayed with
    ``cofailure_half_life``) old enough to have been followed, k those followed by a failure
    of c within ``cofailure_window``, s the prior strength and μ the declared or undeclared
    prior mean. An undeclared pair enters only with k ≥ ``dep_min_evidence``, so
    coincidences among many components do not create edges.
    """
    w, h = params.cofailure_window, params.cofailure_half_life
    times: dict[str, FloatArray] = {}
    grouped: dict[str, list[float]] = defaultdict(list)
    for ev in events:
        if ev.component:
            grouped[ev.component].append(ev.ts)
    for comp, ts in grouped.items():
        times[comp] = np.sort(np.asarray(ts, dtype=np.float64))

    pairs: set[tuple[str, str]] = {(c, d) for c, deps in declared.items() for d in deps if d != c}
    # Candidate undeclared pairs: any d failing in [t_c − w, t_c) before a failure of c.
    flat = sorted((ev.ts, ev.component) for ev in events if ev.component)
    lo = 0
    for i, (ts, comp) in enumerate(flat):
        while flat[lo][0] < ts - w:
            lo += 1
        pairs.update((comp, d) for t_d, d in flat[lo:i] if t_d < ts and d != comp)

    out: dict[str, dict[str, float]] = defaultdict(dict)
    empty = np.empty(0)
    for c, d in sorted(pairs):
        is_declared = d in declared.get(c, ())
        t_d = times.get(d, empty)
        t_d = t_d[t_d <= now - w]  # censored: too recent to know whether c followed
        weights = decay_weights(t_d, now, h)
        t_c = times.get(c, empty)
        k = 0.0
        if t_c.size:  # the first failure of c after each failure of d, within w?
            idx = np.searchsorted(t_c, t_d, side="right")
            nxt = np.where(idx < t_c.size, t_c[np.minimum(idx, t_c.size - 1)], np.inf)
            k = float(weights[nxt <= t_d + w].sum())
        if not is_declared and k < params.dep_min_evidence:
            continue
        mu = params.dep_prior_declared if is_declared else params.dep_prior_undeclared
        s = params.dep_prior_strength
        out[c][d] = (k + s * mu) / (float(weights.sum()) + s)
    return dict(out)


# --- the score --------------------------------------------------------------------------------


class _Weighted(Protocol):
    """Anything with name, scope and weight: SignalWeight or config.SignalConfig."""

    name: str
    scope: str
    weight: float


def _p(log_survival: FloatArray) -> FloatArray:
    """1 − exp(log survival), accurate for small p; + 0.0 turns −0.0 into 0.0."""
    return -np.expm1(log_survival) + 0.0


def _rate_p(
    failures: FloatArray, exposure: FloatArray, a0: float, b0: float, h: float
) -> FloatArray:
    """P(at least one failure within h) for the posterior mean rate (a0 + f) / (b0 + e)."""
    lam = (a0 + failures) / (b0 + exposure)
    return -np.expm1(-lam * h)


def score(
    footprint: Footprint,
    *,
    signals: Sequence[_Weighted] = (),
    breach: Mapping[SeriesKey, float] | None = None,
    history: Mapping[str, Tally] | None = None,
    node_history: Mapping[str, Tally] | None = None,
    correlations: Mapping[str, Mapping[str, float]] | None = None,
    params: HpsParams = HpsParams(),
) -> Scores:
    """Score every replica and node of `footprint`.

    `breach` maps (signal, node) for node-scoped and (signal, container name) for
    component-scoped signals to P(breach within H); a missing or NaN entry counts as 0 (no
    evidence). Components and nodes without a tally get the prior alone. A replica on a node
    the footprint does not list is treated as on an unreachable node.
    """
    breach = breach or {}
    history = history or {}
    node_history = node_history or {}
    correlations = correlations or {}
    reps = footprint.replicas
    h = params.horizon

    node_names = list(dict.fromkeys([*(n.name for n in footprint.nodes), *(r.node for r in reps)]))
    node_ix = {n: i for i, n in enumerate(node_names)}
    listed = {n.name: n for n in footprint.nodes}
    stale = footprint.stale_nodes
    reachable = np.array(
        [n in listed and listed[n].reachable and n not in stale for n in node_names], dtype=bool
    )
    comp_names = list(dict.fromkeys([
        *(r.component for r in reps), *history,
        *correlations, *(d for deps in correlations.values() for d in deps),
    ]))
    comp_ix = {c: i for i, c in enumerate(comp_names)}
    n_nodes, n_comps, n_reps = len(node_names), len(comp_names), len(reps)
    r_comp = np.fromiter((comp_ix[r.component] for r in reps), dtype=np.intp, count=n_reps)
    r_node = np.fromiter((node_ix[r.node] for r in reps), dtype=np.intp, count=n_reps)

    # history and node factors: decayed Gamma-Poisson rates
    tallies = [history.get(c, Tally()) for c in comp_names]
    p_hist_c = _rate_p(
        np.array([t.failures for t in tallies]), np.array([t.exposure for t in tallies]),
        params.prior_failures, params.prior_exposure, h,
    )
    ntallies = [node_history.get(n, Tally()) for n in node_names]
    p_rate_n = _rate_p(
        np.array([t.failures for t in ntallies]), np.array([t.exposure for t in ntallies]),
        params.node_prior_failures, params.node_prior_exposure, h,
    )
    p_node_n = 1.0 - (1.0 - p_rate_n) * (1.0 - params.unreachable_p * ~reachable)

    # environment: w·p per (node, node signal) and per (replica, component signal)
    node_sigs = [s for s in signals if s.scope == "node"]
    comp_sigs = [s for s in signals if s.scope != "node"]
    col = {s.name: (s.scope == "node", i) for group in (node_sigs, comp_sigs)
           for i, s in enumerate(group)}
    weight = {s.name: min(max(float(s.weight), 0.0), 1.0) for s in signals}
    x_node = np.zeros((n_nodes, len(node_sigs)))
    x_comp = np.zeros((n_reps, len(comp_sigs)))
    by_container: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(reps):
        by_container[r.name].append(i)
    for (sig, entity), p in breach.items():
        where = col.get(sig)
        if where is None or math.isnan(p):  # unknown signal, or NaN (no forecast)
            continue
        wp = weight[sig] * min(max(float(p), 0.0), 1.0)
        if where[0]:
            if entity in node_ix:
                x_node[node_ix[entity], where[1]] = wp
        else:
            for i in by_container.get(entity, ()):
                x_comp[i, where[1]] = wp
    with np.errstate(divide="ignore"):  # w·p = 1 gives log(0) = −inf: survival 0, as it should
        ls_node = np.log1p(-x_node).sum(axis=1)
        ls_comp = np.log1p(-x_comp).sum(axis=1)
    p_env_node_n = _p(ls_node)
    p_env_r = _p(ls_node[r_node] + ls_comp)
    x_all = np.concatenate([x_node[r_node], x_comp], axis=1)
    order = [s.name for s in node_sigs] + [s.name for s in comp_sigs]
    top_col = x_all.argmax(axis=1) if x_all.shape[1] else np.zeros(n_reps, dtype=np.intp)
    top_val = x_all[np.arange(n_reps), top_col] if x_all.shape[1] else np.zeros(n_reps)

    # dependencies, one level: p_d is the dependency's own risk, mean over its replicas
    own_r = 1.0 - (1.0 - p_hist_c[r_comp]) * (1.0 - p_env_r) * (1.0 - p_node_n[r_node])
    counts = np.bincount(r_comp, minlength=n_comps)
    sums = np.bincount(r_comp, weights=own_r, minlength=n_comps)
    p_comp = np.where(counts > 0, sums / np.maximum(counts, 1), p_hist_c)
    ci, di, corr = [], [], []
    for c, deps in correlations.items():
        for d, v in deps.items():
            if d != c:
                ci.append(comp_ix[c])
                di.append(comp_ix[d])
                corr.append(min(max(float(v), 0.0), 1.0))
    ci_a = np.asarray(ci, dtype=np.intp)
    contrib = np.asarray(corr, dtype=np.float64) * p_comp[np.asarray(di, dtype=np.intp)]
    with np.errstate(divide="ignore"):
        ls_dep = np.bincount(ci_a, weights=np.log1p(-contrib), minlength=n_comps)
    p_dep_c = _p(ls_dep)
    top_dep: list[str | None] = [None] * n_comps
    for k in np.lexsort((np.asarray(di), contrib, ci_a)):  # ascending: the last per c wins
        if contrib[k] > 0:
            top_dep[ci[k]] = comp_names[di[k]]

    p_hist_r, p_dep_r, p_node_r = p_hist_c[r_comp], p_dep_c[r_comp], p_node_n[r_node]
    hps_r = np.clip(100.0 * (1 - p_hist_r) * (1 - p_dep_r) * (1 - p_env_r) * (1 - p_node_r),
                    0.0, 100.0)
    hps_n = np.clip(100.0 * (1 - p_env_node_n) * (1 - p_node_n), 0.0, 100.0)

    replicas = tuple(
        ReplicaScore(
            r.container_id, r.name, r.component, r.node, hv, ph, pd, pe, pn, pen,
            order[tc] if tv > 0 else None, tv, top_dep[rc],
        )
        for r, hv, ph, pd, pe, pn, pen, tc, tv, rc in zip(
            reps, hps_r.tolist(), p_hist_r.tolist(), p_dep_r.tolist(), p_env_r.tolist(),
            p_node_r.tolist(), p_env_node_n[r_node].tolist(), top_col.tolist(),
            top_val.tolist(), r_comp.tolist(), strict=True,
        )
    )
    n_top = x_node.argmax(axis=1) if node_sigs else np.zeros(n_nodes, dtype=np.intp)
    nodes = {
        name: NodeScore(
            name, float(hps_n[i]), float(p_env_node_n[i]), float(p_node_n[i]),
            bool(reachable[i]),
            node_sigs[n_top[i]].name if node_sigs and x_node[i, n_top[i]] > 0 else None,
            float(x_node[i, n_top[i]]) if node_sigs else 0.0,
        )
        for i, name in enumerate(node_names)
    }
    lowest = np.full(n_comps, np.inf)
    np.minimum.at(lowest, r_comp, hps_r)
    components = {comp_names[i]: float(lowest[i]) for i in np.flatnonzero(counts)}
    return Scores(replicas, nodes, components, dict(zip(comp_names, p_comp.tolist(), strict=True)))
