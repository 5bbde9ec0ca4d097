"""SwarmRuntime on a real 3-node swarm (n1 manager): the Runtime methods one by one, a
canary move by hand through HAProxy under load (with a watcher thread that checks the
component never had fewer running tasks than its minimum), and the unchanged Executor
driving a move to the end and a restore from standby.

Service `web`: 2 replicas on n1 and n2, host-mode port 8080, init, restart delay 200 ms,
update monitor 1 s, a 0.5 s healthcheck; its task containers serve their node's hostname.
HAProxy names its servers after the stable replica names (`web.<slot>`, the canary's service
name), as the executor does.

Own names: prefix sw, subnet 198.18.15, Prometheus port 19990 (not started), HAProxy frontend
127.0.0.1:19950 and stats 19951. Traffic goes only to 127.0.0.1 and the testbed's nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker.types as dt
import pytest
import requests

from preshift.act.executor import Executor
from preshift.act.haproxy import HAProxy
from preshift.act.journal import Journal
from preshift.act.phases import Phase
from preshift.act.plan_source import StaticPlanSource
from preshift.act.ports import Instance
from preshift.act.records import Notification, PlanItem, ReplicaRef
from preshift.act.swarm_runtime import SwarmRuntime
from preshift.config import parse_config
from preshift.testbed import IMAGE, Testbed, TestbedSpec
from preshift.testbed.haproxy import Backend
from preshift.testbed.load import Load

from .stack import wait_for

pytestmark = pytest.mark.integration

SPEC = TestbedSpec(
    prefix="sw", subnet="198.18.15", prometheus=False, prometheus_port=19990, swarm=True,
    # nothing listens there: only Swarm, the runtime and HAProxy are under test
    exporter_address="127.0.0.1:19952", simulator_address="127.0.0.1:19953",
)
FRONTEND, STATS = "127.0.0.1:19950", "127.0.0.1:19951"
PORT = 8080
MS = 1_000_000  # Swarm durations are in nanoseconds
SERVE_NODE = ["sh", "-c", 'echo "$NODE" > /www/index.html; exec httpd -f -p 80 -h /www']


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    bed = Testbed(SPEC)
    bed.up()
    try:
        yield bed
    finally:
        bed.down()  # raises if anything of the prefix is left


@pytest.fixture
def runtime(tb: Testbed) -> Iterator[SwarmRuntime]:
    cfg = parse_config({**tb.exporter_config(), "mode": "swarm", "swarm": {"manager": "n1"}})
    rt = SwarmRuntime(cfg.nodes, cfg.swarm.manager or "n1", timeout=10, wait=10)
    try:
        yield rt
    finally:
        rt.close()


def _running(tb: Testbed, service: str) -> dict[str, str]:
    """hostname -> container ID of the service's tasks that run and are wanted running."""
    m = tb.client("n1")
    hosts = {n.id: n.attrs["Description"]["Hostname"] for n in m.nodes.list()}
    return {hosts.get(t["NodeID"], "?"): t["Status"]["ContainerStatus"]["ContainerID"]
            for t in m.api.tasks(filters={"service": service, "desired-state": "running"})
            if t["Status"]["State"] == "running"}


@pytest.fixture
def web(tb: Testbed) -> Iterator[Testbed]:
    """`web` with one task on n1 and one on n2, n3 free again for the scheduler."""
    tb.reset()
    m = tb.client("n1")
    svc = m.services.create(
        IMAGE, SERVE_NODE, name="web", init=True, env=["NODE={{.Node.Hostname}}"],
        mode=dt.ServiceMode("replicated", replicas=2),
        constraints=["node.hostname!=n3"], container_labels={"preshift.service": "web"},
        labels={"team": "blue"},
        restart_policy=dt.RestartPolicy("any", delay=200 * MS),
        update_config=dt.UpdateConfig(parallelism=1, delay=0, monitor=1000 * MS,
                                      order="start-first", failure_action="pause"),
        stop_grace_period=2000 * MS,
        healthcheck={"test": ["CMD-SHELL", "test -s /www/index.html"],
                     "interval": 500 * MS, "timeout": 1000 * MS, "retries": 2},
        endpoint_spec=dt.EndpointSpec(ports={PORT: (80, "tcp", "host")}),
    )
    wait_for(lambda: sorted(_running(tb, "web")) == ["n1", "n2"], 20, "web on n1 and n2")
    # let the scheduler use n3 again: a placement-only change, no task moves
    raw = m.api.inspect_service(svc.id)
    raw["Spec"]["TaskTemplate"]["Placement"] = {}
    m.api._raise_for_status(m.api._post_json(
        m.api._url("/services/{0}/update", svc.id), data=raw["Spec"],
        params={"version": raw["Version"]["Index"]}))
    try:
        yield tb
    finally:
        tb.reset()


