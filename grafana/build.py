"""Preshift's Grafana dashboards as code (grafana-foundation-sdk), written as committed JSON.

Regenerate after changing this file (the unit test fails until the JSON matches):

    .venv/bin/python grafana/build.py            # writes grafana/dashboards/*.json
    .venv/bin/python grafana/build.py --out DIR  # elsewhere (the test does this)

Output is deterministic: sorted keys, two-space indent, panel ids numbered in order, no
timestamps. Every panel, query, variable and annotation uses the provisioned data source
(uid DATASOURCE_UID, see grafana/provisioning/datasources/prometheus.yml).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import stat as sb
from grafana_foundation_sdk.builders import table as tb
from grafana_foundation_sdk.builders import timeseries as tsb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: import preshift

from preshift.config import DEFAULT_SIGNALS, SignalConfig  # noqa: E402

DATASOURCE_UID = "preshift-prometheus"
DS = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
TAGS = ["preshift"]
#: The exporter's and the webhook's scrape jobs (rules/*.yml use the same names).
EXPORTER_JOB = "preshift"
WEBHOOK_JOB = "preshift-webhook"
#: Migrations that finished, as annotations (the webhook's counter; one per result).
MIGRATIONS_ANNOTATION = (
    "sum by (result) (changes(preshift_webhook_migrations_finished_total[1m])) > 0"
)
#: Nodes where the selected component runs a replica now.
COMPONENT_NODES = 'max by (node) (preshift_replicas{component="$component"}) > 0'


# -- small builders ----------------------------------------------------------------------

def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> pb.Dataquery:
    """A Prometheus query on the provisioned data source."""
    b = pb.Dataquery().expr(expr).datasource(DS)
    if legend:
        b = b.legend_format(legend)
    b = b.instant() if instant else b.range()
    if table:
        b = b.format(pm.PromQueryFormat.TABLE)
    return b


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps]
    )


#: HPS colours: red below 50, orange below 80, green above (0-100, lower = riskier).
HPS_STEPS = ((None, "red"), (50.0, "orange"), (80.0, "green"))
#: 0/1 health gauges: red at 0, green at 1.
UP_STEPS = ((None, "red"), (1.0, "green"))


def ts(title: str, description: str, *targets: pb.Dataquery, unit: str = "short",
       w: int = 12, h: int = 8, minimum: float | None = None,
       maximum: float | None = None,
       limit: float | None = None) -> tsb.Panel:
    """A time series panel; `limit` draws a dashed red threshold line at that value."""
    p = (tsb.Panel().title(title).description(description).datasource(DS).unit(unit)
         .span(w).height(h).line_width(1).fill_opacity(10))
    for t in targets:
        p = p.with_target(t)
    if minimum is not None:
        p = p.min(minimum)
    if maximum is not None:
        p = p.max(maximum)
    if limit is not None:
        p = (p.thresholds(_thresholds((None, "transparent"), (limit, "red")))
             .thresholds_style(cb.GraphThresholdsStyleConfig().mode(
                 cm.GraphTresholdsStyleMode.DASHED)))
    return p


def stat(title: str, description: str, target: pb.Dataquery, *, unit: str = "short",
         steps: Iterable[tuple[float | None, str]] = ((None, "green"),), w: int = 6,
         h: int = 4, decimals: float | None = None) -> sb.Panel:
    """A single-value panel coloured by `steps`."""
    p = (sb.Panel().title(title).description(description).datasource(DS).unit(unit)
         .span(w).height(h).with_target(target).thresholds(_thresholds(*steps)))
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def table(title: str, description: str, target: pb.Dataquery, *, w: int = 24,
          h: int = 8) -> tb.Panel:
    """A table of an instant query's series."""
    return (tb.Panel().title(title).description(description).datasource(DS)
            .span(w).height(h).with_target(target))


def migrations_annotation() -> db.AnnotationQuery:
    """Finished migrations from the webhook's counter, as annotations on every time panel."""
    return (db.AnnotationQuery().name("Migrations finished").datasource(DS).enable(True)
            .icon_color("purple").expr(MIGRATIONS_ANNOTATION))


def component_variable() -> db.QueryVariable:
    """`$component`: the components the exporter knows (one at a time)."""
    return (db.QueryVariable("component").label("Component").datasource(DS)
            .query("label_values(preshift_replicas, component)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC))


def base(uid: str, title: str, description: str) -> db.Dashboard:
    """A dashboard with the common settings and a link to the other Preshift dashboards."""
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS)
            .refresh("30s").time("now-1h", "now").timezone("browser").editable()
            .link(db.DashboardLink("Preshift").type(dm.DashboardLinkType.DASHBOARDS)
                  .tags(TAGS).as_dropdown(True).include_vars(False).keep_time(True)))


