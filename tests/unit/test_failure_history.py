"""Failure events rebuilt from Prometheus's counters: the pure maths, the queries (checked by
promtool on synthetic series), and the whole path through PrometheusClient on canned answers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from preshift.sense.failure_history import (
    DETAIL,
    component_selector,
    events_from_counters,
    load_failure_history,
    moved_counters_query,
)
from preshift.sense.ports import RangeSeries
from preshift.sense.prometheus import PrometheusClient
from tests.unit.test_sense_prometheus import _Server, ok

T = 1_750_000_000.0
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def rs(labels: dict[str, str], values: list[float], step: float = 60.0) -> RangeSeries:
    ts = T + step * np.arange(len(values), dtype=float)
    return RangeSeries(labels, ts, np.asarray(values, dtype=float))


COMP = {"component": "web", "node": "n1", "reason": "oom"}


def test_each_increase_is_that_many_events_at_the_later_point() -> None:
    # 3 (baseline) → 3 → 4 (+1) → NaN → 6 (+2 across the gap) → 1 (reset: +1) → 1
    events = events_from_counters(
        [rs(COMP, [3, 3, 4, math.nan, 6, 1, 1])], node_level=False
    )
    assert [(round(e.ts - T, 3), e.component, e.node, e.reason) for e in events] == [
        (120.0, "web", "n1", "oom"),
        (239.999, "web", "n1", "oom"),  # two in one step: 1 ms apart, both kept
        (240.0, "web", "n1", "oom"),
        (300.0, "web", "n1", "oom"),
    ]
    assert all(e.detail == DETAIL and e.replica == "" for e in events)


def test_the_first_point_is_a_baseline_and_until_caps() -> None:
    assert events_from_counters([rs(COMP, [5])], node_level=False) == []
    events = events_from_counters([rs(COMP, [0, 1, 2, 3])], node_level=False, until=T + 120)
    assert [e.ts - T for e in events] == [60.0, 120.0]


def test_node_counters_and_unusable_series() -> None:
    node = rs({"node": "n2", "reason": "unreachable", "component": "ignored"}, [0, 1])
    bad = [
        rs({"node": "n1", "reason": "bogus"}, [0, 1]),  # not a failure reason
        rs({"reason": "oom", "component": "web"}, [0, 1]),  # no node
        rs({"node": "n1", "reason": "oom"}, [0, 1]),  # component counter without component
    ]
    (event,) = events_from_counters([node], node_level=True)
    assert (event.node, event.component, event.reason) == ("n2", "", "unreachable")
    assert events_from_counters(bad, node_level=False) == []
    huge = events_from_counters([rs(COMP, [0, 1e9])], node_level=False)
    assert len(huge) == 1000  # a broken counter is not history


def test_selector_escapes_names_for_re2_and_promql() -> None:
    sel = component_selector(["web", 'a.b"c', "x|y"])
    assert sel == ('preshift_component_failures_total{component=~"^('
                   + 'a\\\\.b\\"c|web|x\\\\|y)$"}')


def test_moved_counters_query_finds_what_moved(tmp_path: Path) -> None:
    """Evaluated by promtool at 60m over a 30m window, scraped every minute."""
    counter = "preshift_component_failures_total"
    series = {
        "rose": "0x40 1x30",  # +1 at 40m, inside the window
        "flat": "2x70",  # failed long ago, nothing since
        "old": "0x10 1x60",  # rose at 10m, before the window
        "late": "_x25 0x20 1x25",  # appeared at 25m (inside), rose at 45m
        "gone": "0x30 1x5",  # rose at 30m+, the exporter stopped at 35m (absent at the end)
        "zero": "_x40 0x30",  # appeared inside the window, never failed
    }
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f'{counter}{{component="{c}",node="n1",reason="oom",job="p"}}',
                 "values": v}
                for c, v in series.items()
            ],
            "promql_expr_test": [{
                "expr": moved_counters_query(1800),
                "eval_time": "60m",
                "exp_samples": [
                    {"labels": f'{{component="{c}",node="n1",reason="oom"}}', "value": 1}
                    for c in ("gone", "late", "rose")
                ],
            }],
        }],
    }
    path = tmp_path / "moved_test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    res = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture
def prometheus() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.close()


def matrix(*series: tuple[dict[str, str], list[float]]) -> dict:
    return {"resultType": "matrix", "result": [
        {"metric": labels, "values": [[T + 60 * i, repr(v)] for i, v in enumerate(vals)]}
        for labels, vals in series
    ]}


def test_load_failure_history_from_canned_answers(prometheus: _Server) -> None:
    moved = {"resultType": "vector", "result": [
        {"metric": {"component": "web", "node": "n1", "reason": "oom"}, "value": [T, "2"]},
    ]}
    prometheus.routes["/api/v1/query"] = lambda p, q: ok(moved)

    def ranges(path: str, params: dict[str, str]):  # type: ignore[no-untyped-def]
        if "preshift_node_failures_total" in params["query"]:
            return ok(matrix(({"node": "n2", "reason": "unreachable"}, [0, 0, 1])))
        return ok(matrix(
            (COMP, [0, 1, 1, 2]),
            # same component, a counter that did not move: not asked for, ignored
            ({"component": "web", "node": "n1", "reason": "exit_nonzero"}, [0, 1]),
        ))

    prometheus.routes["/api/v1/query_range"] = ranges
    client = PrometheusClient(prometheus.url, timeout=2.0)
    events = load_failure_history(client, T, T + 180, 60.0)
    assert [(e.ts - T, e.component, e.node, e.reason) for e in events] == [
        (60.0, "web", "n1", "oom"),
        (120.0, "", "n2", "unreachable"),
        (180.0, "web", "n1", "oom"),
    ]
    queries = [(path, params["query"]) for _, path, params, _ in prometheus.requests]
    assert queries[0] == ("/api/v1/query", moved_counters_query(180))
    assert queries[1] == ("/api/v1/query_range", "max by (component, node, reason) ("
                          + component_selector(["web"]) + ")")
    assert queries[2] == ("/api/v1/query_range",
                          "max by (node, reason) (preshift_node_failures_total)")
    assert all(params.get("end") == f"{T + 180:.3f}" or path == "/api/v1/query"
               for _, path, params, _ in prometheus.requests)
    assert load_failure_history(client, T, T, 60.0) == []