def http_body(address: str) -> str | None:
    r = requests.get(f"http://{address}:{PORT}/", timeout=2)
    return r.text.strip() if r.status_code == 200 else None


def replica_on(tb: Testbed, rt: SwarmRuntime, node: str) -> Instance:
    """The runtime's view of web's task on `node`, found by its container name (as the
    per-engine inventory names a replica)."""
    names = [c.name for c in tb.client(node).containers.list()
             if c.labels.get("preshift.service") == "web"]
    assert len(names) == 1, names
    inst = rt.inspect(node, names[0])
    assert inst is not None
    return inst


@dataclass
class Watcher:
    """Polls the manager every 50 ms: the fewest running tasks of component `web` (all its
    services) and every container ID seen running on n1."""

    tb: Testbed
    fewest: int = 99
    n1_ids: set[str] = field(default_factory=set)
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _count(self) -> tuple[int, set[str]]:
        m = self.tb.client("n1")
        hosts = {n.id: n.attrs["Description"]["Hostname"] for n in m.nodes.list()}
        ids = [s["ID"] for s in m.api.services()
               if (s["Spec"]["TaskTemplate"]["ContainerSpec"].get("Labels") or {})
               .get("preshift.service") == "web"]
        running, n1 = 0, set()
        for sid in ids:
            for t in m.api.tasks(filters={"service": sid, "desired-state": "running"}):
                if t["Status"]["State"] == "running":
                    running += 1
                    if hosts.get(t["NodeID"]) == "n1":
                        n1.add(t["Status"]["ContainerStatus"]["ContainerID"])
        return running, n1

    def _run(self) -> None:
        end = time.monotonic() + 90  # bounded whatever the test does
        while not self._stop.is_set() and time.monotonic() < end:
            running, n1 = self._count()
            self.fewest = min(self.fewest, running)
            self.n1_ids |= n1
            self.polls += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="swarm-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _spec(tb: Testbed, service: str) -> dict:
    return tb.client("n1").api.inspect_service(service)["Spec"]


