"""Text for `preshift plan` and `preshift explain`, from the /api/v1/footprint document. Pure.

Both commands render the exporter's JSON document (docs/exporter-api.md), whether it came from
a running exporter or from a one-off refresh, so the two paths cannot disagree. What the
document does not carry (signal weights, declared dependencies, failure counters) comes in a
`Context` when the caller knows it; without it the text says what it cannot tell.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InputError

Doc = Mapping[str, Any]
SYMBOL = {"move": "~", "scale_up": "+", "new_instance": "+"}
FACTORS: tuple[str, ...] = ("history", "dependency", "environment", "node")


@dataclass(frozen=True, slots=True)
class Context:
    """Facts beside the document: from the configuration and the failure counters."""

    source: str
    weights: Mapping[str, float] = field(default_factory=dict)  # signal -> weight
    depends_on: Mapping[str, Sequence[str]] = field(default_factory=dict)  # declared
    p_component: Mapping[str, float] = field(default_factory=dict)  # own risk (exact)
    component_failures: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    node_failures: Mapping[tuple[str, str], float] = field(default_factory=dict)
    configured: bool = False  # the configuration is known (weights, declared dependencies)


def _iso(t: Any) -> str:
    if not isinstance(t, int | float) or t <= 0:
        return "never"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _f(x: Any, fmt: str = ".2f") -> str:
    return "?" if x is None else format(x + 0.0, fmt)  # + 0.0: never print "-0.00"


def plan_section(doc: Doc) -> Mapping[str, Any]:
    """The document's plan, or an InputError saying why there is none."""
    if "plan" not in doc:
        raise InputError(
            "the footprint document has no plan: the exporter predates plans (API version "
            f"{doc.get('version')}); upgrade it"
        )
    plan = doc["plan"]
    if plan is None:
        why = (doc.get("errors", {}).get("stages", {}) or {}).get("assess") or "not assessed yet"
        raise InputError(f"no plan yet: {why}")
    return plan  # type: ignore[no-any-return]


def has_changes(plan: Mapping[str, Any]) -> bool:
    return bool(plan.get("entries"))


def _placement(nodes: Sequence[str]) -> str:
    counts = Counter(nodes)
    return ", ".join(n if k == 1 else f"{n}×{k}" for n, k in sorted(counts.items())) or "-"


def summary_line(plan: Mapping[str, Any]) -> str:
    entries = plan.get("entries") or []
    moves = sum(1 for e in entries if e.get("action") == "move")
    adds = len(entries) - moves
    return f"Plan: {moves} to move, {adds} to add, {len(plan.get('held') or [])} held."


def entry_line(e: Mapping[str, Any]) -> str:
    """`~ move web-2  n2 → n3  (priority 41.20, HPS 62.0 → 95.1)`, or for an addition
    `+ scale_up web on n3  (priority …)  for web-2 on n2`."""
    action = e.get("action", "?")
    nums = (f"(priority {_f(e.get('priority'))}, "
            f"HPS {_f(e.get('hps'), '.1f')} → {_f(e.get('target_hps'), '.1f')})")
    sym = SYMBOL.get(action, "?")
    if action == "move":
        return f"{sym} move {e.get('replica')}  {e.get('from_node')} → {e.get('to_node')}  {nums}"
    cover = f"  for {e.get('replica')} on {e.get('from_node')}" if e.get("replica") else ""
    return f"{sym} {action} {e.get('component')} on {e.get('to_node')}  {nums}{cover}"


