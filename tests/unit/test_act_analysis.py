"""The step analysis: pass, fail, hold."""

from __future__ import annotations

from preshift.act.analysis import Counters, analyse, counters_verdict, render_query
from preshift.act.ports import Server
from preshift.config import AnalysisConfig

CFG = AnalysisConfig(min_requests=10, max_error_ratio=0.1)


def srv(requests: int, failures: int, status: str = "UP") -> Server:
    return Server("c", "10.0.0.1", 80, 10, status, 0, requests, failures)


def test_pass_fail_hold() -> None:
    base = Counters(100, 5)
    assert counters_verdict(base, srv(120, 6), CFG).verdict == "pass"
    assert counters_verdict(base, srv(120, 8), CFG).verdict == "fail"  # 3/20
    assert counters_verdict(base, srv(105, 5), CFG).verdict == "hold"  # 5 < 10
    assert counters_verdict(base, srv(105, 9), CFG).verdict == "hold"  # too few to judge


def test_down_or_missing_server_fails() -> None:
    assert counters_verdict(None, srv(1000, 0, "DOWN 1/2"), CFG).verdict == "fail"
    assert counters_verdict(None, None, CFG).verdict == "fail"


def test_counter_reset_uses_what_was_counted_since() -> None:
    r = counters_verdict(Counters(500, 0), srv(20, 0), CFG)
    assert r.verdict == "pass" and r.requests == 20


def test_min_requests_zero_passes_without_traffic() -> None:
    assert counters_verdict(None, srv(0, 0), AnalysisConfig(min_requests=0)).verdict == "pass"


def test_query_combines() -> None:
    cfg = AnalysisConfig(min_requests=1, query="q", query_max=1.0)
    ok = srv(10, 0)
    assert analyse(cfg, server=ok, query_value=0.5).verdict == "pass"
    assert analyse(cfg, server=ok, query_value=2.0).verdict == "fail"
    assert analyse(cfg, server=ok, query_value=None).verdict == "hold"
    assert analyse(cfg, server=ok, query_value=float("nan")).verdict == "hold"
    assert analyse(cfg, server=srv(10, 10), query_value=None).verdict == "fail"
    assert analyse(cfg, with_traffic=False, query_value=0.1).verdict == "pass"
    assert analyse(AnalysisConfig(), with_traffic=False).verdict == "pass"


def test_render_query_keeps_promql_braces() -> None:
    q = 'sum(rate(http_errors{service="{component}",name="{canary}"}[1m]))'
    assert render_query(q, "web", "web-1a") == \
        'sum(rate(http_errors{service="web",name="web-1a"}[1m]))'
