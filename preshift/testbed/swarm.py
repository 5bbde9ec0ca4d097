"""Swarm on the testbed: n1 manager, the others workers, node labels from engine labels.

Ingress routing mesh and VIP load balancing need IPVS, which the CI kernel lacks: publish
ports with mode=host and use endpoint_mode dnsrr on overlays.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

import docker
import docker.errors

from ..errors import TestbedError
from .procs import parallel
from .spec import LABEL_PREFIX, SWARM_LABEL_KEYS, NodeSpec

SWARM_PORT = 2377


def engine_swarm_labels(client: docker.DockerClient) -> dict[str, str]:
    """The engine's preshift.rack/site/host labels, to be copied to its swarm node."""
    keys = {f"{LABEL_PREFIX}.{k}" for k in SWARM_LABEL_KEYS}
    labels = dict(lb.split("=", 1) for lb in client.info().get("Labels", []))
    return {k: v for k, v in labels.items() if k in keys}


def form(nodes: Sequence[NodeSpec], clients: dict[str, docker.DockerClient],
         timeout: float = 30.0) -> None:
    """Init on the first node, join the rest in parallel, label, wait until all are Ready."""
    first, rest = nodes[0], nodes[1:]
    manager = clients[first.name]
    try:
        manager.swarm.init(advertise_addr=first.address,
                           listen_addr=f"{first.address}:{SWARM_PORT}")
        # The ingress network needs IPVS (absent on CI kernels, so the routing mesh never
        # works) and each engine waits 5 s for its removal when it leaves or stops. Removed
        # before any worker joins, no node ever builds an ingress sandbox.
        _remove_ingress(manager, timeout)
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]

        def join(node: NodeSpec) -> None:
            clients[node.name].swarm.join(
                remote_addrs=[f"{first.address}:{SWARM_PORT}"], join_token=token,
                listen_addr=f"{node.address}:{SWARM_PORT}", advertise_addr=node.address,
            )

        parallel(join, rest)
    except docker.errors.APIError as exc:
        raise TestbedError(f"forming the swarm failed: {exc.explanation or exc}") from None
    wait_ready(manager, len(nodes), timeout)
    reset_nodes(manager, {n.hostname: engine_swarm_labels(clients[n.name]) for n in nodes})


def _remove_ingress(manager: docker.DockerClient, timeout: float) -> None:
    """Remove the ingress network as soon as swarm init has created it (asynchronously).
    Workers that join afterwards never build an ingress sandbox; the manager's own goes
    away in about 1 s, which need not be waited for (measured: no slower leave or stop)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [n for n in manager.networks.list(filters={"driver": "overlay"})
                 if n.attrs.get("Ingress")]
        if found:
            for network in found:
                network.remove()
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"swarm: no ingress network after {timeout:g} s")
        time.sleep(0.05)


def wait_ready(manager: docker.DockerClient, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = [n.attrs["Status"]["State"] for n in manager.nodes.list()]
        if states.count("ready") == count:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"swarm: {states.count('ready')} of {count} nodes ready "
                               f"after {timeout:g} s ({states})")
        time.sleep(0.1)


def reset_nodes(manager: docker.DockerClient, labels: Mapping[str, dict[str, str]]) -> None:
    """Give each swarm node (by hostname) exactly `labels[hostname]` and availability active."""
    for snode in manager.nodes.list():
        want = labels.get(snode.attrs["Description"]["Hostname"])
        if want is None:
            continue
        spec = dict(snode.attrs["Spec"])
        if spec.get("Labels") == want and spec.get("Availability") == "active":
            continue
        spec["Labels"] = want
        spec["Availability"] = "active"
        snode.update(spec)


def is_manager(client: docker.DockerClient) -> bool:
    info = client.info().get("Swarm", {})
    return info.get("LocalNodeState") == "active" and bool(info.get("ControlAvailable"))


def info(client: docker.DockerClient) -> dict[str, object]:
    """Swarm view from one engine: state, and the node list if it is a manager."""
    sw = client.info().get("Swarm", {})
    out: dict[str, object] = {"state": sw.get("LocalNodeState", "unknown")}
    if sw.get("ControlAvailable"):
        out["nodes"] = {
            n.attrs["Description"]["Hostname"]: {
                "state": n.attrs["Status"]["State"],
                "role": n.attrs["Spec"]["Role"],
                "labels": n.attrs["Spec"].get("Labels", {}),
            }
            for n in client.nodes.list()
        }
    return out


def leave(client: docker.DockerClient) -> None:
    """Leave the swarm if in one (force: the manager is last and takes the swarm with it)."""
    with contextlib.suppress(docker.errors.APIError):
        if client.info().get("Swarm", {}).get("LocalNodeState") != "inactive":
            client.swarm.leave(force=True)
