"""Issue 3 end to end: the simulator degrades node n2; the exporter's forecasts lower the score
of the replicas on n2 before the signal crosses its limit; the desired footprint moves them;
the discrepancy rises; the real Prometheus, evaluating rules/, fires the alert. And a steady
world over many refreshes: no alert, no flapping."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from preshift.testbed import Testbed

from .conftest import SIMULATOR
from .stack import Exporter, promql, wait_for

pytestmark = pytest.mark.integration
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
LIMIT = 85.0  # the default temperature signal's limit (preshift/config.py)
ALERT = "PreshiftFootprintDiscrepancy"


def place_web(tb: Testbed) -> None:
    for node in ("n1", "n2", "n3"):
        tb.client(node).containers.run(
            "preshift-box:latest", HTTPD, name=f"web-{node}", detach=True, init=True,
            labels={"preshift.service": "web"},
        )


def alerts(tb: Testbed) -> list[dict[str, Any]]:
    r = requests.get(f"{tb.prometheus_url}/api/v1/alerts", timeout=5)
    r.raise_for_status()
    return [a for a in r.json()["data"]["alerts"] if a["labels"].get("alertname") == ALERT]


def hps_by_node(exporter: Exporter) -> dict[str, float]:
    body = exporter.footprint()
    return {
        s["node"]: s["hps"]
        for s in body.get("scores", {}).get("replicas", [])
        if s["component"] == "web"
    }


@pytest.fixture
def web(testbed: Testbed, exporter: Exporter):
    testbed.reset()
    place_web(testbed)
    wait_for(lambda: len(hps_by_node(exporter)) == 3, 30, "scores of the 3 web replicas")
    yield testbed
    requests.delete(f"http://{SIMULATOR}/api/v1/nodes/n2/temperature_celsius", timeout=5)
    testbed.reset()


def test_steady_world_raises_no_alert_and_does_not_flap(web: Testbed, exporter: Exporter) -> None:
    entries_seen, samples = set(), 0
    deadline = time.monotonic() + 40  # ~40 refreshes at refresh_interval 1s
    while time.monotonic() < deadline:
        body = exporter.footprint()
        plan = body.get("plan", {})
        entries_seen.update((e["action"], e["replica"]) for e in plan.get("entries", []))
        assert plan.get("discrepancy", {}).get("web", 0.0) == 0.0, plan
        samples += 1
        time.sleep(1)
    assert samples >= 20
    assert entries_seen == set(), f"moves planned in a steady world: {entries_seen}"
    assert alerts(web) == []
    scores = hps_by_node(exporter)
    assert min(scores.values()) > 80, scores


def test_degrading_node_lowers_scores_before_the_limit_and_fires_the_alert(
    web: Testbed, exporter: Exporter
) -> None:
    tb = web
    start = time.monotonic()
    # n2 heats up: 50 °C → 95 °C over 100 s; the 85 °C limit is crossed ~78 s from now
    r = requests.put(
        f"http://{SIMULATOR}/api/v1/nodes/n2/temperature_celsius",
        json={"ramp": {"from": 50, "to": 95, "over": "100s"}, "noise": 0.3}, timeout=5,
    )
    assert r.status_code == 200, r.text

    def n2_clearly_lowest() -> dict[str, float] | None:
        s = hps_by_node(exporter)
        others = [v for n, v in s.items() if n != "n2"]
        return s if len(s) == 3 and others and s["n2"] < min(others) - 10 else None

    scores = wait_for(n2_clearly_lowest, 120, "the score of web on n2 to fall below the others")
    lowered_at = time.monotonic() - start
    temp = promql(tb.prometheus_url, 'max(node_hwmon_temp_celsius{node="n2"})')[0]["value"]
    assert temp < LIMIT, f"score fell only after the limit was crossed ({temp} °C)"

    # the desired footprint moves the replica off n2, with a reason
    body = wait_for(
        lambda: (lambda b: b if any(
            e["from_node"] == "n2" for e in b.get("plan", {}).get("entries", [])
        ) else None)(exporter.footprint()),
        30, "a plan entry moving web off n2",
    )
    entry = next(e for e in body["plan"]["entries"] if e["from_node"] == "n2")
    assert entry["component"] == "web" and entry["to_node"] in ("n1", "n3")
    assert entry["reason"]
    assert "n2" not in body["plan"]["desired"]["web"]
    assert body["plan"]["discrepancy"]["web"] > body["plan"]["threshold"]["web"]

    # the discrepancy reaches Prometheus and the rule fires (for: 1m)
    wait_for(
        lambda: promql(tb.prometheus_url, 'preshift_discrepancy_ratio{component="web"} > 0'),
        30, "the discrepancy in Prometheus",
    )
    firing = wait_for(
        lambda: [a for a in alerts(tb) if a["state"] == "firing"], 150, f"{ALERT} to fire"
    )
    assert firing[0]["labels"]["component"] == "web"
    print(f"score lowered after {lowered_at:.0f} s at {temp:.1f} °C (limit {LIMIT}); "
          f"scores {scores}; alert firing after {time.monotonic() - start:.0f} s")
