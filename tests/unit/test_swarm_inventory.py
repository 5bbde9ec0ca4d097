"""Mode swarm in the exporter, with small fakes: the manager's labels and spec replicas reach
the footprint and the plan, a manager that fails or hangs keeps the last view and marks the
inventory stage, and the CLI builds the swarm inventory only in mode swarm."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from exporter.cli import make_inventory
from exporter.refresh import RefreshLoop
from exporter.snapshot import Status
from exporter.testing import (
    FakeFailures,
    FakeInventory,
    sample_assessor,
    sample_config,
    sample_failures,
    sample_inventory,
    sample_signals,
)
from preshift.assess import Assessor
from preshift.config import NodeConfig
from preshift.config import NodeLabels as CfgLabels
from preshift.sense.docker_engine import EngineInventory
from preshift.sense.swarm_inventory import SwarmInventory

from .test_assess import NOW, PLACED, config, footprint, world


def _node(nid: str, host: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"ID": nid, "Description": {"Hostname": host},
            "Spec": {"Role": "worker", "Availability": "active", "Labels": labels},
            "Status": {"State": "ready", "Addr": "198.18.0.1"}}


def _service(sid: str, name: str, replicas: int, component: str,
             extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {"ID": sid, "Version": {"Index": 1}, "Spec": {
        "Name": name, "Labels": {}, "Mode": {"Replicated": {"Replicas": replicas}},
        "TaskTemplate": {"ContainerSpec": {
            "Image": "box", "Labels": {"preshift.service": component, **(extra or {})}}}}}


class Engine:
    """One node's engine (docker-py's client and its low-level API at once). `swarm`: the
    manager's nodes/services/tasks, which fail or hang on demand."""

    def __init__(self, name: str, node_id: str, labels: list[str],
                 swarm: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
                 ) -> None:
        self.name, self.node_id, self.labels, self.swarm = name, node_id, labels, swarm
        self.api = self
        self.fail: BaseException | None = None
        self.hang = threading.Event()
        self.release = threading.Event()
        self.swarm_reads = 0

    def info(self) -> dict[str, Any]:
        return {"Name": self.name, "ID": f"E-{self.name}", "Labels": self.labels,
                "Swarm": {"NodeID": self.node_id}}

    def containers(self, all: bool, filters: Mapping[str, str]) -> list[dict[str, Any]]:
        return [{"Id": f"c-{self.name}", "Names": [f"/web.1.{self.name}"], "Image": "box",
                 "State": "running", "Status": "Up 1 s",
                 "Labels": {"preshift.service": "web"}}]

    def nodes(self) -> list[dict[str, Any]]:
        assert self.swarm is not None, "not a manager"
        self.swarm_reads += 1
        if self.hang.is_set():
            self.release.wait(10)  # a stuck manager, until the test lets it go
        if self.fail is not None:
            raise self.fail
        return self.swarm[0]

    def services(self) -> list[dict[str, Any]]:
        assert self.swarm is not None
        return self.swarm[1]

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


def manager() -> Engine:
    nodes = [
        # n1's engine is found by its swarm node ID, n2's by its hostname
        _node("ID-n1", "whatever", {"preshift.rack": "swarm-r1", "preshift.site": "swarm-s1",
                                    "preshift.host": "swarm-h1"}),
        _node("ID-n2", "host-b", {"preshift.rack": "swarm-r2", "preshift.site": "swarm-s2",
                                  "other": "x"}),
    ]
    services = [
        _service("s1", "web", 3, "web"),
        _service("s2", "web-m-1", 1, "web", {"preshift.scale-up": "true"}),  # a spare
        _service("s3", "db", 1, "db"),
    ]
    return Engine("host-a", "ID-n1", [], (nodes, services))


NODES = [
    # n1: the config gives the host; the engine gives nothing; Swarm the rest
    NodeConfig(name="n1", url="unix:///n1.sock", labels=CfgLabels(host="cfg-h1")),
    # n2: the engine gives the rack; Swarm gives the site, not the host (a default)
    NodeConfig(name="n2", url="unix:///n2.sock"),
]


def inventory(n1: Engine, timeout: float = 1.0) -> tuple[SwarmInventory, list[str]]:
    """The inventory over n1 (the manager) and n2; also the URLs clients were made for."""
    engines = {"unix:///n1.sock": n1,
               "unix:///n2.sock": Engine("host-b", "ID-n2-unknown", ["preshift.rack=engine-r2"])}
    made: list[str] = []

    def factory(url: str, timeout: float) -> Any:
        made.append(url)
        return engines[url]

    return SwarmInventory(NODES, "n1", timeout=timeout, client_factory=factory), made


def labels_of(res: Any) -> dict[str, tuple[str, str, str]]:
    return {n.name: (n.labels.host, n.labels.rack, n.labels.site) for n in res.footprint.nodes}


def test_labels_config_then_engine_then_swarm_and_spec_replicas_as_intended() -> None:
    inv, _ = inventory(manager())
    res = inv.read()
    assert not res.errors and not res.source_errors
    assert labels_of(res) == {
        "n1": ("cfg-h1", "swarm-r1", "swarm-s1"),  # found by its swarm node ID
        "n2": ("n2", "engine-r2", "swarm-s2"),  # found by hostname; no swarm host: default
    }
    # spec replicas; the scale-up spare's service is left out
    assert dict(res.intended or {}) == {"web": 3, "db": 1}
    assert {r.name for r in res.footprint.replicas} == {"web.1.host-a", "web.1.host-b"}
    inv.close()


