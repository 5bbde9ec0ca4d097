"""Per-node daemons: a private containerd and a dockerd that uses it, both in the node netns.

dockerd 20.10 uses the system containerd whenever /run/containerd/containerd.sock exists,
which on a user's machine would mean running our containers in their containerd. So every
node gets its own containerd (own root, state and socket) and dockerd gets `--containerd`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import TestbedError
from .procs import DAEMON_ENV, Proc, alive, in_node, run, spawn
from .spec import NodeSpec

DOCKERD = Path("/usr/sbin/dockerd")
CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
# Swarm tasks use the local image and never try a registry (nodes have no route out anyway).
DOCKERD_ENV = {**DAEMON_ENV, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
V2_TASKS = "io.containerd.runtime.v2.task"


def _q(value: object) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(str(value))


def containerd_toml(node: NodeSpec) -> str:
    """Config of the node's private containerd: everything under the testbed's dirs."""
    sock = node.containerd_socket
    return "\n".join([
        "version = 2",
        f"root = {_q(node.containerd_root)}",
        f"state = {_q(node.containerd_dir / 'state')}",
        # dockerd does not need CRI, and CRI would look at /etc/cni and /opt/cni.
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        f"  address = {_q(sock)}",
        "[ttrpc]",
        f"  address = {_q(str(sock) + '.ttrpc')}",
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_q(node.containerd_root / 'opt')}",
        "",
    ])


def dockerd_argv(node: NodeSpec) -> list[str]:
    argv = [
        str(DOCKERD),
        "--config-file", str(node.daemon_json),
        "--data-root", str(node.data_root),
        "--exec-root", str(node.exec_root),
        "--pidfile", str(node.pidfile),
        "--host", node.socket_url,
        "--containerd", str(node.containerd_socket),
        "--cgroup-parent", node.cgroup_parent,
    ]
    for key, value in node.labels.items():
        argv += ["--label", f"{key}={value}"]
    return argv


def socket_ready(path: Path, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
        return True
    except OSError:
        return False


def ping(path: Path, timeout: float = 1.0) -> bool:
    """GET /_ping on a dockerd unix socket; True when it answers 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.") and head.split(b" ", 2)[1:2] == [b"200"]


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_containerd(node: NodeSpec, in_netns: bool = True) -> Proc:
    """Write the config and start containerd (in the node netns, with the node hostname)."""
    node.containerd_dir.mkdir(parents=True, exist_ok=True)
    node.containerd_root.mkdir(parents=True, exist_ok=True)
    node.containerd_config.write_text(containerd_toml(node))
    argv = [str(CONTAINERD), "--config", str(node.containerd_config)]
    if in_netns:
        # Host-network containers inherit the shim's (= containerd's) netns and UTS.
        argv = in_node(node.netns_path, node.hostname, argv)
    popen = spawn(argv, node.data_dir / "containerd.log", DAEMON_ENV)
    return Proc(f"{node.name}/containerd", popen.pid, str(node.containerd_config))


def start_dockerd(node: NodeSpec) -> Proc:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.run_dir.mkdir(parents=True, exist_ok=True)
    # Only the config file can set this key; without it all engines share
    # /etc/docker/key.json and so the same engine ID.
    node.daemon_json.write_text(
        json.dumps({"deprecated-key-path": str(node.data_dir / "key.json")}) + "\n"
    )
    # dockerd refuses to start while its pidfile names a live PID; after a crash that PID
    # may since belong to another program.
    if node.pidfile.exists():
        with contextlib.suppress(ValueError, OSError):
            if Proc("dockerd", int(node.pidfile.read_text()), str(node.daemon_json)).owned():
                raise TestbedError(f"dockerd of {node.name} is already running")
        node.pidfile.unlink(missing_ok=True)
    argv = in_node(node.netns_path, node.hostname, dockerd_argv(node))
    popen = spawn(argv, node.data_dir / "dockerd.log", DOCKERD_ENV)
    return Proc(f"{node.name}/dockerd", popen.pid, str(node.daemon_json))


@dataclass(frozen=True)
class Starting:
    """A daemon being started: how to tell it is ready, and its log for the error message."""

    proc: Proc
    ready: Callable[[], bool]
    log: Path


def wait_ready(starting: Mapping[str, Starting], timeout: float, what: str) -> None:
    """Poll until each daemon is ready; fail fast (with its log tail) if one exits."""
    pending = dict(starting)
    deadline = time.monotonic() + timeout
    while pending:
        for name, item in list(pending.items()):
            if item.ready():
                del pending[name]
            elif not alive(item.proc.pid):  # our own child: its PID cannot be recycled yet
                raise TestbedError(f"{what} of {name} exited during start-up: {_tail(item.log)}")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"{what} not ready after {timeout:g} s on {', '.join(pending)}")
        time.sleep(0.05)


def kill_containerd_tasks(node: NodeSpec) -> int:
    """Kill and delete every task left in the node's containerd (after a dockerd crash the
    containers keep running there). Returns how many tasks were removed."""
    base = [str(CTR), "--address", str(node.containerd_socket), "--timeout", "10s"]
    res = run([*base, "namespaces", "ls", "-q"], check=False, timeout=15)
    removed = 0
    for ns in res.stdout.split() if res.returncode == 0 else []:
        tasks = run([*base, "-n", ns, "tasks", "ls", "-q"], check=False, timeout=15)
        for task in tasks.stdout.split():
            run([*base, "-n", ns, "tasks", "delete", "--force", task], check=False, timeout=15)
            removed += 1
    return removed


def has_task_bundles(node: NodeSpec) -> bool:
    """True if containerd's state dir still holds task bundles (live shims may own them)."""
    root = node.containerd_dir / "state" / V2_TASKS
    return root.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in root.iterdir())
