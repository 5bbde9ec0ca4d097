"""The analysis at each weight step: pass, fail or hold. Pure.

The canary's HAProxy counters are cumulative, so a step is judged on the difference between
the counters when its weight was set (the baseline) and now:

- pass: at least `min_requests` requests reached it, and failures/requests ≤ max_error_ratio;
- fail: the ratio is exceeded, or the server is DOWN (or gone from the backend);
- hold: fewer requests than `min_requests` — no data. Holding is not a pass: the step does
  not advance, and the executor's progress deadline rolls back a canary that never gets data
  (Flagger's "no values found" trap, field notes §1.1).

With `analysis.query`, the PromQL value (`{component}` and `{canary}` replaced) must also be
≤ `query_max`; no value is a hold. A fail of either check fails the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import AnalysisConfig
from .ports import Server

Verdict = Literal["pass", "fail", "hold"]


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative requests and failures of one server at some moment."""

    requests: int
    failures: int

    @classmethod
    def of(cls, server: Server) -> Counters:
        return cls(server.requests, server.failures)


@dataclass(frozen=True, slots=True)
class Result:
    """A verdict with the numbers behind it (journaled with the step)."""

    verdict: Verdict
    reason: str
    requests: int = 0
    failures: int = 0
    value: float | None = None  # the PromQL value, when a query ran

    def to_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "reason": self.reason, "requests": self.requests,
                "failures": self.failures, "value": self.value}


def render_query(template: str, component: str, canary: str) -> str:
    """The analysis query with its placeholders filled (plain replace: PromQL's own braces
    such as `{job="x"}` must survive, which str.format would choke on)."""
    return template.replace("{component}", component).replace("{canary}", canary)


def counters_verdict(
    baseline: Counters | None, server: Server | None, cfg: AnalysisConfig
) -> Result:
    """Judge the canary server's traffic since `baseline`."""
    if server is None:
        return Result("fail", "the new server is no longer in the backend")
    if server.status.upper().startswith("DOWN"):
        return Result("fail", f"the new server is {server.status} in HAProxy")
    base = baseline or Counters(0, 0)
    requests = server.requests - base.requests
    failures = server.failures - base.failures
    if requests < 0 or failures < 0:
        # HAProxy reloaded and its counters restarted from 0: what it has counted since is
        # all the evidence there is.
        requests, failures = server.requests, server.failures
    if requests < cfg.min_requests:
        return Result("hold", f"no data: {requests} request(s) < min_requests "
                      f"{cfg.min_requests}", requests, failures)
    ratio = failures / requests if requests else (1.0 if failures else 0.0)
    if ratio > cfg.max_error_ratio:
        return Result("fail", f"error ratio {ratio:.3f} > {cfg.max_error_ratio} "
                      f"({failures}/{requests})", requests, failures)
    return Result("pass", f"error ratio {ratio:.3f} ≤ {cfg.max_error_ratio} "
                  f"({failures}/{requests})", requests, failures)


def query_verdict(value: float | None, cfg: AnalysisConfig) -> Result:
    """Judge the PromQL value; None (no series, NaN, Prometheus unreachable) is no data."""
    if value is None or value != value:  # NaN is no data too
        return Result("hold", "no data from the analysis query")
    if cfg.query_max is not None and value > cfg.query_max:
        return Result("fail", f"query value {value:g} > query_max {cfg.query_max:g}",
                      value=value)
    return Result("pass", f"query value {value:g} ≤ query_max {cfg.query_max}", value=value)


def combine(*results: Result) -> Result:
    """fail beats hold beats pass; the reasons of the deciding results are joined."""
    for verdict in ("fail", "hold"):
        hit = [r for r in results if r.verdict == verdict]
        if hit:
            return _merge(verdict, hit, results)
    return _merge("pass", list(results), results)


def _merge(verdict: Verdict, deciding: list[Result], every: tuple[Result, ...]) -> Result:
    values = [r.value for r in every if r.value is not None]
    return Result(
        verdict,
        "; ".join(r.reason for r in deciding) or "no checks configured",
        max((r.requests for r in every), default=0),
        max((r.failures for r in every), default=0),
        values[0] if values else None,
    )


def analyse(
    cfg: AnalysisConfig,
    *,
    baseline: Counters | None = None,
    server: Server | None = None,
    with_traffic: bool = True,
    query_value: float | None = None,
) -> Result:
    """The step's verdict. with_traffic=False (no traffic layer): only the query counts, and
    without a query the step passes (the executor has already checked the canary's health)."""
    results = []
    if with_traffic:
        results.append(counters_verdict(baseline, server, cfg))
    if cfg.query:
        results.append(query_verdict(query_value, cfg))
    if not results:
        return Result("pass", "no traffic layer and no analysis query: health only")
    return combine(*results)
