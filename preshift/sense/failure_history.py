"""Failure EVENT times rebuilt from the counters Prometheus kept, so that the score's history
factor survives an exporter restart (the ledger's restore() brings back the counts only).

Each increase of `preshift_component_failures_total` / `preshift_node_failures_total` between
two consecutive points of a `query_range` answer is that many failures at the later point's
time (so an event's time is known to one `step`, plus the scrape interval). A counter that
goes down was reset: its new value counts from zero, as in PromQL's `increase()`. The first
point of a series is its baseline and never counts, also when the series appears in the middle
of the window; a counter that first shows up already above 0 is therefore missed (rare: the
exporter exports 0 for every (component, node) where it has seen a replica).

Call it once, right after the ledger's restore and before this process exports its own
counters, with `until` = that moment: every increase Prometheus holds up to then was counted
by an earlier process, and every later failure is in the ledger's recent events. So the two
never overlap.

Cost at scale: a range query over every zero-filled counter (4 reasons per (component, node))
would load series × steps samples, past Prometheus's `query.max-samples` at 10,000 components.
So one instant query first finds the counters that moved within the window (a subquery at a
5-minute resolution, about 300 samples per series for 24 h), and only those are fetched at full
resolution, a few components per request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import cast

import numpy as np

from ..model import FAILURE_REASONS, FailureEvent, FailureReason
from .failures import COMPONENT_COUNTER, NODE_COUNTER
from .ports import MetricsSource, RangeSeries

DETAIL = "reconstructed from Prometheus"
#: More failures than this in one step is a broken counter, not history.
MAX_PER_STEP = 1000
#: Components per range query: keeps the regex matcher (and the URL) short.
CHUNK = 50
_BY_COMPONENT = "max by (component, node, reason)"
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def events_from_counters(
    series: Iterable[RangeSeries], *, node_level: bool, until: float = math.inf
) -> list[FailureEvent]:
    """Pure: the failure events a set of counter series implies (see the module docstring).

    `node_level` selects the node counter's labels (node, reason) over the component
    counter's (component, node, reason). Several events in one step are spaced 1 ms apart
    (earlier ones first), so each keeps its own identity when events are deduplicated.
    """
    out: list[FailureEvent] = []
    for rs in series:
        node, reason = rs.labels.get("node", ""), rs.labels.get("reason", "")
        component = "" if node_level else rs.labels.get("component", "")
        if not node or reason not in FAILURE_REASONS or not (node_level or component):
            continue
        ts = np.asarray(rs.timestamps, dtype=np.float64)
        vals = np.asarray(rs.values, dtype=np.float64)
        ok = np.isfinite(vals)
        ts, vals = ts[ok], vals[ok]
        if vals.size < 2:
            continue
        step_up = np.diff(vals)
        increase = np.where(step_up < 0, vals[1:], step_up)  # a reset counts from zero
        count = np.clip(np.rint(increase), 0, MAX_PER_STEP).astype(np.int64)
        at = ts[1:]
        keep = (count > 0) & (at <= until)
        why = cast(FailureReason, reason)
        for t, n in zip(at[keep].tolist(), count[keep].tolist(), strict=True):
            out.extend(
                FailureEvent(ts=t - 1e-3 * (n - 1 - i), reason=why, node=node,
                             component=component, detail=DETAIL)
                for i in range(n)
            )
    out.sort(key=lambda e: e.ts)
    return out


def moved_counters_query(window: float) -> str:
    """Instant PromQL: component counters that rose within `window` seconds before the
    evaluation time, or appeared within it above 0."""
    w = f"{max(1, math.ceil(window))}s"
    then = f"{_BY_COMPONENT} ({COMPONENT_COUNTER} offset {w})"
    # The subquery sees every value held for 5 minutes (the lookback) at some 5-minute point;
    # a value newer than the last such point is caught by last_over_time at the end.
    parts = []
    for now in (f"{_BY_COMPONENT} (max_over_time({COMPONENT_COUNTER}[{w}:5m]))",
                f"{_BY_COMPONENT} (last_over_time({COMPONENT_COUNTER}[5m]))"):
        parts += [f"({now} > {then})", f"(({now} > 0) unless {then})"]
    return " or ".join(parts)


def component_selector(components: Iterable[str]) -> str:
    """`preshift_component_failures_total{component=~"^(a|b)$"}`, names escaped for RE2 and
    for a PromQL double-quoted string."""
    alts = "|".join(_RE2_SPECIAL.sub(r"\\\1", c) for c in sorted(set(components)))
    literal = alts.replace("\\", "\\\\").replace('"', '\\"')
    return f'{COMPONENT_COUNTER}{{component=~"^({literal})$"}}'


def load_failure_history(
    source: MetricsSource, since: float, until: float, step: float
) -> list[FailureEvent]:
    """Failure events in [since, until] rebuilt from Prometheus (raises SourceError when it
    cannot answer; the caller retries). Node and component events, oldest first."""
    if until <= since:
        return []
    moved = source.query(moved_counters_query(until - since), at=until)
    wanted = {
        (s.labels.get("component", ""), s.labels.get("node", ""), s.labels.get("reason", ""))
        for s in moved
    }
    components = sorted({c for c, _, _ in wanted if c})
    series: list[RangeSeries] = []
    for i in range(0, len(components), CHUNK):
        answer = source.query_range(
            f"{_BY_COMPONENT} ({component_selector(components[i:i + CHUNK])})",
            since, until, step,
        )
        series.extend(
            rs for rs in answer
            if (rs.labels.get("component", ""), rs.labels.get("node", ""),
                rs.labels.get("reason", "")) in wanted
        )
    # One series per node and reason: few enough to fetch whole.
    nodes = source.query_range(f"max by (node, reason) ({NODE_COUNTER})", since, until, step)
    events = events_from_counters(series, node_level=False, until=until)
    events += events_from_counters(nodes, node_level=True, until=until)
    events.sort(key=lambda e: e.ts)
    return events
