"""Samples of the look-ahead families (declared in the one table, exporter/metrics.py).

Pure: an Assessment in, one `add(name, labels, value)` call per sample out (the same callback
fills prometheus_client families or the pre-rendered text, see exporter/metrics.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter

import numpy as np

from preshift.assess import Assessment
from preshift.score.hps import FACTORS

Add = Callable[[str, Sequence[str], float], None]


def add_assessment(a: Assessment, add: Add) -> None:
    """Call `add` for every look-ahead sample of `a`."""
    add("preshift_assessment_timestamp_seconds", [], a.taken_at)
    for s in sorted(a.running, key=lambda s: (s.component, s.node, s.replica)):
        labels = [s.component, s.replica, s.node]
        add("preshift_health_projection_score", labels, s.hps)
        for factor, p in zip(FACTORS, (s.p_history, s.p_dependency, s.p_environment, s.p_node),
                             strict=True):
            add("preshift_failure_probability_ratio", [*labels, factor], p)
    for c in sorted(a.component_hps):
        add("preshift_component_health_projection_score", [c], a.component_hps[c])
    for name in sorted(a.scores.nodes):
        n = a.scores.nodes[name]
        add("preshift_node_health_projection_score", [name], n.hps)
        add("preshift_node_failure_probability_ratio", [name, "environment"], n.p_environment)
        add("preshift_node_failure_probability_ratio", [name, "node"], n.p_node)

    plan = a.plan
    for c in sorted(plan.discrepancy):
        add("preshift_discrepancy_ratio", [c], plan.discrepancy[c])
        add("preshift_discrepancy_threshold_ratio", [c], plan.threshold[c])
    entries = Counter((e.component, e.action) for e in plan.entries)
    for (c, action), k in sorted(entries.items()):
        add("preshift_plan_entries", [c, action], k)
    _add_forecasts(a, add)


def _add_forecasts(a: Assessment, add: Add) -> None:
    f = a.forecasts
    scope = {s.name: s.scope for s in a.signals}
    nodes_of: dict[str, list[str]] = defaultdict(list)  # container name -> nodes it runs on
    for s in a.running:
        nodes_of[s.replica].append(s.node)
    known_nodes = {n.name for n in a.footprint.nodes}
    breach = "preshift_signal_breach_probability_ratio"
    for signal, entity, p in _by_signal_and_entity(f.keys, f.p_breach.tolist()):
        if p != p or signal not in scope:  # NaN: no forecast (too few points) or no limit
            continue
        if scope[signal] == "node":
            if entity in known_nodes:  # series of nodes Preshift does not manage are ignored
                add(breach, [signal, entity, ""], p)
        else:
            for node in nodes_of.get(entity, ()):
                add(breach, [signal, node, entity], p)

    for name in sorted(a.quality):
        q = a.quality[name]
        add("preshift_forecast_fitted_series", [name], q.fitted)
        if np.isfinite(q.mase):
            add("preshift_forecast_error_ratio", [name], q.mase)
    add("preshift_forecast_fit_backlog_series", [], a.forecast_stats.fit_backlog)
    for result in ("ok", "failed"):
        add("preshift_forecast_fits_total", [result], a.fits.get(result, 0))


def _by_signal_and_entity(
    keys: Sequence[tuple[str, str]], values: Sequence[float]
) -> Iterator[tuple[str, str, float]]:
    """(signal, entity, value) sorted by signal then entity, as sorted(zip(keys, values))
    would give them (a key is unique). One sort of 20,000 (tuple, value) pairs (10,000
    components) is a single C call holding the GIL ~20 ms, stalling scrapes; sorting each
    signal's entities by their string alone takes ~2 ms per signal."""
    by_signal: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (signal, entity), value in zip(keys, values, strict=True):
        by_signal[signal].append((entity, value))
    for signal in sorted(by_signal):
        for entity, value in sorted(by_signal[signal], key=itemgetter(0)):
            yield signal, entity, value
