"""The HTTP server on a free 127.0.0.1 port: routes, methods, 503 before the first snapshot;
the runtime metrics sampled apart, and a response sent whole."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collector import SnapshotCollector, build_registry
from exporter.refresh import RefreshLoop
from exporter.server import ExporterServer, RuntimeText, _SocketBuffer, make_app
from exporter.testing import (
    FakeFailures,
    FakeInventory,
    sample_config,
    sample_failures,
    sample_inventory,
    sample_signals,
)

NOW = 1_750_000_000.0


@pytest.fixture
def served() -> Iterator[tuple[RefreshLoop, int]]:
    collector = SnapshotCollector(15)
    loop = RefreshLoop(
        sample_config(),
        FakeInventory(sample_inventory(NOW, down=["n3"])),
        sample_signals(NOW),
        FakeFailures(sample_failures(NOW)),
        clock=lambda: NOW,
        on_snapshot=collector.update,
    )
    server = ExporterServer(make_app(build_registry(collector), loop.current), "127.0.0.1", 0)
    server.start()
    try:
        yield loop, server.address[1]
    finally:
        server.stop()


def request(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_before_the_first_snapshot(served: tuple[RefreshLoop, int]) -> None:
    _, port = served
    status, headers, body = request(port, "/api/v1/footprint")
    assert status == 503 and headers["content-type"] == "application/json"
    assert "first refresh" in json.loads(body)["error"]
    assert request(port, "/-/ready")[0] == 503
    assert request(port, "/-/healthy")[0] == 200
    status, _, body = request(port, "/metrics")
    assert status == 200 and b"preshift_up 0.0" in body


def test_after_a_refresh(served: tuple[RefreshLoop, int]) -> None:
    loop, port = served
    snap = loop.refresh_once()
    status, headers, body = request(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b'preshift_node_up{node="n3"} 0.0' in body
    assert b"process_cpu_seconds_total" in body  # the runtime collectors are in the registry
    status, headers, body = request(port, "/api/v1/footprint")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == snap.footprint_json  # pre-rendered, served as is
    doc = json.loads(body)
    assert doc["stale"] is True and doc["generated_at"] == NOW
    assert request(port, "/-/ready")[0] == 200
    status, headers, body = request(port, "/")
    assert status == 200 and b'href="/metrics"' in body and b'href="/api/v1/footprint"' in body


@pytest.mark.parametrize("path", ["/nope", "/metrics/x", "/api/v1", "/api/v1/footprint/n1"])
def test_unknown_paths_are_404(served: tuple[RefreshLoop, int], path: str) -> None:
    assert request(served[1], path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/metrics", "/api/v1/footprint", "/-/ready"])
def test_other_methods_are_405(served: tuple[RefreshLoop, int], method: str, path: str) -> None:
    status, headers, _ = request(served[1], path, method)
    assert status == 405 and headers["allow"] == "GET"


def test_metrics_without_gzip_is_the_same_text(served: tuple[RefreshLoop, int]) -> None:
    loop, port = served
    loop.refresh_once()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.getheader("Content-Encoding") == "gzip"
        zipped = gzip.decompress(resp.read())  # two members: ours, then the runtime metrics
    finally:
        conn.close()
    status, headers, plain = request(port, "/metrics")
    assert status == 200 and "content-encoding" not in headers
    assert int(headers["content-length"]) == len(plain)
    cut = plain.index(b"# HELP process_")  # the runtime part is sampled, not the same twice
    assert zipped[:cut] == plain[:cut] and zipped[cut:].startswith(b"# HELP process_")


class _Counting(Collector):
    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        g = GaugeMetricFamily("sampled", "How many times it was collected.")
        g.add_metric([], self.calls)
        yield g


def test_runtime_metrics_are_sampled_apart_from_scrapes() -> None:
    registry, counting = CollectorRegistry(), _Counting()
    registry.register(counting)
    runtime = RuntimeText(registry, period=3600)  # the thread will not sample during the test
    text, zipped = runtime.get()
    assert b"sampled 1.0" in text and gzip.decompress(zipped) == text
    assert runtime.get() == (text, zipped) and counting.calls == 1  # a scrape renders nothing
    runtime.sample()  # what the thread does every period
    assert b"sampled 2.0" in runtime.get()[0]


def test_the_sampling_thread_ends_with_its_object() -> None:
    runtime = RuntimeText(CollectorRegistry(), period=0.01)
    runtime.get()
    thread = runtime._thread
    assert thread is not None and thread.is_alive()
    del runtime
    thread.join(timeout=10)
    assert not thread.is_alive()


class _FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_response_is_sent_in_as_few_sends_as_possible() -> None:
    sock = _FakeSocket()
    out = _SocketBuffer(sock, limit=100)  # type: ignore[arg-type]
    for part in (b"HTTP/1.0 200 OK\r\n", b"Header: x\r\n\r\n", b"body"):
        assert out.write(part) == len(part)
        out.flush()  # wsgiref flushes after every write: nothing is sent yet
    assert sock.sent == []
    out.write(b"x" * 200)  # past the limit: sent
    out.write(b"tail")
    out.close()
    out.close()
    assert sock.sent == [b"HTTP/1.0 200 OK\r\nHeader: x\r\n\r\nbody" + b"x" * 200, b"tail"]
