"""The HTTP server on a free 127.0.0.1 port: routes, methods, 503 before the first snapshot."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from exporter.collector import SnapshotCollector, build_registry
from exporter.refresh import RefreshLoop
from exporter.server import ExporterServer, make_app
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