def render_plan(doc: Doc, ctx: Context) -> list[str]:
    """The `preshift plan` text: placements, entries, held replicas, discrepancy, summary."""
    plan = plan_section(doc)
    out = [
        f"Preshift plan from {ctx.source} (assessed {_iso(plan.get('assessed_at'))}, "
        f"risk tolerance {_f(plan.get('tolerance'))})"
    ]
    if plan.get("stale") or doc.get("stale"):
        errors = (doc.get("errors") or {}).get("stages") or {}
        why = "; ".join(f"{k}: {v}" for k, v in errors.items() if v) or "inputs not fresh"
        out.append(f"! stale: {why}")
    current, desired = plan.get("current") or {}, plan.get("desired") or {}
    disc, thr = plan.get("discrepancy") or {}, plan.get("threshold") or {}
    comps = sorted({*current, *desired, *disc})
    out += ["", "Placement (current → desired), discrepancy vs threshold:"]
    width = max((len(c) for c in comps), default=0)
    cur_w = max((len(_placement(current.get(c, []))) for c in comps), default=0)
    new_w = max((len(_placement(desired.get(c, []))) for c in comps), default=0)
    for c in comps:
        d, t = disc.get(c), thr.get(c)
        over = d is not None and t is not None and d > t
        out.append(
            f"  {c:<{width}}  {_placement(current.get(c, [])):<{cur_w}} → "
            f"{_placement(desired.get(c, [])):<{new_w}}  {_f(d)} {'>' if over else '≤'} {_f(t)}"
            + ("  (alert: migrate)" if over else "")
        )
    entries = plan.get("entries") or []
    if entries:
        out += ["", "Changes, highest priority first:"]
        for e in entries:
            out.append("  " + entry_line(e))
            out.append(f"      {e.get('reason', '')}")
    held = plan.get("held") or []
    if held:
        out += ["", "Held (risky, left where they are):"]
        for h in held:
            out.append(f"  ! {h.get('replica') or '?'} ({h.get('component')}) on {h.get('node')}, "
                       f"HPS {_f(h.get('hps'), '.1f')}: {h.get('reason') or h.get('why')}")
    out.append("")
    if not entries:
        out.append("No changes. The current footprint is where it ought to be.")
    out.append(summary_line(plan))
    return out


# --- explain -----------------------------------------------------------------------------------


def _replicas(doc: Doc) -> list[Mapping[str, Any]]:
    return list(((doc.get("scores") or {}).get("replicas")) or [])


def _own_risk(r: Mapping[str, Any]) -> float:
    """1 − (1−history)(1−environment)(1−node): the p_d a dependent sees (hps.score)."""
    f = r.get("factors") or {}
    keep = 1.0
    for k in ("history", "environment", "node"):
        keep *= 1.0 - (f.get(k) or 0.0)
    return 1.0 - keep


def _known_names(doc: Doc) -> tuple[set[str], set[str]]:
    """Every replica (container) name and component name the document mentions."""
    reps = {r.get("replica", "") for r in _replicas(doc)}
    comps = set(doc.get("components") or {})
    for info in (doc.get("components") or {}).values():
        reps |= {r.get("name", "") for r in info.get("replicas", [])}
    comps |= {r.get("component", "") for r in _replicas(doc)}
    return reps - {""}, comps - {""}


def close_matches(name: str, candidates: set[str]) -> list[str]:
    """Similar names first, then names containing it (e.g. `web` → web-1, web-2)."""
    def ratio(c: str) -> float:
        return difflib.SequenceMatcher(None, name.lower(), c.lower()).ratio()

    scored = sorted((-round(ratio(c), 3), c) for c in candidates)  # ties: alphabetical
    near = [c for r, c in scored if -r >= 0.6][:5]
    near += sorted(c for c in candidates if name.lower() in c.lower() and c not in near)
    return near[:8]


def _history_line(r: Mapping[str, Any], doc: Doc, ctx: Context) -> str:
    p = (r.get("factors") or {}).get("history") or 0.0
    horizon = ((doc.get("forecasts") or {}).get("horizon_seconds")) or 1800.0
    rate = -math.log1p(-min(p, 1 - 1e-12)) / horizon * 3600.0  # p = 1 − exp(−λ̂·H)
    comp = r.get("component", "")
    counts = {k: v for k, v in ctx.component_failures.items() if k[0] == comp and v > 0}
    if counts:
        detail = ", ".join(f"{reason} {v:g} on {node}" for (_, node, reason), v
                           in sorted(counts.items()))
        seen = f"failures counted {sum(counts.values()):g} ({detail}; cumulative counters)"
    elif ctx.component_failures or ctx.node_failures:
        seen = "no failures counted"
    else:
        seen = "failure counters not known here"
    return (f"decayed failure rate {rate:.3f}/h per replica (prior included) over "
            f"{horizon / 60:g} min; {seen}")


