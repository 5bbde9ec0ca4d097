"""PrometheusClient and SignalHistory against a real Prometheus (/usr/bin/prometheus) that
scrapes a prometheus_client server every second. Both are started here on 127.0.0.1 free
ports and stopped by their own PID / handle."""

from __future__ import annotations

import math
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from preshift.config import SignalConfig
from preshift.errors import SourceError
from preshift.sense.ports import RangeSeries
from preshift.sense.prometheus import MAX_POINTS, PrometheusClient
from preshift.sense.signals import SignalHistory

from .stack import wait_for

pytestmark = pytest.mark.integration
PROMETHEUS = "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    url: str
    gauge: Gauge
    client: PrometheusClient


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("prom")
    registry = CollectorRegistry()
    gauge = Gauge("ts_load", "a test signal", ["node"], registry=registry)
    gauge.labels("n1").set(1.0)
    gauge.labels("n2").set(2.0)
    target_port, prom_port = _free_port(), _free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: sense\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{prom_port}"
    client = PrometheusClient(url, timeout=5)
    try:
        wait_for(client.is_online, 30, "Prometheus to be ready")
        wait_for(lambda: len(client.query("ts_load")) == 2, 30, "the first scrape")
        yield Stack(url, gauge, client)
    finally:
        client.close()
        proc.terminate()  # only the PID we started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_instant_query(stack: Stack) -> None:
    samples = {s.labels["node"]: s for s in stack.client.query("ts_load")}
    assert samples["n1"].value == 1.0 and samples["n2"].value == 2.0
    assert samples["n1"].labels["job"] == "sense"
    (s,) = stack.client.query("sum(ts_load) / 0 * 0")  # NaN travels as the string "NaN"
    assert math.isnan(s.value)
    (s,) = stack.client.query("scalar(sum(ts_load))")
    assert s.value == 3.0 and s.labels == {}


def test_bad_query_names_prometheus_error(stack: Stack) -> None:
    with pytest.raises(SourceError) as err:
        stack.client.query("sum(ts_load")
    msg = str(err.value)
    assert "bad_data" in msg and "parse error" in msg and "query: sum(ts_load" in msg
    assert err.value.retriable is False


def test_query_range_on_the_grid(stack: Stack) -> None:
    def grid() -> tuple[int, RangeSeries] | None:
        end = math.floor(time.time())
        (s1,) = stack.client.query_range('ts_load{node="n1"}', end - 5, end, 1.0)
        return (end, s1) if len(s1.timestamps) >= 3 else None

    end, s1 = wait_for(grid, 15, "3 s of history")
    expected = np.arange(end - 5, end + 1, dtype=float)
    np.testing.assert_array_equal(s1.timestamps, expected[-len(s1.timestamps):])
    assert set(s1.values) == {1.0}


def test_long_range_is_split_and_prometheus_accepts_it(stack: Stack) -> None:
    end = time.time()
    step = 0.005
    start = end - 60  # 12,001 points: more than Prometheus allows in one request
    raw = requests.get(f"{stack.url}/api/v1/query_range", timeout=5, params={
        "query": "ts_load", "start": start, "end": end, "step": step})
    assert raw.status_code == 400 and "11,000 points" in raw.json()["error"]
    ranges: list[dict[str, Any]] = []

    class Counting(requests.Session):
        def get(self, url: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
            ranges.append(kw["params"])
            return super().get(url, **kw)

    series = PrometheusClient(stack.url, 5, session=Counting()).query_range(
        "ts_load", start, end, step)
    assert len(ranges) == 2
    for params in ranges:
        points = (float(params["end"]) - float(params["start"])) / step + 1
        assert points <= MAX_POINTS + 0.5
    assert {s.labels["node"] for s in series} == {"n1", "n2"}
    for s in series:
        assert np.all(np.diff(s.timestamps) > 0)  # merged chunks, no duplicate point
        assert s.timestamps[-1] <= end + 0.001  # times travel in milliseconds


class Recording:
    """The real client, remembering each range it was asked for."""

    def __init__(self, inner: PrometheusClient) -> None:
        self.inner = inner
        self.asked: list[tuple[str, float, float]] = []

    def query(self, promql: str, at: float | None = None) -> Any:
        return self.inner.query(promql, at)

    def query_range(self, promql: str, start: float, end: float, step: float
                    ) -> list[RangeSeries]:
        self.asked.append((promql, start, end))
        return self.inner.query_range(promql, start, end, step)

    def is_online(self) -> bool:
        return self.inner.is_online()


def test_signal_history_fetches_incrementally(stack: Stack) -> None:
    rec = Recording(stack.client)
    signals = [
        SignalConfig(name="load", scope="node", query="ts_load", limit=4),
        SignalConfig(name="broken", scope="node", query="ts_load{", limit=4),
    ]
    hist = SignalHistory(signals, rec, step=1.0, history=30.0)
    t1 = time.time()
    stats = hist.refresh(t1)
    assert "parse error" in stats.errors["broken"] and "load" not in stats.errors
    assert {k for k in hist.series()} == {("load", "n1"), ("load", "n2")}
    first_end = rec.asked[0][2]
    assert first_end == math.floor(t1)

    stack.gauge.labels("n1").set(7.0)
    wait_for(lambda: any(s.value == 7.0 for s in stack.client.query('ts_load{node="n1"}')),
             15, "the new value to be scraped")
    time.sleep(1.1)  # let the grid pass the scrape
    t2 = time.time()
    stats = hist.refresh(t2)
    load_calls = [a for a in rec.asked if a[0] == "ts_load"]
    assert load_calls[1][1] == first_end + 1.0  # only what is new
    assert load_calls[1][2] == math.floor(t2)
    assert stats.fetched == 2 * (math.floor(t2) - first_end)
    ts, vals = hist.series()[("load", "n1")]
    assert np.all(np.diff(ts) == 1.0) and ts[-1] == math.floor(t2)
    assert vals[-1] == 7.0 and 1.0 in vals
    assert hist.latest()[("load", "n1")] == (float(ts[-1]), 7.0)
    stack.gauge.labels("n1").set(1.0)


def test_is_online_false_when_nothing_listens() -> None:
    assert PrometheusClient(f"http://127.0.0.1:{_free_port()}", timeout=2).is_online() is False
