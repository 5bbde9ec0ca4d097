"""The one table of metric families, and the pure function that fills them from a Snapshot.

Everything about a metric (name, type, HELP, labels) is declared once in METRICS; the
collector's describe(), the samples and docs/metrics.md are all generated from it.
Regenerate the doc with: `python -m exporter.metrics > docs/metrics.md`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from preshift import __version__
from preshift.model import FAILURE_REASONS

from .metrics_assess import add_assessment
from .snapshot import ASSESS_PARTS, SOURCES, STAGES, Snapshot, Status

#: Target labels (set by Prometheus or common scrape configs); ours must not clash, hence
#: `site` not `datacenter` and `component` not `service`. (prometheus/docs naming.md also
#: lists `stage`; we keep it for the refresh stage, as the contract says: rename it here if a
#: scrape config ever sets a `stage` target label.)
TARGET_LABELS = frozenset({
    "instance", "job", "datacenter", "dc", "zone", "region", "cluster", "service",
    "availability_zone", "az", "environment", "env", "owner", "customer",
})
#: Reasons a component (as opposed to its node) fails; zero-filled per known (component, node).
COMPONENT_REASONS = tuple(r for r in FAILURE_REASONS if r != "unreachable")
#: Reasons a node itself fails (the ledger counts component failures by component only).
NODE_REASONS = ("unreachable",)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family. `name` is the exposed name (counters end in `_total`)."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()

    def family(self, interval: float | None) -> Metric:
        """An empty family of this spec; HELP states the refresh interval."""
        text = f"{self.help} {refresh_note(interval)}"
        if self.kind == "counter":
            # CounterMetricFamily strips `_total` and adds it back on exposition.
            return CounterMetricFamily(self.name.removesuffix("_total"), text, labels=self.labels)
        return GaugeMetricFamily(self.name, text, labels=self.labels)


def refresh_note(interval: float | None) -> str:
    every = f"{interval:g} s" if interval is not None else "refresh_interval (15 s by default)"
    return f"Refreshed in the background every {every}, not on scrape."


def _g(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", text, labels)


def _c(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", text, labels)


METRICS: tuple[MetricSpec, ...] = (
    _g("preshift_build_info", "Preshift version running this exporter; always 1.", "version"),
    _g("preshift_up", "1 when no stage of the last refresh failed outright, else 0."),
    _g("preshift_source_up", "1 when the last refresh could read the source (docker: at least "
       "one engine answered; prometheus: at least one signal was fetched and the restore of "
       "failure counters, until it has succeeded once, worked), else 0.", "source"),
    _g("preshift_refresh_interval_seconds", "Configured interval between background refreshes."),
    _g("preshift_snapshot_timestamp_seconds",
       "Unix time at which the refresh that built the served snapshot started."),
    _g("preshift_snapshot_stale", "1 when any part of the snapshot is the last good data "
       "instead of fresh data (a stage failed or partly failed), else 0."),
    _g("preshift_last_success_timestamp_seconds",
       "Unix time of the last refresh in which no stage failed outright; 0 before the first."),
    _c("preshift_refreshes_total", "Background refreshes done since the exporter started."),
    _c("preshift_refresh_errors_total",
       "Refreshes in which the stage failed or partly failed (e.g. an unreachable node).",
       "stage"),
    _g("preshift_refresh_duration_seconds", "Time the last refresh took, all stages."),
    _g("preshift_refresh_stage_duration_seconds", "Time the stage took in the last refresh.",
       "stage"),
    _g("preshift_refresh_stage_last_success_timestamp_seconds",
       "Unix time the stage last produced fresh data (fully or partly); 0 before the first.",
       "stage"),
    _g("preshift_node_info", "Failure domains and engine of a node; always 1.",
       "node", "host", "rack", "site", "engine_id"),
    _g("preshift_node_up", "1 when the node's Docker engine answered the last inventory read, "
       "else 0.", "node"),
    _g("preshift_replicas", "Running replicas of the component on the node; 0 for every known "
       "component on a node where it has none. On an unreachable node: the last ones seen.",
       "component", "node"),
    _g("preshift_replica_info", "One replica (container) of a component and its Docker state; "
       "always 1.", "component", "replica", "node", "state"),
    _c("preshift_component_failures_total", "Failures of the component's replicas on the node. "
       "Monotonic across exporter restarts: restored from Prometheus at start, and absent "
       "until that restore has succeeded.", "component", "node", "reason"),
    _c("preshift_node_failures_total", "Failures of the node itself, by reason. Monotonic across "
       "exporter restarts: restored from Prometheus at start, and absent until that restore "
       "has succeeded.", "node", "reason"),
    _g("preshift_failures_last_event_timestamp_seconds", "Unix time of the newest failure event "
       "seen; 0 when none. Absent until the failure counters are restored."),
    _g("preshift_signal_series", "Series of the signal held in the exporter's history.",
       "signal"),
    _g("preshift_signal_points", "Points of the signal held in the exporter's history.",
       "signal"),
    _g("preshift_signal_up", "1 when the last refresh fetched the signal from Prometheus, else 0.",
       "signal"),
    # -- the look ahead (assess stage); absent before the first assessment -----------------
    _g("preshift_assessment_timestamp_seconds", "Unix time of the refresh that computed the "
       "served scores, forecasts and plan. Older than the snapshot while the assess stage "
       "keeps its last good result because its inputs are stale."),
    _g("preshift_risk_tolerance_ratio", "Risk tolerance: the largest projected failure "
       "probability (1 - HPS/100) a placement may carry before its replica is acted on."),
    _g("preshift_health_projection_score", "Health Projection Score of a running replica: 100 x "
       "the projected probability that it keeps working over the horizon. The 0-100 range is "
       "fixed by the brief; lower = riskier.", "component", "replica", "node"),
    _g("preshift_failure_probability_ratio", "Projected probability (0-1) that the replica fails "
       "within the horizon from one factor; HPS = 100 x the product of (1 - each).",
       "component", "replica", "node", "factor"),
    _g("preshift_component_health_projection_score", "Lowest Health Projection Score of the "
       "component's running replicas (0-100, range fixed by the brief; lower = riskier).",
       "component"),
    _g("preshift_node_health_projection_score", "Health Projection Score of the node itself, "
       "from node-scoped signals and the node's own failures (0-100, range fixed by the brief; "
       "lower = riskier).", "node"),
    _g("preshift_node_failure_probability_ratio", "Projected probability (0-1) that the node "
       "fails within the horizon from one factor.", "node", "factor"),
    _g("preshift_discrepancy_ratio", "Share (0-1) of the component's running replicas that are "
       "not where the desired footprint puts them.", "component"),
    _g("preshift_discrepancy_threshold_ratio", "Discrepancy above which the component should be "
       "migrated: the risk tolerance, or less when misplacing that many replicas would leave "
       "fewer than min_available.", "component"),
    _g("preshift_plan_entries", "Changes the plan holds for the component, by action; absent "
       "when there are none.", "component", "action"),
    _g("preshift_signal_breach_probability_ratio", "Probability (0-1) that the signal crosses "
       "its limit at some step within the horizon, from its forecast. `replica` is empty for "
       "node-scoped signals.", "signal", "node", "replica"),
    _g("preshift_forecast_error_ratio", "Median over the signal's series of the scaled one-step "
       "forecast error (MASE: MAE / MAE of the last-value forecast; below 1 beats it). Absent "
       "until enough points were scored.", "signal"),
    _g("preshift_forecast_fitted_series", "Series of the signal forecast by a fitted ETS model; "
       "the others use a random walk with drift until their first fit.", "signal"),
    _g("preshift_forecast_fit_backlog_series",
       "Series due for a (re)fit that the last assessment's fit budget left waiting."),
    _c("preshift_forecast_fits_total", "ETS fits the forecaster attempted, by result.", "result"),
)
SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def empty_families(interval: float | None) -> list[Metric]:
    """Every family of the table without samples (for describe())."""
    return [spec.family(interval) for spec in METRICS]


def initial_families(interval: float) -> list[Metric]:
    """What /metrics shows before the first refresh: build info and preshift_up 0."""
    info = SPECS["preshift_build_info"].family(interval)
    info.add_metric([__version__], 1)
    up = SPECS["preshift_up"].family(interval)
    up.add_metric([], 0)
    return [info, up]


Add = Callable[[str, Sequence[str], float], None]  # (metric name, label values, value)
#: Up to this many (component, node) pairs, preshift_replicas has every known component on
#: every node; beyond it (10,000 components × 100 nodes would be 10^6 series), only the pairs
#: where a replica was ever seen.
ZERO_FILL_PAIRS = 50_000


def families_from(snap: Snapshot) -> list[Metric]:
    """All families with their samples, from one snapshot. Pure: no I/O, no clock."""
    fams = {spec.name: spec.family(snap.interval) for spec in METRICS}

    def add(name: str, labels: Sequence[str], value: float) -> None:
        fams[name].add_metric(labels, value)

    fill(snap, add)
    return [f for f in fams.values() if f.samples]


def fill(snap: Snapshot, add: Add) -> None:
    """Call `add` for every sample of `snap`, family by family in the order of a family's
    samples (the order of families does not matter). Pure: no I/O, no clock."""
    add("preshift_build_info", [__version__], 1)
    add("preshift_up", [], int(snap.up))
    for source in SOURCES:
        add("preshift_source_up", [source], int(snap.sources_up.get(source, False)))
    add("preshift_refresh_interval_seconds", [], snap.interval)
    add("preshift_snapshot_timestamp_seconds", [], snap.taken_at)
    add("preshift_snapshot_stale", [], int(snap.stale))
    add("preshift_last_success_timestamp_seconds", [], snap.last_success)
    add("preshift_refreshes_total", [], snap.refreshes)
    add("preshift_refresh_duration_seconds", [], snap.duration)
    for stage in STAGES:
        outcome = snap.stages[stage]
        add("preshift_refresh_errors_total", [stage], snap.errors_total.get(stage, 0))
        add("preshift_refresh_stage_duration_seconds", [stage], outcome.duration)
        add("preshift_refresh_stage_last_success_timestamp_seconds", [stage],
            outcome.last_success)
    for part in ASSESS_PARTS:
        add("preshift_refresh_stage_duration_seconds", [part], snap.assess_timings.get(part, 0.0))
    add("preshift_risk_tolerance_ratio", [], snap.risk_tolerance)

    fp = snap.footprint
    nodes = [n.name for n in fp.nodes]
    for n in fp.nodes:
        add("preshift_node_info",
            [n.name, n.labels.host, n.labels.rack, n.labels.site, n.engine_id or ""], 1)
        add("preshift_node_up", [n.name], int(n.reachable))
    running = fp.running_counts()
    every = len(snap.components) * len(nodes) <= ZERO_FILL_PAIRS
    for comp in snap.components:
        for node in nodes:
            if every or (comp, node) in snap.seen_pairs or (comp, node) in running:
                add("preshift_replicas", [comp, node], running.get((comp, node), 0))
    for r in sorted(fp.replicas, key=lambda r: (r.component, r.node, r.name)):
        add("preshift_replica_info", [r.component, r.name, r.node, r.state], 1)

    if snap.failures_restored:
        _add_failures(snap, nodes, add)
    signals_failed = snap.stages["signals"].status is Status.FAILED
    for signal in sorted(snap.signal_series):
        add("preshift_signal_series", [signal], snap.signal_series[signal])
        add("preshift_signal_points", [signal], snap.signal_points.get(signal, 0))
        fresh = not signals_failed and signal not in snap.signals.errors
        add("preshift_signal_up", [signal], int(fresh))
    if snap.assessment is not None:
        add_assessment(snap.assessment, add)


def _add_failures(snap: Snapshot, nodes: list[str], add: Add) -> None:
    """Failure counters, zero-filled for known series (only once restored, see Snapshot)."""
    counts = snap.failures.by_component
    # Sorted by (component, node, reason) without sorting every key at once: one C-level
    # sort of 40,000 tuples (10,000 components) holds the GIL for ~50 ms.
    reasons: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for comp, node in snap.seen_pairs:
        reasons[comp][node].update(COMPONENT_REASONS)
    for comp, node, reason in counts:
        reasons[comp][node].add(reason)
    for comp in sorted(reasons):
        for node, known in sorted(reasons[comp].items()):
            for reason in sorted(known):
                add("preshift_component_failures_total", [comp, node, reason],
                    counts.get((comp, node, reason), 0.0))
    by_node = dict.fromkeys(((n, reason) for n in nodes for reason in NODE_REASONS), 0.0)
    by_node.update(snap.failures.by_node)
    for (node, reason), count in sorted(by_node.items()):
        add("preshift_node_failures_total", [node, reason], count)
    add("preshift_failures_last_event_timestamp_seconds", [], snap.failures.last_event_ts)


def render_docs() -> str:
    """docs/metrics.md, generated from METRICS (see exporter/metrics_doc.py)."""
    from .metrics_doc import render_docs as render

    return render()


if __name__ == "__main__":
    sys.stdout.write(render_docs())
