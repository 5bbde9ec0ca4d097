"""Every query of the committed Grafana dashboards (grafana/dashboards/*.json), with the dashboard
variables substituted ($component → web, $__rate_interval → 1m, $__range → 1h), against the
testbed's real Prometheus scraping the real exporter: Prometheus' own parser must accept each
one (status success), and each query over the exporter's metrics (and the recording rules
over them) must return data once a few replicas of `web` run and have scores.

The webhook is not scraped in this testbed, so the queries over preshift_webhook_* metrics
(and `up{job="preshift-webhook"}`) are only checked to parse here; test_migration_e2e.py
checks that they return data after real migrations (its Prometheus scrapes the webhook). So are
the ones that are empty by design in a steady world: the plan's entries (absent when the plan
is empty) and ALERTS (no alert fires)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from preshift.testbed import Testbed
from tests.unit.test_grafana import committed, load_build, metric_names

from .stack import Exporter, promql, wait_for

pytestmark = pytest.mark.integration
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
#: Metrics whose queries may be empty in the testbed (see the module docstring).
MAY_BE_EMPTY = frozenset({"preshift_plan_entries", "ALERTS"})


def query(prom_url: str, expr: str) -> dict[str, Any]:
    """The raw answer of /api/v1/query (a 400 for a bad expression is returned, not raised)."""
    r = requests.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10)
    return r.json()


def must_have_data(expr: str) -> bool:
    """Whether the query reads only what the testbed's exporter (and simulator) provide."""
    if "preshift_webhook_" in expr or "preshift-webhook" in expr:
        return False
    return not metric_names(expr) & MAY_BE_EMPTY


def all_queries() -> list[tuple[str, str]]:
    """(where, substituted PromQL) of every dashboard query."""
    build = load_build()
    return [
        (f"{name} {where}", build.substitute(expr))
        for name, doc in committed().items()
        for where, expr in build.queries(doc)
    ]


@pytest.fixture(scope="module")
def scored_web(testbed: Testbed, exporter: Exporter) -> Any:
    """Three replicas of web (with a memory limit, for the memory_pressure signal), until
    Prometheus has their scores, forecasts and the recording rules over them."""
    testbed.reset()
    for node in ("n1", "n2", "n3"):
        testbed.client(node).containers.run(
            "preshift-box:latest", HTTPD, name=f"web-{node}", detach=True, init=True,
            labels={"preshift.service": "web"}, mem_limit="64m",
        )
    url = testbed.prometheus_url
    wait_for(lambda: len(promql(url, 'preshift_health_projection_score{component="web"}')) == 3,
             60, "scores of the 3 web replicas in Prometheus")
    wait_for(lambda: promql(url, 'component:preshift_health_projection_score:min{component="web"}'),
             30, "the recording rules over the scores")
    yield testbed
    testbed.reset()


def test_every_dashboard_query_parses_and_exporter_queries_return_data(scored_web: Testbed) -> None:
    url = scored_web.prometheus_url
    queries = all_queries()
    assert len(queries) > 40
    for where, expr in queries:
        body = query(url, expr)
        assert body.get("status") == "success", f"{where}: {expr}\n{body}"

    # rates need two samples in their window and the forecasts a few points: poll a while
    pending = {(w, e) for w, e in queries if must_have_data(e)}
    assert len(pending) > 25
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        pending = {(w, e) for w, e in pending if not query(url, e)["data"]["result"]}
        if pending:
            time.sleep(2)
    assert not pending, "queries without data:\n" + "\n".join(
        f"{w}: {e}" for w, e in sorted(pending)
    )


def test_a_bad_query_is_rejected(testbed: Testbed) -> None:
    """The check above can fail: Prometheus rejects what does not parse."""
    body = query(testbed.prometheus_url, "sum by (component (preshift_up)")
    assert body["status"] == "error" and body["errorType"] == "bad_data"