def test_a_failing_manager_keeps_the_last_view_and_reports_it() -> None:
    n1 = manager()
    inv, made = inventory(n1)
    first = inv.read()
    n1.fail = ConnectionRefusedError("refused")
    res = inv.read()
    assert set(res.source_errors) == {"swarm"}
    assert "connection refused" in res.source_errors["swarm"]
    assert "keeping the last known" in res.source_errors["swarm"]
    assert labels_of(res) == labels_of(first) and res.intended == first.intended
    assert not res.errors  # the engines were read: no node is in error
    n1.fail = None
    again = inv.read()
    assert not again.source_errors and labels_of(again) == labels_of(first)
    # the manager's broken client was dropped and made again (the engine's n1 client too is
    # made once: 2 clients for n1 at first, then 1 more)
    assert made.count("unix:///n1.sock") == 3


def test_a_manager_never_read_gives_no_intended_counts_and_swarm_free_labels() -> None:
    n1 = manager()
    n1.fail = ConnectionRefusedError("refused")
    res = inventory(n1)[0].read()
    assert "no swarm view read yet" in res.source_errors["swarm"]
    assert res.intended is None
    assert labels_of(res)["n1"] == ("cfg-h1", "unknown", "unknown")


def test_a_hung_manager_does_not_hold_up_the_refresh() -> None:
    n1 = manager()
    inv, _ = inventory(n1, timeout=0.05)  # budget 4 × 0.05 + 1 s
    inv.read()
    n1.hang.set()
    try:
        t0 = time.monotonic()
        res = inv.read()
        assert time.monotonic() - t0 < 5
        assert "no answer within" in res.source_errors["swarm"]
        assert dict(res.intended or {}) == {"web": 3, "db": 1}
        reads = n1.swarm_reads
        res = inv.read()  # the previous read still hangs: not started again
        assert "no answer yet to the previous read" in res.source_errors["swarm"]
        assert n1.swarm_reads == reads
    finally:
        n1.release.set()


# ---------------------------------------------------------------- the refresh loop
class SpyAssessor(Assessor):
    """Records the intended counts each assessment was given."""

    given: list[Any]

    def assess(self, *args: Any, **kwargs: Any) -> Any:
        self.given.append(kwargs.get("intended"))
        return super().assess(*args, **kwargs)


def _loop(result: Any) -> tuple[RefreshLoop, SpyAssessor]:
    cfg = sample_config()
    base = sample_assessor(cfg)
    spy = SpyAssessor(cfg, fitter=base.forecaster.fitter, fit_budget_per_refresh=0)
    spy.given = []
    loop = RefreshLoop(cfg, FakeInventory(result), sample_signals(NOW),
                       FakeFailures(sample_failures(NOW)), clock=lambda: NOW, assessor=spy)
    return loop, spy


def test_the_loop_passes_intended_counts_and_marks_a_swarm_error_partial() -> None:
    good = dataclasses.replace(sample_inventory(NOW), intended={"web": 2})
    loop, spy = _loop(good)
    snap = loop.refresh_once()
    assert snap.stages["inventory"].status is Status.OK
    assert spy.given == [{"web": 2}]
    failed = dataclasses.replace(good, source_errors={"swarm": "swarm manager n1: refused"})
    loop._inventory = FakeInventory(failed)  # the next read: the manager failed
    snap = loop.refresh_once()
    stage = snap.stages["inventory"]
    assert stage.status is Status.PARTIAL and "swarm: swarm manager n1: refused" in stage.error
    assert snap.errors_total["inventory"] == 1 and not snap.node_errors
    assert snap.sources_up["docker"]  # a partial read, not a failed one
    assert snap.stages["assess"].status is Status.OK  # the plan is still made


def test_spec_replicas_decide_which_healthy_replicas_are_spares() -> None:
    """Three healthy web replicas, one on a heating node. Mode docker: all three are
    intended, so the risky one moves. Swarm says 2 are intended: the third is a spare that
    covers the risky one (as an executor's scale-up is), so nothing moves."""
    placed = (*PLACED, ("web-3", "web", "n4"))
    cfg = config(services={"web": {"min_available": 1}})
    plain = Assessor(cfg, fit_budget_per_refresh=0).assess(
        footprint(placed), world(placed=placed), [], NOW)
    assert any(e.replica == "web-1" for e in plain.plan.entries)
    swarm = Assessor(cfg, fit_budget_per_refresh=0).assess(
        footprint(placed), world(placed=placed), [], NOW, intended={"web": 2})
    assert {h.replica: h.why for h, _ in swarm.plan.held}.get("web-1") == "spare"
    assert not any(e.replica == "web-1" for e in swarm.plan.entries)


# ---------------------------------------------------------------- the CLI's choice
@pytest.mark.parametrize("mode", ["docker", "swarm"])
def test_make_inventory_by_mode(mode: str) -> None:
    extra: dict[str, Any] = {"mode": mode}
    if mode == "swarm":
        extra["swarm"] = {"manager": "n1"}
    inv = make_inventory(sample_config(**extra))
    try:
        kind = SwarmInventory if mode == "swarm" else EngineInventory
        assert isinstance(inv, kind)
    finally:
        inv.close()
