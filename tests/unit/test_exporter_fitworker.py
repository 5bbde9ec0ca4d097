"""Fits in a child process, and the synthetic world the benchmarks build the exporter from."""

from __future__ import annotations

import gzip
import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from exporter.fitworker import NICE, ProcessFitter
from exporter.synthetic import synthetic_world
from preshift.score.ets_fit import fit_auto_ets


@pytest.fixture(scope="module")
def fitter() -> Iterator[ProcessFitter]:
    f = ProcessFitter(timeout=10)
    try:
        yield f
    finally:
        f.close()


def test_the_child_fits_like_this_process(fitter: ProcessFitter) -> None:
    rng = np.random.default_rng(3)
    for y in (rng.normal(size=288).cumsum(), 5 + 0.1 * np.arange(100) + rng.normal(size=100)):
        assert fitter(y) == fit_auto_ets(y)
    with pytest.raises(ValueError, match="fit failed"):
        fitter(np.array([1.0, 2.0]))  # too short: statsforecast refuses, the child goes on
    assert fitter(rng.normal(size=50)).kind >= 2


def test_the_child_runs_at_a_lower_priority(fitter: ProcessFitter) -> None:
    fitter(np.random.default_rng(5).normal(size=60))
    assert fitter.pid is not None
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, fitter.pid) == min(19, ours + NICE)


def test_a_dead_child_is_replaced_and_close_stops_it(fitter: ProcessFitter) -> None:
    y = np.random.default_rng(4).normal(size=120)
    fitter(y)
    pid = fitter.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert fitter(y) == fit_auto_ets(y)  # started again
    assert fitter.pid not in (None, pid)
    fitter.close()
    assert fitter.pid is None


def test_the_synthetic_world_runs_the_whole_exporter(fitter: ProcessFitter) -> None:
    world = synthetic_world(components=200, nodes=10, points=60, hot_nodes=1)
    service = world.service(fitter=fitter)
    for _ in range(2):
        snap = service.loop.refresh_once()
        world.clock.now += 60
    assert all(not o.stale for o in snap.stages.values())
    a = snap.assessment
    assert a is not None and a.forecast_stats.series == 200 * 2 + 10
    assert a.forecast_stats.new_points == a.forecast_stats.series  # one new point each
    assert a.fits["ok"] > 0
    # the hot node's 20 replicas are planned away
    assert {e.from_node for e in a.plan.entries} == {"n000"} and len(a.plan.entries) == 20
    assert world.prometheus.calls == 6  # 3 signals × 2 refreshes: nothing fetched twice
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"}
    text = gzip.decompress(b"".join(service.app(env, lambda s, h: None)))
    assert text.count(b"\npreshift_health_projection_score{") == 200
