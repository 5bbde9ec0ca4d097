"""The Swarm inventory's pure parsers and the exporter's view (no Docker needed)."""

from __future__ import annotations

import json
from typing import Any

from preshift.model import NodeLabels
from preshift.sense.swarm import (
    SwarmView,
    current_task,
    exporter_view,
    parse_nodes,
    parse_services,
    parse_task,
    parse_tasks,
    standby_marks,
)


def node(nid: str, host: str, *, state: str = "ready", availability: str = "active",
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"ID": nid, "Description": {"Hostname": host},
            "Spec": {"Role": "worker", "Availability": availability, "Labels": labels or {}},
            "Status": {"State": state, "Addr": "198.18.15.11"}}


def service(sid: str, name: str, *, replicas: int | None = 2, component: str | None = "web",
            labels: dict[str, str] | None = None, extra: dict[str, str] | None = None,
            constraints: list[str] | None = None) -> dict[str, Any]:
    container_labels = {**({"preshift.service": component} if component else {}),
                        **(extra or {})}
    mode = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    return {"ID": sid, "Version": {"Index": 7}, "Spec": {
        "Name": name, "Labels": labels or {}, "Mode": mode,
        "TaskTemplate": {"ContainerSpec": {"Image": "box:1", "Labels": container_labels},
                         "Placement": {"Constraints": constraints or []}},
        "EndpointSpec": {"Ports": [
            {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443,
             "PublishMode": "host"},
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"},
            {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "host"},
            {"Protocol": "tcp", "TargetPort": 22, "PublishedPort": 2222,
             "PublishMode": "ingress"},
        ]}}}


def task(tid: str, sid: str, slot: int | None, nid: str, desired: str = "running",
         state: str = "running", created: str = "2026-01-01T00:00:01Z",
         cid: str = "c0ffee") -> dict[str, Any]:
    return {"ID": tid, "ServiceID": sid, "Slot": slot, "NodeID": nid, "DesiredState": desired,
            "CreatedAt": created, "Version": {"Index": 3},
            "Status": {"State": state, "Message": "started", "Err": "",
                       "ContainerStatus": {"ContainerID": cid}}}


def test_nodes_are_parsed_with_labels_and_schedulability() -> None:
    nodes = parse_nodes([
        node("b", "n2", availability="drain", labels={"preshift.rack": "r2"}),
        node("a", "n1", labels={"preshift.rack": "r1", "preshift.site": "dc1"}),
        node("c", "n3", state="down"),
    ])
    assert [n.hostname for n in nodes] == ["n1", "n2", "n3"]
    assert dict(nodes[0].labels) == {"preshift.rack": "r1", "preshift.site": "dc1"}
    assert [n.schedulable for n in nodes] == [True, False, False]
    assert nodes[0].address == "198.18.15.11" and nodes[0].role == "worker"


def test_services_keep_component_replicas_constraints_and_host_port() -> None:
    web, other, glob = parse_services([  # sorted by name
        service("s1", "web", constraints=["node.hostname!=n2"]),
        service("s2", "zeta", replicas=None),
        service("s3", "x", component=None),
    ])
    assert (web.name, web.mode, web.replicas, web.version) == ("web", "replicated", 2, 7)
    assert web.component() == "web" and web.constraints == ("node.hostname!=n2",)
    assert web.host_port == 8080  # the lowest host-mode TCP target port: 80
    assert web.image == "box:1"
    assert (glob.mode, glob.replicas) == ("global", None)
    assert other.component() is None and not other.owned()
    owned = parse_services([service("s4", "web-m1", labels={"preshift.migration": "m1"},
                                    extra={"preshift.scale-up": "true"})])[0]
    assert owned.owned() and owned.spare()


def test_no_host_port_means_none() -> None:
    raw = service("s1", "web")
    raw["Spec"]["EndpointSpec"] = {}
    assert parse_services([raw])[0].host_port is None


