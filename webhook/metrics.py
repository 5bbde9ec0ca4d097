"""The webhook's own /metrics, correct with several gunicorn workers.

Under gunicorn, `webhook/gunicorn.conf.py` sets PROMETHEUS_MULTIPROC_DIR (a directory next
to the journal, emptied at start) before any worker imports prometheus_client, so every
worker writes its samples to its own files there and a scrape, whichever worker answers it,
merges them all (prometheus_client's multiprocess mode; `child_exit` marks a dead worker's
live gauges gone). Without that variable (tests, `flask run`) the metrics live in the app's
own registry.

Multiprocess mode cannot run custom collectors nor remove a series, so everything here is
a plain counter, gauge or histogram, updated where the event happens; nothing is computed on
a scrape. Gauges set by the executor thread use `livemostrecent`: only the leader sets them,
the leader can change, and a weight goes down as well as up (a rollback), so neither the
max nor the sum of the workers' values would be right; the newest value of a live worker is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from preshift.act.events import WITHHELD_REASONS
from preshift.act.journal import Migration
from preshift.act.phases import TERMINAL, Phase

EXTENSION = "preshift.metrics"
PREFIX = "preshift_webhook_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Bounded label values of preshift_webhook_notifications_rejected_total.
REJECT_REASONS = (
    "unauthorized", "too_large", "content_type", "not_json", "invalid", "version",
    "journal_unavailable",
)
STATUSES = ("firing", "resolved")
RESULTS = tuple(sorted(str(p) for p in TERMINAL))
ROLLBACK_PHASES = frozenset({Phase.ROLLING_BACK, Phase.RESTORING})

#: The family table: (kind, name without prefix, HELP, labels, extra kwargs). docs/webhook.md
#: lists the same families; tests check each is exposed.
FAMILIES: tuple[tuple[str, str, str, tuple[str, ...], dict[str, Any]], ...] = (
    ("counter", "notifications_received",
     "Alerts received in valid notifications (one journal row each, duplicates included), "
     "by alert status.", ("status",), {}),
    ("counter", "notifications_deduplicated",
     "Alerts already in the journal (same status, fingerprint and startsAt): Alertmanager HA "
     "peers and retries send duplicates; they start nothing.", ("status",), {}),
    ("counter", "notifications_rejected",
     "Notification requests refused, by reason (unauthorized, too_large, content_type, "
     "not_json, invalid, version, journal_unavailable); nothing of them was journaled.",
     ("reason",), {}),
    ("counter", "notifications_unroutable",
     "Alerts without a component or service label: journaled, then ignored by the executor "
     "(fix the alert rule or the route).", (), {}),
    ("histogram", "intake_duration_seconds",
     "Time to authenticate, validate and journal one notification until the 202 answer.",
     (), {"buckets": (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)}),
    ("counter", "migrations_finished",
     "Migrations that reached a terminal phase, by that phase (result).", ("result",), {}),
    ("histogram", "migration_duration_seconds",
     "Duration of finished migrations, from planned to their terminal phase, by result.",
     ("result",), {"buckets": (1, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)}),
    ("counter", "steps",
     "Executor steps taken, by action and outcome.", ("action", "outcome"), {}),
    ("counter", "rollbacks",
     "Migrations that started rolling back or restoring the original, by component.",
     ("component",), {}),
    ("gauge", "canary_weight_percent",
     "Current traffic share of each migration's new instance, percent (updated every "
     "executor tick; 0 once the migration has finished).", ("migration", "component"),
     {"multiprocess_mode": "livemostrecent"}),
    ("gauge", "queue_depth",
     "Journaled notifications the executor has not handled yet (set by the executor every "
     "tick, not computed on scrape).", (), {"multiprocess_mode": "livemostrecent"}),
    ("gauge", "leader",
     "1 in the worker process that holds the executor's leader lock, 0 in the others "
     "(one series per live worker: label pid).", (), {"multiprocess_mode": "liveall"}),
    ("counter", "executor_ticks",
     "Executor ticks run by the leader, by result (ok, error).", ("result",), {}),
    ("gauge", "executor_last_tick_timestamp_seconds",
     "When the leader's executor last finished a tick (Unix time).", (),
     {"multiprocess_mode": "livemostrecent"}),
    ("counter", "decisions_withheld",
     "Attempts to handle a firing alert that took no decision because the data was not to be "
     "trusted, by reason (plan_unavailable, plan_invalid, plan_stale, plan_too_old, "
     "runtime_unavailable); a retriable one is tried again every few seconds until "
     "migration.progress_deadline.", ("reason",), {}),
    ("gauge", "plan_age_seconds",
     "Age of the exporter's plan (this webhook's clock minus plan.assessed_at) when intake "
     "last read it; read only while alerts are handled.", (),
     {"multiprocess_mode": "livemostrecent"}),
)

_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


@dataclass
class WebhookMetrics:
    """The metric objects, created once per app; `registry` is None in multiprocess mode."""

    registry: CollectorRegistry | None
    m: dict[str, Any]

    @classmethod
    def create(cls, *, multiprocess: bool | None = None) -> WebhookMetrics:
        if multiprocess is None:
            multiprocess = multiprocess_dir() is not None
        # Multiprocess mode: values go to the per-process files whatever the registry, and a
        # scrape builds a fresh registry over the files; registering here would only make a
        # second app in the same process collide.
        registry = None if multiprocess else CollectorRegistry()
        m: dict[str, Any] = {}
        for kind, name, doc, labels, kw in FAMILIES:
            m[name] = _KINDS[kind](PREFIX + name, doc, labels, registry=registry, **kw)
        self = cls(registry, m)
        self._preset()
        return self

    def _preset(self) -> None:
        """Create the bounded label sets at zero, so rates work from the first sample."""
        for s in STATUSES:
            self.m["notifications_received"].labels(s)
            self.m["notifications_deduplicated"].labels(s)
        for r in REJECT_REASONS:
            self.m["notifications_rejected"].labels(r)
        for r in RESULTS:
            self.m["migrations_finished"].labels(r)
        for r in ("ok", "error"):
            self.m["executor_ticks"].labels(r)
        for r in WITHHELD_REASONS:
            self.m["decisions_withheld"].labels(r)

    # intake ----------------------------------------------------------------------------

    def rejected(self, reason: str) -> None:
        self.m["notifications_rejected"].labels(reason).inc()

    def received(self, statuses: list[str], new: list[bool], unroutable: int) -> None:
        for status, is_new in zip(statuses, new, strict=True):
            self.m["notifications_received"].labels(status).inc()
            if not is_new:
                self.m["notifications_deduplicated"].labels(status).inc()
        if unroutable:
            self.m["notifications_unroutable"].inc(unroutable)

    def intake_time(self, seconds: float) -> None:
        self.m["intake_duration_seconds"].observe(seconds)

    # executor --------------------------------------------------------------------------

    def leader(self, held: bool) -> None:
        self.m["leader"].set(1 if held else 0)

    def tick(self, ok: bool, queue_depth: int | None) -> None:
        self.m["executor_ticks"].labels("ok" if ok else "error").inc()
        self.m["executor_last_tick_timestamp_seconds"].set(time.time())
        if queue_depth is not None:
            self.m["queue_depth"].set(queue_depth)

    def weight(self, m: Migration) -> None:
        value = 0 if m.terminal else m.weight
        self.m["canary_weight_percent"].labels(m.id, m.component).set(value)

    def finished_weight(self, migration_id: str, component: str) -> None:
        # Multiprocess mode cannot remove a series; 0 says "no canary any more".
        self.m["canary_weight_percent"].labels(migration_id, component).set(0)

    # exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class MetricsObserver:
    """The executor's observer (the Protocol in preshift/act/events.py): turns its events
    into metrics. Called in the executor thread of the leader."""

    def __init__(self, metrics: WebhookMetrics, *, clock: Any = time.time) -> None:
        self.metrics = metrics
        self.clock = clock

    def on_step(self, m: Migration, action: str, outcome: str) -> None:
        self.metrics.m["steps"].labels(action, outcome).inc()
        self.metrics.weight(m)

    def on_phase(self, m_old: Migration | None, m_new: Migration) -> None:
        old_phase = m_old.phase if m_old is not None else None
        mm = self.metrics.m
        if m_new.phase in ROLLBACK_PHASES and old_phase != m_new.phase:
            mm["rollbacks"].labels(m_new.component).inc()
        if m_new.terminal and (m_old is None or not m_old.terminal):
            result = str(m_new.phase)
            mm["migrations_finished"].labels(result).inc()
            end = m_new.finished_at or self.clock()
            if m_new.created_at:
                mm["migration_duration_seconds"].labels(result).observe(
                    max(0.0, end - m_new.created_at)
                )
        self.metrics.weight(m_new)

    def on_plan(self, age: float) -> None:
        self.metrics.m["plan_age_seconds"].set(age)

    def on_withheld(self, reason: str) -> None:
        if reason in WITHHELD_REASONS:  # a fixed set: never a series per message
            self.metrics.m["decisions_withheld"].labels(reason).inc()


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_endpoint() -> Response:
    """Prometheus text format; merged across workers in multiprocess mode."""
    metrics: WebhookMetrics = current_app.extensions[EXTENSION]
    return Response(metrics.render(), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)


def init_app(app: Flask, metrics: WebhookMetrics) -> None:
    app.extensions[EXTENSION] = metrics
    app.register_blueprint(bp)