# -- the dashboards ----------------------------------------------------------------------

def overview() -> db.Dashboard:
    """Lowest HPS, discrepancy against threshold, alerts firing, migrations as annotations."""
    d = base("preshift-overview", "Preshift / Overview",
             "Risk of every component at a glance: the lowest Health Projection Score, the "
             "footprint discrepancy against its threshold, and the alerts that fire.")
    d = d.annotation(migrations_annotation())
    d = d.with_row(db.Row("Risk"))
    d = d.with_panel(stat(
        "Lowest HPS", "Lowest Health Projection Score over all components (0-100, lower = "
        "riskier).", q("min(component:preshift_health_projection_score:min)", instant=True),
        steps=HPS_STEPS, decimals=1))
    d = d.with_panel(stat(
        "HPS at the risk tolerance", "A replica whose HPS is below this value is acted on: "
        "100 x (1 - risk tolerance).",
        q("100 * (1 - max(preshift_risk_tolerance_ratio))", instant=True), decimals=1))
    d = d.with_panel(stat(
        "Components past their threshold", "Components whose footprint discrepancy is above "
        "its threshold (they should be migrated).",
        q("count(component:preshift_discrepancy_excess:ratio > 0) or vector(0)", instant=True),
        steps=((None, "green"), (1.0, "orange"))))
    d = d.with_panel(stat(
        "Alerts firing", "Alerts in state firing, all rules (Preshift's and others).",
        q('count(ALERTS{alertstate="firing"}) or vector(0)', instant=True),
        steps=((None, "green"), (1.0, "red"))))
    d = d.with_panel(ts(
        "Lowest HPS per component", "component:preshift_health_projection_score:min "
        "(rules/preshift-footprint.rules.yml).",
        q("component:preshift_health_projection_score:min", "{{component}}"),
        minimum=0, maximum=100))
    d = d.with_panel(ts(
        "HPS per node", "Health Projection Score of each node itself (node-scoped signals and "
        "the node's own failures).",
        q("preshift_node_health_projection_score", "{{node}}"), minimum=0, maximum=100))
    d = d.with_row(db.Row("Footprint discrepancy"))
    d = d.with_panel(ts(
        "Discrepancy and threshold per component", "Share of the component's replicas not "
        "where the desired footprint puts them, and the threshold above which it is migrated.",
        q("max by (component) (preshift_discrepancy_ratio)", "{{component}} discrepancy"),
        q("max by (component) (preshift_discrepancy_threshold_ratio)",
          "{{component}} threshold"),
        unit="percentunit", minimum=0, maximum=1))
    d = d.with_panel(ts(
        "Excess over threshold", "Discrepancy minus threshold; above 0 the alert "
        "PreshiftFootprintDiscrepancy fires (after 1m).",
        q("component:preshift_discrepancy_excess:ratio", "{{component}}"),
        unit="percentunit", limit=0.0))
    d = d.with_row(db.Row("Alerts and plan"))
    d = d.with_panel(table(
        "Alerts firing", "Every alert firing now, with its labels.",
        q('ALERTS{alertstate="firing"}', instant=True, table=True), w=12))
    d = d.with_panel(table(
        "Plan entries", "Changes the plan holds, by component and action (empty when the "
        "footprint is where it should be).",
        q("sum by (component, action) (preshift_plan_entries)", instant=True, table=True),
        w=12))
    return d


def signal_expr(s: SignalConfig) -> str:
    """The signal's own query, restricted to the nodes or replicas of `$component`."""
    if s.scope == "node":
        return (f"({s.query}) and on ({s.node_label}) "
                f"({COMPONENT_NODES.replace('(node)', f'({s.node_label})')})")
    replicas = (f'label_replace(preshift_replica_info{{component="$component"}}, '
                f'"{s.component_label}", "$1", "replica", "(.*)")')
    return f"({s.query}) and on ({s.component_label}) {replicas}"