def _dependency_lines(r: Mapping[str, Any], doc: Doc, ctx: Context) -> list[str]:
    p_dep = (r.get("factors") or {}).get("dependency") or 0.0
    comp = r.get("component", "")
    deps = list(ctx.depends_on.get(comp, ()))
    top = r.get("top_dependency")
    if top and top not in deps:
        deps.append(top)
    if not deps:
        return ["no dependency declared or learned"]
    by_comp: dict[str, list[float]] = {}
    for other in _replicas(doc):
        by_comp.setdefault(other.get("component", ""), []).append(_own_risk(other))
    lines = []
    for d in deps:
        p_d = ctx.p_component.get(d)
        if p_d is None and by_comp.get(d):
            p_d = sum(by_comp[d]) / len(by_comp[d])
        if d in ctx.depends_on.get(comp, ()):
            kind = " (declared)"
        else:  # without the configuration, a declared edge cannot be told from a learned one
            kind = " (learned from failures)" if ctx.configured else ""
        text = f"{d}{kind}: own risk p_d {_f(p_d)}"
        if len(deps) == 1 and p_d:
            text += f", correlation ≈ {min(p_dep / p_d, 1.0):.2f} (p = corr · p_d)"
        if d == top:
            text += "  ← largest"
        lines.append(text)
    return lines


def _signal_lines(r: Mapping[str, Any], doc: Doc, ctx: Context) -> list[str]:
    fc = doc.get("forecasts") or {}
    levels = fc.get("levels") or []
    lines, missing = [], []
    for name, sig in sorted((fc.get("signals") or {}).items()):
        entity = r.get("node") if sig.get("scope") == "node" else r.get("replica")
        s = (sig.get("series") or {}).get(entity)
        if s is None:
            missing.append(name)
            continue
        band = ""
        if levels and s.get("lower") and s.get("upper"):
            band = f" [{levels[0]:g} %: {_f(s['lower'][0], '.4g')}–{_f(s['upper'][0], '.4g')}]"
        w = ctx.weights.get(name)
        p = s.get("p_breach")
        wp = f" × weight {w:g} = {_f(w * p)}" if w is not None and p is not None else ""
        mark = "  ← top" if name == r.get("top_signal") else ""
        lines.append(
            f"{name} ({sig.get('scope')} {entity}): now {_f(s.get('last'), '.4g')}, forecast "
            f"{_f(s.get('mean'), '.4g')}{band}, limit {sig.get('limit')} "
            f"({sig.get('direction')}): P(breach) {_f(p)}{wp}{mark}"
        )
    if missing:  # configured, but no series for this node or container: no evidence, p = 0
        lines.append(f"no data (counts as 0): {', '.join(missing)}")
    return lines or ["no signals configured"]


def _node_line(r: Mapping[str, Any], doc: Doc, ctx: Context) -> str:
    node = r.get("node", "")
    info = ((doc.get("scores") or {}).get("nodes") or {}).get(node) or {}
    reach = "reachable" if info.get("reachable", True) else "UNREACHABLE now"
    counts = {k: v for k, v in ctx.node_failures.items() if k[0] == node and v > 0}
    if counts:
        seen = ", ".join(f"{reason} {v:g}" for (_, reason), v in sorted(counts.items()))
        seen = f"node failures counted: {seen}"
    elif ctx.component_failures or ctx.node_failures:
        seen = "no node failures counted"
    else:
        seen = "node failure counters not known here"
    return f"{node} {reach}, node HPS {_f(info.get('hps'), '.1f')}; {seen}"


def _plan_lines(
    doc: Doc, component: str, replica: str | None, *, gauges: bool = True
) -> list[str]:
    """Entries and holds of the component (of one replica when given), then its gauges."""
    plan = doc.get("plan") or {}
    out = []
    for e in plan.get("entries") or []:
        if e.get("component") == component and (replica is None or e.get("replica") == replica):
            out += [entry_line(e), f"    {e.get('reason', '')}"]
    for h in plan.get("held") or []:
        if h.get("component") == component and (replica is None or h.get("replica") == replica):
            out.append(f"! held {h.get('replica')}: {h.get('reason') or h.get('why')}")
    if not out:
        out.append("no change planned" + ("" if replica is None else f" for {replica}"))
    d = (plan.get("discrepancy") or {}).get(component)
    t = (plan.get("threshold") or {}).get(component)
    if gauges and d is not None:
        out.append(f"{component}: discrepancy {_f(d)} vs threshold {_f(t)}")
    return out