# ---------------------------------------------------------------- the methods one by one
def test_runtime_methods_one_by_one(web: Testbed, runtime: SwarmRuntime) -> None:
    tb, rt = web, runtime
    n1 = replica_on(tb, rt, "n1")
    src = replica_on(tb, rt, "n2")
    # stable names: web.<slot>, whatever the container (task) is called
    assert {n1.name, src.name} == {"web.1", "web.2"}
    assert (src.node, src.component, src.state) == ("n2", "web", "running")
    assert (src.address, src.port) == (tb.address("n2"), PORT)
    assert rt.inspect("n2", src.name) == src
    n1_id = _running(tb, "web")["n1"]

    with Watcher(tb) as watch:
        labels = {"preshift.migration": "m-1", "preshift.replaces": src.name}
        canary = rt.clone(src, "n3", "web-m-1", labels)
        assert canary.name == "web-m-1" and canary.node == "n3"
        assert canary.state in ("created", "running")
        assert (canary.address, canary.port) == (tb.address("n3"), PORT)
        assert wait_for(lambda: http_body(tb.address("n3")), 15, "the copy to serve") == "n3"
        wait_for(lambda: rt.probe(rt.inspect("n3", "web-m-1")) == "healthy", 15, "healthy")
        spec = _spec(tb, "web-m-1")
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.hostname==n3"]
        assert spec["Labels"]["preshift.migration"] == "m-1"
        assert spec["Labels"]["team"] == "blue"
        assert spec["TaskTemplate"]["ContainerSpec"]["Labels"] == {
            "preshift.service": "web", **labels}
        assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
        again = rt.clone(src, "n3", "web-m-1", labels)  # idempotent: the same service
        assert again.container_id == rt.inspect("n3", "web-m-1").container_id

        # standby: exactly the n2 task goes; the n1 task is the same container
        t0 = time.monotonic()
        rt.standby("n2", src.name, {"preshift.standby_for": "m-1"})
        took = time.monotonic() - t0
        assert _running(tb, "web") == {"n1": n1_id}
        stopped = rt.inspect("n2", src.name)
        assert stopped is not None and stopped.state == "exited" and stopped.node == "n2"
        assert rt.probe(stopped) == "unhealthy"
        spec = _spec(tb, "web")
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert "node.hostname!=n2" in spec["TaskTemplate"]["Placement"]["Constraints"]
        assert "Platforms" not in spec["TaskTemplate"]["Placement"]
        assert not [c for c in tb.client("n2").containers.list()
                    if c.labels.get("preshift.service") == "web"]
        rt.standby("n2", src.name, {})  # again: nothing to do
        assert _spec(tb, "web")["Mode"]["Replicated"]["Replicas"] == 1

        # start: the slot comes back (on n2: n1 runs web, n3's port is the copy's)
        back = rt.start("n2", src.name, stopped.restart_policy)
        assert (back.name, back.node, back.state) == (src.name, "n2", "running")
        assert back.container_id != src.container_id  # a new task
        assert wait_for(lambda: http_body(tb.address("n2")), 10, "n2 to serve") == "n2"
        spec = _spec(tb, "web")
        assert spec["Mode"]["Replicated"]["Replicas"] == 2
        assert "node.hostname!=n2" not in spec["TaskTemplate"]["Placement"].get(
            "Constraints", [])
        assert not [k for k in spec["Labels"] if k.startswith("preshift.standby")]
        assert rt.start("n2", src.name).container_id == back.container_id  # idempotent

        # remove the copy: its service goes
        rt.remove("n3", "web-m-1")
        assert rt.inspect("n3", "web-m-1") is None
        rt.remove("n3", "web-m-1")  # gone already: fine

        # decommission: standby, then remove drops the mark and the constraint; the
        # replica count stays lowered and nothing moves
        rt.standby("n2", src.name, {})
        rt.remove("n2", src.name)
        assert rt.inspect("n2", src.name) is None
        spec = _spec(tb, "web")
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["TaskTemplate"]["Placement"].get("Constraints") in (None, [])
        assert not [k for k in spec["Labels"] if k.startswith("preshift.standby")]
        time.sleep(1.0)  # a rebalance would show by now
        assert _running(tb, "web") == {"n1": n1_id}
    assert watch.polls > 20
    assert watch.n1_ids == {n1_id}, "the n1 task was replaced or restarted"
    assert took < 5, took


# ---------------------------------------------------------------- a canary move under load
def test_canary_move_under_load_loses_nothing(web: Testbed, runtime: SwarmRuntime) -> None:
    tb, rt = web, runtime
    keep, src = replica_on(tb, rt, "n1"), replica_on(tb, rt, "n2")
    handle = tb.start_haproxy([Backend("be_web", FRONTEND, (
        (keep.name, tb.address("n1"), PORT, 100), (src.name, tb.address("n2"), PORT, 100)))],
        stats=STATS)
    try:
        traffic = HAProxy(handle.socket, timeout=2)
        wait_for(lambda: all(s.up for s in traffic.servers("be_web").values()), 10, "UP")
        host, port = handle.frontend("be_web")
        with Watcher(tb) as watch, Load(host, port, "/cgi-bin/slow", total=450, threads=6,
                                        deadline=60) as load:
            wait_for(lambda: load.count >= 30, 20, "load on n1 and n2")
            canary = rt.clone(src, "n3", "web-m-2", {"preshift.migration": "m-2",
                                                      "preshift.replaces": src.name})
            wait_for(lambda: rt.probe(rt.inspect("n3", canary.name)) == "healthy", 20,
                     "the copy to be healthy")
            canary = rt.inspect("n3", canary.name)
            assert canary is not None and canary.address and canary.port
            traffic.add_server("be_web", canary.name, canary.address, canary.port)
            wait_for(lambda: traffic.servers("be_web")[canary.name].up, 10, "copy UP")
            for pct in (10, 25, 50, 75, 100):  # the pair keeps the source's share
                traffic.set_weight("be_web", canary.name, pct)
                traffic.set_weight("be_web", src.name, 100 - pct)
                time.sleep(0.5)
            traffic.drain("be_web", src.name)
            wait_for(lambda: traffic.servers("be_web")[src.name].sessions == 0, 10, "drain")
            rt.standby(src.node, src.name, {"preshift.standby_for": "m-2"})
            standby = rt.inspect(src.node, src.name)
            assert standby is not None and standby.state == "exited"
        summary = load.summary()
        after = traffic.servers("be_web")
    finally:
        handle.stop()

    assert summary.failures == 0 and summary.statuses == {"200": 450}, summary
    assert {"n1", "n2", "n3"} <= set(summary.bodies), summary.bodies
    assert after[canary.name].failures == 0 and after[keep.name].failures == 0
    assert watch.fewest >= 2, f"only {watch.fewest} running task(s) of web at one point"
    assert watch.polls > 50
    assert len(watch.n1_ids) == 1, "the n1 task was replaced or restarted"
    assert sorted(_running(tb, "web")) == ["n1"] and sorted(_running(tb, "web-m-2")) == ["n3"]


