"""EngineInventory's logic with in-memory engines (the real engines are in integration)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from preshift.config import NodeConfig
from preshift.config import NodeLabels as CfgLabels
from preshift.sense.docker_engine import EngineInventory, parse_health


def container(cid: str, name: str, service: str, state: str = "running",
              status: str = "Up 3 minutes") -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/{name}"], "Image": "preshift-box:latest", "State": state,
            "Status": status, "Labels": {"preshift.service": service, "other": "x"}}


class Engine:
    def __init__(self, name: str, labels: list[str], containers: list[dict[str, Any]]) -> None:
        self.name, self.labels, self.containers = name, labels, containers
        self.fail: BaseException | None = None
        self.hang = threading.Event()
        self.release = threading.Event()
        self.created = 0
        self.listings: list[dict[str, Any]] = []

    def client(self) -> Any:
        if self.fail is not None:
            raise self.fail
        self.created += 1
        engine = self

        class Api:
            def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
                engine.listings.append({"all": all, "filters": filters})
                if engine.fail is not None:
                    raise engine.fail
                return engine.containers

        class Client:
            api = Api()

            def info(self) -> dict[str, Any]:
                if engine.hang.is_set():
                    engine.release.wait(10)  # a stuck engine, until the test lets it go
                if engine.fail is not None:
                    raise engine.fail
                return {"Name": engine.name, "ID": f"ID-{engine.name}", "Labels": engine.labels}

            def close(self) -> None:
                pass

        return Client()


@pytest.fixture
def engines() -> dict[str, Engine]:
    return {
        "n1": Engine("host-a", ["preshift.rack=r1", "preshift.site=dc1", "preshift.host=hA"],
                     [container("c1", "web-1", "web", status="Up 3 minutes (healthy)"),
                      container("c2", "db-1", "db", state="exited", status="Exited (3) 1 s ago")]),
        "n2": Engine("host-b", ["other=1"], [container("c3", "web-2", "web",
                                                       status="Up 1 s (health: starting)")]),
    }


def inventory(engines: dict[str, Engine], **kw: Any) -> EngineInventory:
    nodes = [NodeConfig(name="n1", url="unix:///n1.sock"),
             NodeConfig(name="n2", url="unix:///n2.sock", labels=CfgLabels(rack="cfg-rack"))]
    by_url = {f"unix:///{k}.sock": v for k, v in engines.items()}
    return EngineInventory(nodes, client_factory=lambda url, t: by_url[url].client(), **kw)


def test_reads_nodes_labels_and_replicas(engines: dict[str, Engine]) -> None:
    res = inventory(engines).read()
    fp = res.footprint
    assert not res.errors and fp.stale_nodes == frozenset()
    n1, n2 = fp.nodes
    assert (n1.labels.host, n1.labels.rack, n1.labels.site) == ("hA", "r1", "dc1")
    assert (n2.labels.host, n2.labels.rack, n2.labels.site) == ("n2", "cfg-rack", "unknown")
    assert (n1.reachable, n1.hostname, n1.engine_id) == (True, "host-a", "ID-host-a")
    by_name = {r.name: r for r in fp.replicas}
    assert set(by_name) == {"web-1", "db-1", "web-2"}
    assert by_name["web-1"].health == "healthy" and by_name["web-1"].running
    assert by_name["db-1"].state == "exited" and by_name["db-1"].health is None
    assert by_name["web-2"].health == "starting" and by_name["web-2"].node == "n2"
    assert by_name["web-1"].labels["other"] == "x"
    assert engines["n1"].listings == [{"all": True, "filters": {"label": "preshift.service"}}]


def test_down_engine_keeps_last_known_replicas_as_stale(engines: dict[str, Engine]) -> None:
    inv = inventory(engines)
    inv.read()
    engines["n1"].fail = requests.ConnectionError(ConnectionRefusedError(111, "refused"))
    res = inv.read()
    assert res.errors == {"n1": "connection refused"}
    n1 = res.footprint.node("n1")
    assert n1 is not None and not n1.reachable and n1.error == "connection refused"
    assert n1.labels.rack == "r1" and n1.hostname == "host-a"  # as last seen
    assert res.footprint.stale_nodes == {"n1"}
    assert {r.name for r in res.footprint.replicas} == {"web-1", "db-1", "web-2"}
    engines["n1"].fail = None
    res = inv.read()
    assert not res.errors and res.footprint.stale_nodes == frozenset()
    assert engines["n1"].created == 2  # the client was dropped after the failure


def test_engine_down_from_the_start(engines: dict[str, Engine]) -> None:
    engines["n2"].fail = FileNotFoundError(2, "No such file or directory", "/n2.sock")
    res = inventory(engines).read()
    assert "socket not found" in res.errors["n2"]
    n2 = res.footprint.node("n2")
    assert n2 is not None and not n2.reachable and n2.labels.rack == "cfg-rack"
    assert [r.node for r in res.footprint.replicas] == ["n1", "n1"]


def test_api_error_means_answered_but_stale(engines: dict[str, Engine]) -> None:
    inv = inventory(engines)
    inv.read()
    resp = requests.Response()
    resp.status_code = 500
    engines["n2"].fail = requests.HTTPError("500 Server Error: boom", response=resp)
    res = inv.read()
    n2 = res.footprint.node("n2")
    assert n2 is not None and n2.reachable and "boom" in (n2.error or "")
    assert res.footprint.stale_nodes == {"n2"}


def test_a_hung_engine_does_not_hold_up_the_others(engines: dict[str, Engine]) -> None:
    inv = inventory(engines, timeout=0.2)
    inv.read()
    engines["n1"].hang.set()
    t0 = time.monotonic()
    res = inv.read()
    assert time.monotonic() - t0 < 2.5  # 3 × timeout + 1 s
    assert res.errors["n1"] == "no answer within 1.6 s"
    assert res.footprint.node("n2").reachable  # type: ignore[union-attr]
    res = inv.read()  # the hung read is still running: not started twice
    assert res.errors["n1"] == "no answer yet to the previous read"
    engines["n1"].hang.clear()
    engines["n1"].release.set()
    deadline = time.monotonic() + 5
    while inv.read().errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not inv.read().errors


def test_parse_health() -> None:
    assert parse_health("Up 3 minutes (healthy)") == "healthy"
    assert parse_health("Up 3 minutes (unhealthy)") == "unhealthy"
    assert parse_health("Up 2 seconds (health: starting)") == "starting"
    assert parse_health("Exited (0) 5 seconds ago") is None