def component() -> db.Dashboard:
    """Drill-down of one component: its replicas' scores and factors, its nodes' signals."""
    d = base("preshift-component", "Preshift / Component",
             "One component ($component): HPS per replica and its factors, the footprint, and "
             "the history of the signals on the nodes it runs on with their limits.")
    d = d.with_variable(component_variable()).annotation(migrations_annotation())
    d = d.with_row(db.Row("$component"))
    d = d.with_panel(stat(
        "Lowest HPS", "Lowest Health Projection Score of the component's running replicas.",
        q('component:preshift_health_projection_score:min{component="$component"}',
          instant=True), steps=HPS_STEPS, decimals=1))
    d = d.with_panel(stat(
        "Running replicas", "Running replicas over all nodes.",
        q('sum(preshift_replicas{component="$component"})', instant=True)))
    d = d.with_panel(stat(
        "Discrepancy", "Share of replicas not where the desired footprint puts them.",
        q('max(preshift_discrepancy_ratio{component="$component"})', instant=True),
        unit="percentunit", steps=((None, "green"), (0.01, "orange"))))
    d = d.with_panel(stat(
        "Threshold", "Discrepancy above which the component is migrated.",
        q('max(preshift_discrepancy_threshold_ratio{component="$component"})', instant=True),
        unit="percentunit"))
    d = d.with_panel(ts(
        "HPS per replica", "Health Projection Score of each running replica (0-100).",
        q('preshift_health_projection_score{component="$component"}',
          "{{replica}} on {{node}}"), minimum=0, maximum=100))
    d = d.with_panel(ts(
        "Failure probability by factor", "Projected failure probability of each replica from "
        "each factor (history, dependency, environment, node); HPS = 100 x product(1 - p).",
        q('preshift_failure_probability_ratio{component="$component"}',
          "{{replica}} {{factor}}"), unit="percentunit", minimum=0, maximum=1))
    d = d.with_panel(ts(
        "Replicas per node", "Running replicas of the component on each node.",
        q('preshift_replicas{component="$component"}', "{{node}}")))
    d = d.with_panel(ts(
        "Discrepancy and threshold", "The component's discrepancy against its threshold.",
        q('preshift_discrepancy_ratio{component="$component"}', "discrepancy"),
        q('preshift_discrepancy_threshold_ratio{component="$component"}', "threshold"),
        unit="percentunit", minimum=0, maximum=1))
    d = d.with_row(db.Row("Its nodes: scores and forecasts"))
    d = d.with_panel(ts(
        "HPS of its nodes", "Health Projection Score of the nodes the component runs on.",
        q(f"preshift_node_health_projection_score and on (node) ({COMPONENT_NODES})",
          "{{node}}"), minimum=0, maximum=100))
    d = d.with_panel(ts(
        "Breach probability per signal", "Probability that the signal's forecast crosses its "
        "limit within the horizon: node-scoped signals on its nodes, component-scoped ones "
        "on its replicas. (The exporter does not export the forecast values themselves.)",
        q('preshift_signal_breach_probability_ratio{replica=""} and on (node) '
          f"({COMPONENT_NODES})", "{{signal}} {{node}}"),
        q('preshift_signal_breach_probability_ratio{replica!=""} and on (replica) '
          'preshift_replica_info{component="$component"}', "{{signal}} {{replica}}"),
        unit="percentunit", minimum=0, maximum=1))
    d = d.with_row(db.Row("Signal history (default signals, dashed line: the limit)"))
    for s in DEFAULT_SIGNALS:
        legend = "{{%s}}" % (s.node_label if s.scope == "node" else s.component_label)
        d = d.with_panel(ts(
            f"Signal {s.name}", f"{s.query} (scope {s.scope}; limit {s.limit:g}, "
            f"{s.direction}), on the nodes or replicas of $component. The defaults of "
            "preshift/config.py: edit grafana/build.py if your configuration differs.",
            q(signal_expr(s), legend), limit=s.limit))
    return d


def migrations() -> db.Dashboard:
    """The webhook's migrations: canary weight, steps, durations, rollbacks, queue."""
    d = base("preshift-migrations", "Preshift / Migrations",
             f"Migrations carried out by the webhook (scrape job {WEBHOOK_JOB}): canary "
             "weight, executor steps, durations, rollbacks and the notification queue.")
    d = d.annotation(migrations_annotation())
    d = d.with_panel(ts(
        "Canary weight", "Traffic share of each migration's new instance (0 once finished).",
        q("max by (component, migration) (preshift_webhook_canary_weight_percent)",
          "{{component}} {{migration}}"), unit="percent", minimum=0, maximum=100, w=24))
    d = d.with_panel(ts(
        "Executor steps by action and outcome", "Steps per second.",
        q("sum by (action, outcome) (rate(preshift_webhook_steps_total[$__rate_interval]))",
          "{{action}} {{outcome}}"), unit="ops"))
    d = d.with_panel(ts(
        "Migrations finished by result", "Migrations that reached a terminal phase in the "
        "last hour, by result.",
        q("sum by (result) (increase(preshift_webhook_migrations_finished_total[1h]))",
          "{{result}}")))
    d = d.with_panel(ts(
        "Migration duration quantiles", "From planned to terminal, over the migrations that "
        "finished in the last hour (all results).",
        *(q(f"histogram_quantile({p}, sum by (le) "
            "(increase(preshift_webhook_migration_duration_seconds_bucket[1h])))",
            f"p{round(p * 100)}") for p in (0.5, 0.9, 0.99)), unit="s"))
    d = d.with_panel(ts(
        "Rollbacks per component", "Migrations that started rolling back or restoring the "
        "original in the last hour (the alert PreshiftRepeatedRollbacks fires above 2).",
        q("sum by (component) (increase(preshift_webhook_rollbacks_total[1h]))",
          "{{component}}"), limit=2.0))
    d = d.with_panel(ts(
        "Queue depth", "Journaled notifications the executor has not handled yet (the alert "
        "PreshiftNotificationBacklog fires above 50).",
        q("max by (instance) (preshift_webhook_queue_depth)", "{{instance}}"), limit=50.0))
    d = d.with_panel(table(
        "Finished in the selected range", "Migrations finished in the dashboard's time range, "
        "by result.",
        q("sum by (result) (increase(preshift_webhook_migrations_finished_total[$__range]))",
          instant=True, table=True), w=12))
    return d


