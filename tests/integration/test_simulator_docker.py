"""Container memory series from a node's Docker engine, through the real docker-py client.

The engine is a small stand-in speaking the Docker HTTP API on a Unix socket (the three calls
docker-py makes to list containers), so this runs without root or the testbed; it can also
answer slowly or vanish, which a real engine cannot be asked to do on cue.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from preshift.simulator import Scenario, Simulator

MIB = 2**20
CONTAINERS = [
    {"Id": "a" * 64, "Name": "/shop-web-1", "Memory": 512 * MIB, "service": "web"},
    {"Id": "b" * 64, "Name": "/shop-db-1", "Memory": 0, "service": "db"},
]


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.delay = 0.0
        self.requests: list[str] = []
        super().__init__(str(path), _EngineHandler)


class _EngineHandler(BaseHTTPRequestHandler):
    server: FakeEngine

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:  # a Unix socket has no client address
        return "unix"

    def _reply(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.requests.append(url.path)
        time.sleep(self.server.delay)
        path = url.path.split("/", 2)[-1] if url.path.startswith("/v1.") else url.path[1:]
        if path == "version":
            self._reply({"ApiVersion": "1.41", "Version": "fake", "MinAPIVersion": "1.12"})
        elif path == "containers/json":
            filters = json.loads(parse_qs(url.query)["filters"][0])
            assert filters == {"label": ["preshift.service"]}
            self._reply([{"Id": c["Id"], "Names": [c["Name"]]} for c in CONTAINERS])
        elif path.startswith("containers/") and path.endswith("/json"):
            cid = path.split("/")[1]
            c = next(c for c in CONTAINERS if c["Id"] == cid)
            self._reply(
                {
                    "Id": c["Id"],
                    "Name": c["Name"],
                    "Config": {"Labels": {"preshift.service": c["service"]}},
                    "HostConfig": {"Memory": c["Memory"]},
                }
            )
        else:
            self._reply({"message": f"page not found: {self.path}"}, status=404)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[FakeEngine, str]]:
    sock = tmp_path / "n1.sock"
    server = FakeEngine(sock)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server, f"unix://{sock}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def families(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
        for f in text_string_to_metric_families(text)
    }


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


SCENARIO = Scenario.model_validate(
    {
        "nodes": ["n1", "n2"],
        "defaults": {"memory_ratio": {"steady": 0.5}},
        "containers": {"n1": ["ignored"], "n2": ["from-scenario"]},
    }
)


def test_containers_come_from_the_engine_with_their_real_limits(
    engine: tuple[FakeEngine, str],
) -> None:
    fake, url = engine
    sim = Simulator(SCENARIO, docker_urls={"n1": url}, docker_interval=0.1)
    with sim.serve("127.0.0.1", 0) as srv:
        assert wait_for(
            lambda: families(srv.url + "/metrics/n1")["container_spec_memory_limit_bytes"] != {}
        )
        got = families(srv.url + "/metrics/n1")
        assert got["container_spec_memory_limit_bytes"] == {
            (("name", "shop-db-1"),): 256 * MIB,  # no limit set: the scenario's default
            (("name", "shop-web-1"),): 512 * MIB,  # HostConfig.Memory
        }
        assert got["container_memory_working_set_bytes"][(("name", "shop-web-1"),)] == 256 * MIB
        # n2 has no engine: its list comes from the scenario.
        n2 = families(srv.url + "/metrics/n2")["container_memory_working_set_bytes"]
        assert list(n2) == [(("name", "from-scenario"),)]
        own = families(srv.url + "/metrics")
        assert own["preshift_simulator_docker_up"] == {(("node", "n1"),): 1.0}
        assert own["preshift_simulator_containers"][(("node", "n1"),)] == 2.0

        # The engine goes away: the last listing stays, the engine is reported down.
        fake.shutdown()
        fake.server_close()
        Path(url.removeprefix("unix://")).unlink()
        assert wait_for(
            lambda: (
                families(srv.url + "/metrics")["preshift_simulator_docker_up"]
                == {(("node", "n1"),): 0.0}
            )
        )
        assert len(families(srv.url + "/metrics/n1")["container_memory_working_set_bytes"]) == 2


def test_a_slow_engine_never_slows_a_scrape(engine: tuple[FakeEngine, str]) -> None:
    fake, url = engine
    fake.delay = 2.0  # every engine call takes 2 s
    sim = Simulator(SCENARIO, docker_urls={"n1": url}, docker_interval=0.1)
    with sim.serve("127.0.0.1", 0) as srv:
        assert wait_for(lambda: bool(fake.requests))  # the listing thread is busy
        for _ in range(5):
            started = time.monotonic()
            families(srv.url + "/metrics/n1")
            assert time.monotonic() - started < 0.5


def test_an_unreachable_engine_is_tolerated(tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'nobody.sock'}"
    sim = Simulator(SCENARIO, docker_urls={"n1": url}, docker_interval=0.1)
    with sim.serve("127.0.0.1", 0) as srv:
        assert families(srv.url + "/metrics/n1")["container_memory_working_set_bytes"] == {}
        time.sleep(0.3)  # a few failed listings
        own = families(srv.url + "/metrics")
        assert own["preshift_simulator_docker_up"] == {(("node", "n1"),): 0.0}