# ---------------------------------------------------------------- the executor, unchanged
@pytest.mark.parametrize("rollback", [False, True], ids=["succeeds", "restored"])
def test_executor_moves_a_task_and_restores_it(web: Testbed, runtime: SwarmRuntime,
                                               tmp_path: Path, rollback: bool) -> None:
    """The real Executor over SwarmRuntime + HAProxy from one alert: to SUCCEEDED (standby
    decommissioned after standby_ttl), or rolled back from STANDBY (the slot restored)."""
    tb, rt = web, runtime
    keep, src = replica_on(tb, rt, "n1"), replica_on(tb, rt, "n2")
    cfg = parse_config({
        **tb.exporter_config(), "mode": "swarm", "swarm": {"manager": "n1"},
        "traffic": {"kind": "haproxy", "socket": str(SPEC.haproxy_socket),
                    "backends": {"web": "be_web"}},
        "migration": {"step_weights": [25, 50, 100], "step_interval": 1, "cooldown": 0,
                      "standby_ttl": 600 if rollback else 2, "drain_timeout": 5,
                      "health_timeout": 20, "analysis": {"min_requests": 1}},
    })
    handle = tb.start_haproxy([Backend("be_web", FRONTEND, (
        (keep.name, tb.address("n1"), PORT, 100), (src.name, tb.address("n2"), PORT, 100)))])
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        traffic = HAProxy(handle.socket, timeout=2)
        wait_for(lambda: all(s.up for s in traffic.servers("be_web").values()), 10, "UP")
        container = next(c.name for c in tb.client("n2").containers.list())
        item = PlanItem("move", "web", container, "n2", "n3", "risk", 50.0,
                        replicas=(ReplicaRef("n2", container),))
        ex = Executor(cfg, journal, rt, traffic, StaticPlanSource([item]))
        journal.record_notifications([Notification(
            "firing", "PreshiftFootprintDiscrepancy", "web", "fp", "2025-01-01T00:00:00Z",
            {"component": "web"})])
        phases: list[str] = []
        host, port = handle.frontend("be_web")
        with Load(host, port, "/", total=5000, threads=3, deadline=60, interval=0.05) as load:
            end = time.monotonic() + 50
            while time.monotonic() < end:
                ex.tick()
                m = journal.migrations(limit=1)[0] if journal.migrations(limit=1) else None
                if m is not None and (not phases or phases[-1] != m.phase):
                    phases.append(str(m.phase))
                    if rollback and m.phase == Phase.STANDBY:
                        journal.request(m.id, "rollback")
                if m is not None and m.terminal:
                    break
                time.sleep(0.25)
            load.stop()
        servers = traffic.servers("be_web")
    finally:
        journal.close()
        handle.stop()
    summary = load.summary()
    assert m is not None and m.source_name == src.name and m.source_node == "n2"
    assert summary.failures == 0, summary
    if rollback:
        assert phases[-3:] == ["standby", "restoring", "rolled_back"], phases
        assert sorted(servers) == sorted([keep.name, src.name])
        assert all(s.weight == 100 and s.up for s in servers.values()), servers
        assert sorted(_running(tb, "web")) == ["n1", "n2"]
        assert [s.name for s in tb.client("n1").services.list()] == ["web"]
    else:
        assert phases[-3:] == ["draining", "standby", "succeeded"], phases
        assert sorted(servers) == sorted([keep.name, m.canary_name])
        assert servers[m.canary_name].weight == 100
        assert sorted(_running(tb, "web")) == ["n1"]
        assert sorted(_running(tb, m.canary_name)) == ["n3"]
        spec = _spec(tb, "web")
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert not [k for k in spec["Labels"] if k.startswith("preshift.standby")]
