"""Tear a testbed down: live, half-built, or left behind by a killed or crashed run.

Works from the state file when there is one and from the prefix's names otherwise. Order:
empty the engines (leave swarm, remove containers), stop dockerds, kill what containerd
still runs, stop the other daemons, unmount, delete network, cgroups and dirs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import docker
import docker.errors

from ..errors import TestbedError
from . import cleanup, engines, net, swarm
from .procs import Proc, State, parallel, stop
from .spec import NodeSpec, TestbedSpec

CLIENT_TIMEOUT = 10


def recorded(spec: TestbedSpec) -> tuple[State, TestbedSpec, list[NodeSpec]]:
    """State, the spec the earlier run used, and every node it may have created."""
    state = State(spec.state_file)
    if "spec" in state.data:
        with contextlib.suppress(TestbedError, TypeError):
            spec = TestbedSpec.from_json(state.data["spec"])
    indexes = {n.index for n in spec.node_specs}
    for d in (spec.root, spec.run):
        if d.is_dir():
            indexes |= {int(p.name[1:]) for p in d.iterdir()
                        if p.name[:1] == "n" and p.name[1:].isdigit()}
    return state, spec, [spec.node(i) for i in sorted(indexes)]


def dockerd_proc(state: State, n: NodeSpec) -> Proc | None:
    """From the state file, else from dockerd's own pidfile (same ownership check)."""
    p = state.proc(f"{n.name}/dockerd")
    if p is None and n.pidfile.exists():
        with contextlib.suppress(ValueError, OSError):
            p = Proc(f"{n.name}/dockerd", int(n.pidfile.read_text()), str(n.daemon_json))
    return p


def remove_containers(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True):
        # swarm may be removing a task container at the same moment: 404/409 are fine
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            c.remove(force=True)


def empty_engines(nodes: Sequence[NodeSpec]) -> None:
    """Leave the swarm and force-remove every container on each live engine, so no shim
    or mount stays. Workers leave first: a worker whose manager is gone waits ~5 s."""
    clients = {n.name: docker.DockerClient(base_url=n.socket_url, timeout=CLIENT_TIMEOUT)
               for n in nodes if engines.ping(n.socket)}

    def empty(c: docker.DockerClient) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            swarm.leave(c)
        with contextlib.suppress(docker.errors.DockerException):
            remove_containers(c)

    def manager(c: docker.DockerClient) -> bool:
        with contextlib.suppress(docker.errors.DockerException):
            return swarm.is_manager(c)
        return False

    try:
        roles = dict(zip(clients, parallel(manager, clients.values()), strict=True))
        parallel(empty, [c for name, c in clients.items() if not roles[name]])
        parallel(empty, [c for name, c in clients.items() if roles[name]])
    finally:
        for c in clients.values():
            c.close()


def drain_containerd(state: State, n: NodeSpec) -> None:
    """Kill tasks dockerd did not clean up (dockerd crashed or was SIGKILLed). If the node's
    containerd is gone but task bundles remain (their shims may live on), start it once:
    it reconnects to the shims and can then delete the tasks properly."""
    p = state.proc(f"{n.name}/containerd")
    if p is None or not p.owned():
        if not engines.has_task_bundles(n):
            return
        p = engines.start_containerd(n, in_netns=False)
        state.add_proc(p)
        engines.wait_ready({n.name: engines.Starting(
            p, lambda: engines.socket_ready(n.containerd_socket),
            n.data_dir / "containerd.log")}, 15, "containerd")
    engines.kill_containerd_tasks(n)


def leftovers(spec: TestbedSpec) -> list[str]:
    """Everything of this prefix that still exists (empty after a clean teardown)."""
    return net.leftovers(spec) + cleanup.leftovers(spec)


def teardown(spec: TestbedSpec, check: bool, timings: dict[str, float]) -> None:
    """Tear down everything of the prefix; record step times as down_<step> in `timings`.

    Every step runs even if an earlier one failed (the error then names what it could not
    remove), except deleting dirs, which refuses while mounts remain below them.
    """
    state, spec, nodes = recorded(spec)
    errors: list[str] = []
    mark = time.monotonic()

    def step(name: str, fn: Callable[[], object]) -> None:
        nonlocal mark
        try:
            fn()
        except (TestbedError, OSError) as exc:
            errors.append(f"{name}: {exc}")
        now = time.monotonic()
        timings[f"down_{name}"] = now - mark
        mark = now

    step("empty_engines", lambda: empty_engines(nodes))
    # dockerd first (it needs containerd to stop cleanly), all nodes at once
    step("stop_engines", lambda: stop([p for n in nodes if (p := dockerd_proc(state, n))]))
    step("drain_containerd", lambda: parallel(lambda n: drain_containerd(state, n), nodes))
    step("stop_daemons", lambda: stop(state.procs()))
    step("unmount", lambda: cleanup.unmount_all((spec.root, spec.run)))
    step("network", lambda: net.delete_all(spec))
    step("cgroups", lambda: cleanup.remove_cgroups(spec))
    step("dirs", lambda: cleanup.remove_dirs(spec))
    step("shared_dirs", lambda: cleanup.release_shared_dirs(spec))
    if check:
        errors += leftovers(spec)
    if errors:
        raise TestbedError(f"teardown of {spec.prefix!r} incomplete: " + "; ".join(errors))
