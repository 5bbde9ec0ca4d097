"""Samples of the look-ahead families (declared in the one table, exporter/metrics.py).

Pure: an Assessment in, one `add(name, labels, value)` call per sample out (the same callback
fills prometheus_client families or the pre-rendered text, see exporter/metrics.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

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
    for (signal, entity), p in sorted(zip(f.keys, f.p_breach.tolist(), strict=True)):
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