def explain_replica(
    r: Mapping[str, Any], doc: Doc, ctx: Context, *, gauges: bool = True
) -> list[str]:
    """The score of one replica, factor by factor, and what the plan does with it."""
    f = r.get("factors") or {}
    tol = (doc.get("plan") or {}).get("tolerance")
    risk = 1.0 - (r.get("hps") or 0.0) / 100.0
    verdict = "" if tol is None else (f" > tolerance {tol:.2f}" if risk > tol
                                      else f" ≤ tolerance {tol:.2f}")
    out = [f"{r.get('replica')} (component {r.get('component')}) on {r.get('node')}: "
           f"HPS {_f(r.get('hps'), '.1f')}, risk {risk:.2f}{verdict}"]
    body = {
        "history": [_history_line(r, doc, ctx)],
        "dependency": _dependency_lines(r, doc, ctx),
        "environment": _signal_lines(r, doc, ctx),
        "node": [_node_line(r, doc, ctx)],
    }
    for k in FACTORS:
        lines = body[k]
        out.append(f"  {k:<12} p={_f(f.get(k), '.3f')}  {lines[0]}")
        out += [f"  {'':<12}          {line}" for line in lines[1:]]
    plan = _plan_lines(doc, r.get("component", ""), r.get("replica"), gauges=gauges)
    out.append(f"  {'plan':<12}          {plan[0]}")
    out += [f"  {'':<12}          {line}" for line in plan[1:]]
    return out


def render_explain(doc: Doc, name: str, ctx: Context) -> list[str]:
    """Breakdown of one replica's score, or of every running replica of a component."""
    plan_section(doc)  # no assessment: say so, rather than "unknown name"
    scored = {r.get("replica"): r for r in _replicas(doc)}
    if name in scored:
        return [f"Explained from {ctx.source}", *explain_replica(scored[name], doc, ctx)]
    reps, comps = _known_names(doc)
    if name in comps:
        mine = [r for r in _replicas(doc) if r.get("component") == name]
        hps = ((doc.get("scores") or {}).get("components") or {}).get(name)
        out = [f"Explained from {ctx.source}",
               f"component {name}: {len(mine)} running replica(s), lowest HPS {_f(hps, '.1f')}"]
        for r in sorted(mine, key=lambda r: r.get("hps") or 0.0):
            out += ["", *explain_replica(r, doc, ctx, gauges=False)]
        out += ["", "plan for the component:"]
        out += [f"  {line}" for line in _plan_lines(doc, name, None)]
        return out
    if name in reps:
        for comp, info in (doc.get("components") or {}).items():
            for r in info.get("replicas", []):
                if r.get("name") == name:
                    raise InputError(
                        f"{name} (component {comp}) is {r.get('state')} on {r.get('node')}: "
                        "only running replicas are scored"
                    )
    near = close_matches(name, reps | comps)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise InputError(
        f"no replica or component named {name!r}{hint} (components: "
        f"{', '.join(sorted(comps)) or 'none'})"
    )


# --- failure counters from /metrics ---------------------------------------------------------

_SAMPLE = re.compile(r"^(preshift_(?:component|node)_failures_total)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def failure_counters(
    metrics_text: str,
) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str], float]]:
    """The exporter's failure counters from its /metrics text (Prometheus text format)."""
    comps: dict[tuple[str, str, str], float] = {}
    nodes: dict[tuple[str, str], float] = {}
    for line in metrics_text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if m.group(1).startswith("preshift_component"):
            comps[(labels.get("component", ""), labels.get("node", ""),
                   labels.get("reason", ""))] = value
        else:
            nodes[(labels.get("node", ""), labels.get("reason", ""))] = value
    return comps, nodes