def test_tasks_parse_and_the_current_one_is_active_running_newest() -> None:
    old = task("t1", "s1", 2, "b", desired="shutdown", state="shutdown",
               created="2026-01-01T00:00:00Z", cid="old")
    new = task("t2", "s1", 2, "b", desired="running", state="starting",
               created="2026-01-01T00:00:05Z", cid="")
    run = task("t3", "s1", 2, "b", created="2026-01-01T00:00:02Z", cid="run")
    tasks = parse_tasks([new, old, run])
    assert [t.id for t in tasks] == ["t1", "t3", "t2"]  # oldest first
    assert tasks[0].container_id == "old" and not tasks[0].active
    cur = current_task(tasks, slot=2)
    assert cur is not None and cur.id == "t3"  # active and running beats newer pending
    assert current_task(tasks[:1], slot=2) is not None  # only a finished one: it
    assert current_task(tasks, slot=1) is None
    pending = parse_task(task("t4", "s1", 2, "", desired="running", state="pending"))
    assert pending.node_id == "" and pending.active and not pending.running
    assert parse_task(task("g", "s2", None, "a")).slot is None


def test_standby_marks_are_read_by_slot_and_bad_ones_skipped() -> None:
    labels = {"preshift.standby.2": json.dumps({"node": "n2", "step": "done"}),
              "preshift.standby.x": "{}", "preshift.standby.3": "not json",
              "preshift.standby.4": "[1]", "other": "1"}
    assert standby_marks(labels) == {2: {"node": "n2", "step": "done"}}
    assert standby_marks(labels, "acme") == {}


def test_exporter_view_counts_intended_and_running_and_maps_labels() -> None:
    view = SwarmView(
        nodes=parse_nodes([node("a", "n1", labels={"preshift.rack": "r1",
                                                   "preshift.site": "dc1",
                                                   "preshift.host": "h1"}),
                           node("b", "n2"), node("c", "n3", availability="drain")]),
        services=parse_services([
            service("s1", "web", replicas=2),
            service("s2", "web-m1", replicas=1, labels={"preshift.migration": "m1"}),
            service("s3", "web-m2", replicas=1, extra={"preshift.scale-up": "true"}),
            service("s4", "agent", replicas=None, component="agent"),
            service("s5", "plain", component=None),
        ]),
        tasks=parse_tasks([task("t1", "s1", 1, "a"), task("t2", "s1", 2, "b", state="failed"),
                           task("t3", "s2", 1, "c"), task("t4", "s3", 1, "a"),
                           task("t5", "s4", None, "a"), task("t6", "s5", 1, "a")]),
    )
    ev = exporter_view(view)
    assert ev.node_labels["n1"] == NodeLabels(host="h1", rack="r1", site="dc1")
    assert ev.node_labels["a"] == ev.node_labels["n1"]  # also by swarm node ID
    assert ev.node_labels["n2"] == NodeLabels(host="n2", rack="unknown", site="unknown")
    # web: 2 + the moved copy's 1; the scale-up spare is left out; global: schedulable nodes
    assert dict(ev.intended) == {"web": 3, "agent": 2}
    assert dict(ev.running) == {"web": 3, "agent": 1}  # t2 failed: not running
    assert dict(ev.services) == {"web": ("web", "web-m1", "web-m2"), "agent": ("agent",)}
    assert ev.unschedulable == frozenset({"n3"})


class _Api:
    """Just enough of docker-py's low-level API for read_swarm."""

    def __init__(self) -> None:
        self.filters: Any = "unset"

    def nodes(self) -> list[dict[str, Any]]:
        return [node("a", "n1")]

    def services(self) -> list[dict[str, Any]]:
        return [service("s1", "web")]

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        self.filters = filters
        return [task("t1", "s1", 1, "a")]


class _Client:
    def __init__(self) -> None:
        self.api = _Api()


def test_read_swarm_asks_for_wanted_tasks_only_by_default() -> None:
    from preshift.sense.swarm import read_for_exporter, read_swarm

    client = _Client()
    view = read_swarm(client)
    assert client.api.filters == {"desired-state": "running"}
    assert [s.name for s in view.services] == ["web"] and view.tasks[0].slot == 1
    read_swarm(client, all_tasks=True)
    assert client.api.filters is None
    assert dict(read_for_exporter(client).intended) == {"web": 2}