def health() -> db.Dashboard:
    """Preshift's own health: exporter refreshes and freshness, the webhook's executor."""
    d = base("preshift-health", "Preshift / Health",
             f"Preshift itself: the exporter (job {EXPORTER_JOB}) refreshing fresh data, the "
             f"webhook (job {WEBHOOK_JOB}) holding its leader lock, ticking and accepting "
             "notifications.")
    d = d.with_row(db.Row("Exporter"))
    d = d.with_panel(stat(
        "Exporter scraped", "up of the exporter's scrape job.",
        q(f'min(up{{job="{EXPORTER_JOB}"}})', instant=True), steps=UP_STEPS))
    d = d.with_panel(stat(
        "Refresh up", "preshift_up: 1 when no stage of the last refresh failed outright.",
        q("min(preshift_up)", instant=True), steps=UP_STEPS))
    d = d.with_panel(stat(
        "Snapshot stale", "1 when part of the served snapshot is the last good data.",
        q("max(preshift_snapshot_stale)", instant=True),
        steps=((None, "green"), (1.0, "red"))))
    d = d.with_panel(stat(
        "Snapshot age", "Time since the refresh that built the served snapshot started.",
        q("time() - max(preshift_snapshot_timestamp_seconds)", instant=True), unit="s",
        steps=((None, "green"), (120.0, "red"))))
    d = d.with_panel(ts(
        "Snapshot and assessment age", "Seconds since the served snapshot and the served "
        "assessment were taken; the assessment falls behind while its inputs are stale.",
        q("time() - preshift_snapshot_timestamp_seconds", "snapshot {{instance}}"),
        q("time() - preshift_assessment_timestamp_seconds", "assessment {{instance}}"),
        unit="s"))
    d = d.with_panel(ts(
        "Refresh duration", "Time the last refresh took, in all and per stage (assess_* are "
        "parts of assess).",
        q("preshift_refresh_duration_seconds", "all {{instance}}"),
        q("preshift_refresh_stage_duration_seconds", "{{stage}}"), unit="s"))
    d = d.with_panel(ts(
        "Refresh errors by stage", "Refreshes per second in which the stage failed or partly "
        "failed.",
        q("sum by (stage) (rate(preshift_refresh_errors_total[$__rate_interval]))",
          "{{stage}}"), unit="ops"))
    d = d.with_panel(ts(
        "Sources, nodes and signals up", "1 = read in the last refresh.",
        q("preshift_source_up", "source {{source}}"),
        q("preshift_node_up", "node {{node}}"),
        q("preshift_signal_up", "signal {{signal}}"), minimum=0, maximum=1))
    d = d.with_panel(ts(
        "Forecast fits", "ETS fits per second by result, and the series waiting for a fit.",
        q("sum by (result) (rate(preshift_forecast_fits_total[$__rate_interval]))",
          "fits {{result}}"),
        q("preshift_forecast_fit_backlog_series", "backlog")))
    d = d.with_panel(ts(
        "Forecast fitted series", "Series of each signal forecast by a fitted ETS model.",
        q("preshift_forecast_fitted_series", "{{signal}}")))
    d = d.with_row(db.Row("Webhook"))
    d = d.with_panel(stat(
        "Webhook scraped", "up of the webhook's scrape job.",
        q(f'min(up{{job="{WEBHOOK_JOB}"}})', instant=True), steps=UP_STEPS))
    d = d.with_panel(stat(
        "Leaders", "Workers holding the executor's leader lock; should be 1.",
        q("sum(preshift_webhook_leader)", instant=True),
        steps=((None, "red"), (1.0, "green"), (2.0, "red"))))
    d = d.with_panel(stat(
        "Last executor tick", "Seconds since the leader's executor last finished a tick (the "
        "alert PreshiftExecutorStalled fires above 60).",
        q("time() - max(preshift_webhook_executor_last_tick_timestamp_seconds)", instant=True),
        unit="s", steps=((None, "green"), (60.0, "red"))))
    d = d.with_panel(stat(
        "Queue depth", "Journaled notifications not handled yet.",
        q("max(preshift_webhook_queue_depth)", instant=True),
        steps=((None, "green"), (50.0, "orange"))))
    d = d.with_panel(ts(
        "Executor ticks", "Ticks per second by result.",
        q("sum by (result) (rate(preshift_webhook_executor_ticks_total[$__rate_interval]))",
          "{{result}}"), unit="ops"))
    d = d.with_panel(ts(
        "Rejected notifications", "Notification requests refused per second, by reason "
        "(Alertmanager does not retry a 4xx: these alerts are lost).",
        q("sum by (reason) "
          "(rate(preshift_webhook_notifications_rejected_total[$__rate_interval]))",
          "{{reason}}"), unit="reqps"))
    d = d.with_panel(ts(
        "Notifications received", "Alerts received per second by status, and the "
        "duplicates among them.",
        q("sum by (status) "
          "(rate(preshift_webhook_notifications_received_total[$__rate_interval]))",
          "received {{status}}"),
        q("sum by (status) "
          "(rate(preshift_webhook_notifications_deduplicated_total[$__rate_interval]))",
          "duplicate {{status}}"), unit="ops"))
    d = d.with_panel(ts(
        "Intake duration p99", "99th percentile of authenticate + validate + journal.",
        q("histogram_quantile(0.99, sum by (le) "
          "(rate(preshift_webhook_intake_duration_seconds_bucket[$__rate_interval])))",
          "p99"), unit="s"))
    return d


