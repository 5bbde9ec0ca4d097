"""PrometheusClient against a tiny HTTP server on 127.0.0.1 serving canned answers."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from preshift.errors import SourceError
from preshift.sense.prometheus import MAX_POINTS, PrometheusClient

Answer = tuple[int, str | bytes, str]  # status, body, content type
Route = Callable[[str, dict[str, str]], Answer]


def ok(data: dict) -> Answer:
    return 200, json.dumps({"status": "success", "data": data}), "application/json"


class _Server:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _answer(self, params: dict[str, str]) -> None:
                path = urlparse(self.path).path
                server.requests.append((self.command, path, params, dict(self.headers)))
                route = server.routes.get(path)
                missing: Answer = (404, "not found", "text/plain")
                status, body, ctype = route(path, params) if route else missing
                raw = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                q = parse_qs(urlparse(self.path).query)
                self._answer({k: v[0] for k, v in q.items()})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                q = parse_qs(self.rfile.read(length).decode())
                self._answer({k: v[0] for k, v in q.items()})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    try:
        yield s
    finally:
        s.close()


def client(server: _Server, **kw: object) -> PrometheusClient:
    return PrometheusClient(server.url, timeout=kw.pop("timeout", 2.0), **kw)  # type: ignore[arg-type]


def test_vector_with_special_values(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: ok({"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "node": "n1"}, "value": [1700000000.5, "1"]},
        {"metric": {"node": "n2"}, "value": [1700000000.5, "NaN"]},
        {"metric": {"node": "n3"}, "value": [1700000000.5, "+Inf"]},
        {"metric": {"node": "n4"}, "value": [1700000000.5, "-Inf"]},
    ]})
    samples = client(server).query("up", at=1700000000.5)
    assert [s.labels.get("node") for s in samples] == ["n1", "n2", "n3", "n4"]
    assert samples[0].value == 1.0
    assert math.isnan(samples[1].value)
    assert samples[2].value == math.inf and samples[3].value == -math.inf
    method, path, params, _ = server.requests[0]
    assert (method, path, params["query"], params["time"]) == (
        "GET", "/api/v1/query", "up", "1700000000.500")


def test_scalar_result_is_one_unlabelled_sample(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: ok(
        {"resultType": "scalar", "result": [1700000000, "42.5"]})
    assert [(dict(s.labels), s.value) for s in client(server).query("42.5")] == [({}, 42.5)]


def test_query_range_matrix(server: _Server) -> None:
    server.routes["/api/v1/query_range"] = lambda p, q: ok({"resultType": "matrix", "result": [
        {"metric": {"node": "n1"}, "values": [[100, "1"], [110, "2.5"], [120, "NaN"]]},
    ]})
    (series,) = client(server).query_range("x", 100, 120, 10)
    assert series.labels == {"node": "n1"}
    assert series.timestamps.dtype == np.float64
    np.testing.assert_array_equal(series.timestamps, [100, 110, 120])
    np.testing.assert_array_equal(series.values, [1, 2.5, np.nan])


def _grid_matrix(path: str, q: dict[str, str]) -> Answer:
    """Answers like Prometheus: one series evaluated on the requested grid, value = time."""
    start, end, step = float(q["start"]), float(q["end"]), float(q["step"])
    n = math.floor((end - start) / step + 1e-9) + 1
    if (end - start) / step > MAX_POINTS:
        return 400, json.dumps({"status": "error", "errorType": "bad_data", "error":
                                "exceeded maximum resolution of 11,000 points per timeseries"}), \
            "application/json"
    values = [[start + i * step, repr(start + i * step)] for i in range(n)]
    return ok({"resultType": "matrix", "result": [{"metric": {"node": "n1"}, "values": values}]})


def test_query_range_is_split_so_no_request_exceeds_11000_points(server: _Server) -> None:
    server.routes["/api/v1/query_range"] = _grid_matrix
    start, step = 1_000_000.0, 15.0
    end = start + 25_000 * step  # 25,001 points
    (series,) = client(server).query_range("x", start, end, step)
    asked = [r[2] for r in server.requests]
    assert len(asked) == 3
    for q in asked:
        points = (float(q["end"]) - float(q["start"])) / float(q["step"]) + 1
        assert points <= MAX_POINTS
    np.testing.assert_allclose(series.timestamps, start + step * np.arange(25_001))
    assert np.all(np.diff(series.timestamps) > 0)  # no overlap between chunks
    np.testing.assert_allclose(series.values, series.timestamps)


def test_bad_data_names_prometheus_error_and_query(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: (400, json.dumps({
        "status": "error", "errorType": "bad_data",
        "error": 'invalid parameter "query": 1:5: parse error: unexpected "}"'}),
        "application/json")
    with pytest.raises(SourceError) as err:
        client(server).query("rate(}")
    msg = str(err.value)
    assert msg.startswith(f"prometheus: {server.url}: query rejected (HTTP 400, bad_data)")
    assert 'parse error: unexpected "}"' in msg and "query: rate(}" in msg
    assert err.value.retriable is False and err.value.source == "prometheus"


def test_server_error_page_and_garbage(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: (
        503, "<html>Service Unavailable</html>", "text/html")
    with pytest.raises(SourceError, match=r"HTTP 503 Service Unavailable: <html>"):
        client(server).query("up")
    server.routes["/api/v1/query"] = lambda p, q: (401, "Unauthorized", "text/plain")
    with pytest.raises(SourceError, match=r"HTTP 401 Unauthorized: Unauthorized") as err:
        client(server).query("up")
    assert err.value.retriable is False  # a wrong token needs a fix, not a retry
    server.routes["/api/v1/query"] = lambda p, q: (200, b"\x00\xffnot json", "text/plain")
    with pytest.raises(SourceError, match="not JSON"):
        client(server).query("up")
    server.routes["/api/v1/query"] = lambda p, q: (200, "{}", "application/json")
    with pytest.raises(SourceError, match=r"malformed answer .*query: up"):
        client(server).query("up")


@pytest.mark.parametrize("result, what", [
    ([{"metric": {"a": "b"}, "value": [1, 5]}], "not a number in a string"),
    ([{"metric": {"a": "b"}, "value": [1, "five"]}], "not a number in a string"),
    ([{"metric": {"a": 1}, "value": [1, "5"]}], "map of strings"),
    ([{"metric": {}, "value": ["1", "5"]}], "not \\[timestamp"),
    ("nope", "not a list"),
])
def test_malformed_vectors(server: _Server, result: object, what: str) -> None:
    server.routes["/api/v1/query"] = lambda p, q: ok({"resultType": "vector", "result": result})
    with pytest.raises(SourceError, match=what):
        client(server).query("up")


def test_wrong_result_types(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: ok({"resultType": "matrix", "result": []})
    with pytest.raises(SourceError, match="use query_range"):
        client(server).query("up[5m]")
    server.routes["/api/v1/query_range"] = lambda p, q: ok({"resultType": "vector", "result": []})
    with pytest.raises(SourceError, match="expected 'matrix'"):
        client(server).query_range("up", 0, 10, 1)
    server.routes["/api/v1/query_range"] = lambda p, q: ok({"resultType": "matrix", "result": [
        {"metric": {}, "values": [[2, "1"], [1, "1"]]}]})
    with pytest.raises(SourceError, match="not increasing"):
        client(server).query_range("up", 0, 10, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    c = PrometheusClient(url, timeout=2)
    with pytest.raises(SourceError) as err:
        c.query("up")
    assert str(err.value) == f"prometheus: {url}: connection refused"
    assert err.value.retriable is True and err.value.unreachable is True
    assert c.is_online() is False


def test_timeout(server: _Server) -> None:
    def slow(p: str, q: dict[str, str]) -> Answer:
        time.sleep(1.0)
        return ok({"resultType": "vector", "result": []})

    server.routes["/api/v1/query"] = slow
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no answer within 0\.3 s") as err:
        client(server, timeout=0.3).query("up")
    assert err.value.unreachable is True  # the signals stage asks no further query
    assert time.monotonic() - t0 < 0.9


def test_is_online(server: _Server) -> None:
    server.routes["/-/ready"] = lambda p, q: (200, "Prometheus Server is Ready.\n", "text/plain")
    assert client(server).is_online() is True
    server.routes["/-/ready"] = lambda p, q: (503, "Service Unavailable", "text/plain")
    assert client(server).is_online() is False


def test_token_is_sent_but_never_shown(server: _Server) -> None:
    token = "s3cr3t-token-value"
    server.routes["/api/v1/query"] = lambda p, q: (400, json.dumps({
        "status": "error", "errorType": "bad_data", "error": "boom"}), "application/json")
    c = client(server, bearer_token=token)
    with pytest.raises(SourceError) as err:
        c.query("up")
    assert server.requests[0][3]["Authorization"] == f"Bearer {token}"
    assert token not in str(err.value) and token not in repr(c)


def test_long_query_is_posted(server: _Server) -> None:
    server.routes["/api/v1/query"] = lambda p, q: ok({"resultType": "vector", "result": []})
    long_query = "sum(" + " + ".join(f'metric_{i}{{node="n{i}"}}' for i in range(400)) + ")"
    assert client(server).query(long_query) == []
    method, _, params, _ = server.requests[0]
    assert method == "POST" and params["query"] == long_query
