"""The look-ahead sections of /api/v1/footprint: "scores", "plan" and "forecasts".

Built from an Assessment once per refresh, with list comprehensions over arrays (no object per
series beyond the dicts the JSON needs). Numbers are rounded to 6 decimals and NaN or infinite
values become null, so the document is strict JSON. Shape: docs/exporter-api.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from preshift.assess import Assessment
from preshift.score.hps import FACTORS


def _floats(a: npt.ArrayLike) -> list[Any]:
    """A list of rounded floats, null where the value is NaN or infinite."""
    arr = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(arr)
    vals = (np.round(np.where(finite, arr, 0.0), 6) + 0.0).tolist()  # + 0.0: no "-0.0"
    if finite.all():
        return vals
    return [v if ok else None for v, ok in zip(vals, finite.tolist(), strict=True)]


def _num(x: float) -> float | None:
    return round(x, 6) + 0.0 if np.isfinite(x) else None


#: A signal whose w·p is below this is not named as the top one (it explains nothing).
TOP_SIGNAL_MIN = 1e-6


def assessment_sections(a: Assessment | None, stale: bool) -> dict[str, Any]:
    """{"scores": ..., "plan": ..., "forecasts": ...}; each null before the first assessment."""
    if a is None:
        return {"scores": None, "plan": None, "forecasts": None}
    return {"scores": _scores(a), "plan": _plan(a, stale), "forecasts": _forecasts(a)}


def _scores(a: Assessment) -> dict[str, Any]:
    reps = a.running
    cols = [_floats([s.hps for s in reps])]
    cols += [_floats([getattr(s, f"p_{f}") for s in reps]) for f in FACTORS]
    replicas = [
        {"replica": s.replica, "component": s.component, "node": s.node, "hps": hps,
         "factors": dict(zip(FACTORS, ps, strict=True)),
         "top_signal": s.top_signal if s.top_signal_p >= TOP_SIGNAL_MIN else None,
         "top_dependency": s.top_dependency}
        for s, hps, *ps in zip(reps, *cols, strict=True)
    ]
    nodes = {
        name: {"hps": _num(n.hps), "reachable": n.reachable,
               "factors": {"environment": _num(n.p_environment), "node": _num(n.p_node)},
               "top_signal": n.top_signal if n.top_signal_p >= TOP_SIGNAL_MIN else None}
        for name, n in a.scores.nodes.items()
    }
    components = {c: _num(v) for c, v in sorted(a.component_hps.items())}
    return {"replicas": replicas, "nodes": nodes, "components": components}


def _plan(a: Assessment, stale: bool) -> dict[str, Any]:
    plan = a.plan
    return {
        "assessed_at": a.taken_at,
        "stale": stale,
        "tolerance": a.settings.tolerance,
        "current": {c: list(n) for c, n in sorted(plan.desired.current.items())},
        "desired": {c: list(n) for c, n in sorted(plan.desired.placements.items())},
        "entries": [
            {"action": e.action, "component": e.component, "replica": e.replica,
             "from_node": e.from_node, "to_node": e.to_node, "reason": e.reason,
             "priority": _num(e.priority), "hps": _num(e.hps), "target_hps": _num(e.target_hps)}
            for e in plan.entries
        ],
        "held": [
            {"component": h.component, "replica": h.replica, "node": h.node,
             "hps": _num(100.0 * (1.0 - h.risk)), "why": h.why, "reason": text}
            for h, text in plan.held
        ],
        "discrepancy": {c: _num(v) for c, v in sorted(plan.discrepancy.items())},
        "threshold": {c: _num(v) for c, v in sorted(plan.threshold.items())},
    }


def _forecasts(a: Assessment) -> dict[str, Any]:
    """Per signal, its settings and quality, then one small object per entity (node or
    container name); `lower`/`upper` hold one band edge per level."""
    f = a.forecasts
    last, mean, p, mase = (_floats(x) for x in (f.last, f.mean, f.p_breach, f.mase))
    lower = [_floats(f.lower[:, j]) for j in range(len(f.levels))]
    upper = [_floats(f.upper[:, j]) for j in range(len(f.levels))]
    out: dict[str, Any] = {}
    for s in a.signals:
        q = a.quality.get(s.name)
        out[s.name] = {
            "scope": s.scope, "limit": s.limit, "direction": s.direction,
            "quality": None if q is None else {
                "series": q.series, "fitted": q.fitted, "mase_median": _num(q.mase),
                "mae_median": _num(q.mae),
            },
            "series": {},
        }
    for i, (signal, entity) in enumerate(f.keys):
        entry = out.get(signal)
        if entry is not None:  # (a signal no longer configured: not shown)
            entry["series"][entity] = {
                "last": last[i], "mean": mean[i], "lower": [b[i] for b in lower],
                "upper": [b[i] for b in upper], "p_breach": p[i], "mase": mase[i],
            }
    return {"horizon_seconds": f.horizon, "levels": list(f.levels), "signals": out}