DASHBOARDS = {
    "preshift-overview": overview,
    "preshift-component": component,
    "preshift-migrations": migrations,
    "preshift-health": health,
}


# -- serialisation -----------------------------------------------------------------------

def _number_panels(panels: list[dict[str, Any]], start: int = 1) -> int:
    """Stable panel ids: 1, 2, ... in layout order (rows and their panels included); query
    refIds A, B, ... per panel; no `"options": null` (Grafana then uses its defaults)."""
    n = start
    for p in panels:
        p["id"] = n
        n += 1
        if "options" in p and p["options"] is None:
            del p["options"]
        for i, t in enumerate(p.get("targets", [])):
            t["refId"] = chr(ord("A") + i)
        n = _number_panels(p.get("panels", []), n)
    return n


def render(name: str) -> str:
    """The JSON text of one dashboard, byte-stable."""
    doc: dict[str, Any] = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    _number_panels(doc.get("panels", []))
    for a in doc.get("annotations", {}).get("list", []):
        if a.get("expr") == MIGRATIONS_ANNOTATION:
            a.update(titleFormat="Migration {{result}}", tagKeys="result", step="60s",
                     useValueForTime=False)
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path) -> list[Path]:
    """Write every dashboard to `out`/<uid>.json; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DASHBOARDS:
        path = out / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        paths.append(path)
    return paths


# -- what the tests check ---------------------------------------------------------------

#: Values for Grafana's variables when a query is run outside Grafana (tests).
SUBSTITUTIONS = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$component": "web",
}


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """`expr` with the dashboard variables replaced (longest name first)."""
    values = SUBSTITUTIONS if values is None else values
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query and annotation of a dashboard document; a query
    variable `label_values(M, L)` counts as the query `M`."""
    out: list[tuple[str, str]] = []

    def panels(ps: list[dict[str, Any]]) -> None:
        for p in ps:
            for t in p.get("targets", []):
                out.append((f"panel {p['id']} {p.get('title', '')!r}", t["expr"]))
            panels(p.get("panels", []))

    panels(doc.get("panels", []))
    for a in doc.get("annotations", {}).get("list", []):
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"]))
    for v in doc.get("templating", {}).get("list", []):
        query = v.get("query", "")
        if v.get("type") == "query" and query.startswith("label_values("):
            out.append((f"variable {v['name']}", query[13:-1].rsplit(",", 1)[0].strip()))
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: write the dashboards (default: grafana/dashboards/)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "dashboards",
                    help="directory to write <uid>.json into (default: %(default)s)")
    args = ap.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
