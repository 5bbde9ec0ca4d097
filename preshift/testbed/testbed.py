"""The testbed: N Docker engines in network namespaces, optional Swarm, a real Prometheus.

One code path serves the CLI (`preshift testbed up|status|down`) and the pytest fixtures:

    with Testbed(TestbedSpec(prefix="tt", subnet="198.18.9")) as tb:
        tb.client("n1").containers.run(IMAGE, init=True, detach=True, ...)

`up()` first clears whatever an earlier run of the same prefix left, and `down()` removes
everything (also after a crash); both work from the state file and from the prefix's names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import yaml

from ..errors import TestbedError
from . import alertmanager, cleanup, engines, haproxy, net, prometheus, swarm
from .alertmanager import AlertmanagerHandle
from .haproxy import Backend, HAProxyHandle
from .image import IMAGE_CHANGES, build_rootfs_tar
from .procs import DAEMON_ENV, State, in_node, parallel, stop
from .spec import IMAGE, NodeSpec, TestbedSpec
from .teardown import CLIENT_TIMEOUT, dockerd_proc, remove_containers, teardown
from .teardown import leftovers as teardown_leftovers

# (binary, package that provides it on Debian)
REQUIRED = (
    ("dockerd", "docker.io"), ("docker-proxy", "docker.io"), ("docker-init", "tini"),
    ("containerd", "containerd"), ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"), ("runc", "runc"), ("ip", "iproute2"), ("iptables", "iptables"),
    ("nsenter", "util-linux"), ("unshare", "util-linux"), ("umount", "mount"),
    ("hostname", "hostname"),
)


class Testbed:
    """Bring up, inspect, disturb and tear down one testbed (one prefix)."""

    __test__ = False  # not a pytest test class

    def __init__(self, spec: TestbedSpec | None = None) -> None:
        self.spec = spec or TestbedSpec()
        self._clients: dict[str, docker.DockerClient] = {}
        self.timings: dict[str, float] = {}

    @classmethod
    def attach(cls, prefix: str = "ps", run_dir: Path = TestbedSpec.run_dir) -> Testbed:
        """The testbed of `prefix` as its state file describes it (for status/down)."""
        base = TestbedSpec(prefix=prefix, run_dir=run_dir)
        recorded = State(base.state_file).data.get("spec")
        return cls(TestbedSpec.from_json(recorded) if recorded else base)

    # context manager: up on enter, down on exit whatever happened inside
    def __enter__(self) -> Testbed:
        self.up()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # ------------------------------------------------------------------ lookup
    def node(self, node: str | int) -> NodeSpec:
        nodes = self.spec.node_specs
        for n in nodes:
            if node in (n.name, n.index):
                return n
        raise TestbedError(f"no node {node!r}; nodes are {', '.join(n.name for n in nodes)}")

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return self.spec.node_specs

    def socket_url(self, node: str | int) -> str:
        return self.node(node).socket_url

    def address(self, node: str | int) -> str:
        return self.node(node).address

    def node_command(self, node: str | int, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside the node's network namespace (e.g. curl, nc)."""
        return in_node(self.node(node).netns_path, None, argv)

    def client(self, node: str | int) -> docker.DockerClient:
        n = self.node(node)
        if n.name not in self._clients:
            self._clients[n.name] = docker.DockerClient(
                base_url=n.socket_url, timeout=CLIENT_TIMEOUT)
        return self._clients[n.name]

    def _drop_client(self, name: str) -> None:
        c = self._clients.pop(name, None)
        if c is not None:
            with contextlib.suppress(Exception):
                c.close()

    # ------------------------------------------------------------------ up
    def preflight(self) -> None:
        """Fail early, with the fix, if we are not root or a tool is missing."""
        if os.geteuid() != 0:
            raise TestbedError("the testbed needs root (network namespaces, dockerd): "
                               "run it with sudo")
        path = DAEMON_ENV["PATH"]
        required = list(REQUIRED)
        if self.spec.prometheus:
            required.append(("prometheus", "prometheus"))
        missing = [f"{b} (apt-get install {pkg})" for b, pkg in required
                   if not shutil.which(b, path=path)]
        if not Path("/bin/busybox").exists():
            missing.append("/bin/busybox (apt-get install busybox-static)")
        if missing:
            raise TestbedError("missing: " + ", ".join(missing))

    def _check_port_free(self) -> None:
        with socket.socket() as s:
            # a port left in TIME-WAIT by the last run's Prometheus is free to listen on
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.spec.prometheus_port))
            except OSError:
                raise TestbedError(
                    f"port 127.0.0.1:{self.spec.prometheus_port} is in use; choose another "
                    "prometheus_port (--prometheus-port)") from None

    def up(self) -> Testbed:
        """Clear leftovers of this prefix, then create network, engines, image, Prometheus
        and (if asked) the swarm. On any failure or interrupt everything is torn down."""
        self.preflight()
        t0 = time.monotonic()
        self._teardown(check=False)
        self.timings = {"clear": time.monotonic() - t0}
        try:
            self._up()
        except BaseException:
            with contextlib.suppress(Exception):
                self._teardown(check=False)
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def _up(self) -> None:
        spec, mark = self.spec, time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = now - mark
            mark = now

        net.check_subnet_free(spec)
        if spec.prometheus:
            self._check_port_free()
        state = State(spec.state_file)
        cleanup.claim_shared_dirs(spec)
        state.data = {"spec": spec.to_json(), "procs": {}}
        state.save()
        spec.root.mkdir(parents=True, exist_ok=True)
        net.create_bridge(spec)
        for n in self.nodes:
            net.create_node_net(spec, n)
        lap("network")
        if spec.prometheus:  # starts in the background while the engines come up
            prometheus.write_config(spec)
            state.add_proc(prometheus.start(spec))
        starting = {}
        for n in self.nodes:
            p = engines.start_containerd(n)
            state.add_proc(p)
            starting[n.name] = engines.Starting(
                p, lambda n=n: engines.socket_ready(n.containerd_socket),
                n.data_dir / "containerd.log")
        engines.wait_ready(starting, 30, "containerd")
        lap("containerd")
        self._start_dockerds(self.nodes, state)
        lap("engines")
        tar = build_rootfs_tar()
        spec.image_tar.write_bytes(tar)
        parallel(lambda n: self.client(n.name).api.import_image_from_data(
            tar, repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1],
            changes=list(IMAGE_CHANGES)), self.nodes)
        lap("image")
        if spec.prometheus:
            proc = state.proc("prometheus")
            if proc is None:
                raise TestbedError(f"prometheus missing from {spec.state_file}")
            engines.wait_ready({"prometheus": engines.Starting(
                proc, lambda: prometheus.ready(spec, 0.5),
                spec.prometheus_dir / "prometheus.log")}, 30, "prometheus")
            lap("prometheus")
        if spec.swarm:
            swarm.form(self.nodes, {n.name: self.client(n.name) for n in self.nodes})
            lap("swarm")

    def _start_dockerds(self, nodes: Sequence[NodeSpec], state: State) -> None:
        starting = {}
        for n in nodes:
            p = engines.start_dockerd(n)
            state.add_proc(p)
            starting[n.name] = engines.Starting(
                p, lambda n=n: engines.ping(n.socket), n.data_dir / "dockerd.log")
        engines.wait_ready(starting, 60, "dockerd")
        for n in nodes:
            # The exec chain (nsenter, unshare, sh) never forks: dockerd has the PID we saw.
            pid = int(n.pidfile.read_text().strip() or 0)
            if pid != starting[n.name].proc.pid:
                raise TestbedError(f"dockerd of {n.name}: pidfile says {pid}, "
                                   f"started {starting[n.name].proc.pid}")

    # ------------------------------------------------------------------ down
    def down(self) -> None:
        """Remove everything this prefix created; raise if anything is left behind."""
        t0 = time.monotonic()
        self._teardown(check=True)
        self.timings["down"] = time.monotonic() - t0

    def _teardown(self, check: bool) -> None:
        for name in list(self._clients):
            self._drop_client(name)
        teardown(self.spec, check, self.timings)

    def leftovers(self) -> list[str]:
        """Everything of this prefix that still exists (empty after a clean down())."""
        return teardown_leftovers(self.spec)

    # ------------------------------------------------------------------ disturbances
    def stop_engine(self, node: str | int, kill: bool = False) -> None:
        """Stop the node's dockerd (SIGTERM; kill=True: SIGKILL, like a crash). Its
        containerd keeps running, as on a real host."""
        n = self.node(node)
        state = State(self.spec.state_file)
        p = dockerd_proc(state, n)
        self._drop_client(n.name)
        if p is None or not p.owned():
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        stop([p])
        state.drop_proc(p.role)

    def start_engine(self, node: str | int) -> None:
        """Start the node's dockerd again (and its containerd if that is gone too)."""
        n = self.node(node)
        if engines.ping(n.socket):
            return
        state = State(self.spec.state_file)
        cp = state.proc(f"{n.name}/containerd")
        if cp is None or not cp.owned():
            cp = engines.start_containerd(n)
            state.add_proc(cp)
            engines.wait_ready({n.name: engines.Starting(
                cp, lambda: engines.socket_ready(n.containerd_socket),
                n.data_dir / "containerd.log")}, 30, "containerd")
        self._start_dockerds([n], state)

    def cut_link(self, node: str | int) -> None:
        """Unplug the node: its veth goes down (swarm marks it Down after about 12 s)."""
        net.set_link(self.node(node), up=False)

    def restore_link(self, node: str | int) -> None:
        net.set_link(self.node(node), up=True)

    def reset(self) -> None:
        """Between tests: links up, engines running, no services, no containers, no custom
        networks, swarm node labels and availability back to their defaults."""
        for n in self.nodes:
            if not net.link_up(n):
                self.restore_link(n.name)
            if not engines.ping(n.socket):
                self.start_engine(n.name)
        manager = self.client(self.nodes[0].name)
        if swarm.is_manager(manager):
            for svc in manager.services.list():
                with contextlib.suppress(docker.errors.NotFound):
                    svc.remove()
            swarm.reset_nodes(manager, {n.hostname: swarm.engine_swarm_labels(
                self.client(n.name)) for n in self.nodes})
        parallel(lambda n: remove_containers(self.client(n.name)), self.nodes)
        deadline = time.monotonic() + 20
        while any(self.client(n.name).containers.list(all=True) for n in self.nodes):
            if time.monotonic() > deadline:
                raise TestbedError("reset: containers still present after 20 s")
            parallel(lambda n: remove_containers(self.client(n.name)), self.nodes)
            time.sleep(0.1)
        for n in self.nodes:
            with contextlib.suppress(docker.errors.APIError):
                self.client(n.name).networks.prune()

    # ------------------------------------------------------------------ Prometheus
    def write_prometheus_config(self, rule_files: Sequence[Path] | None = None) -> Path:
        """Regenerate Prometheus' config (rule_files replaces the spec's list); then
        call reload_prometheus()."""
        return prometheus.write_config(self.spec, rule_files)

    def reload_prometheus(self) -> None:
        prometheus.reload(self.spec)

    @property
    def prometheus_url(self) -> str:
        return self.spec.prometheus_url

    # ------------------------------------------------------------------ test equipment
    def start_haproxy(
        self, backends: Sequence[Backend], stats: str | None = None
    ) -> HAProxyHandle:
        """Start HAProxy (admin socket in the run dir, one loopback frontend per backend,
        optional Prometheus stats on `stats`); replaces a running one. down() stops it."""
        return haproxy.start(self.spec, backends, stats)

    def start_alertmanager(
        self, webhook_url: str, credentials_file: Path | None = None, **timing: str
    ) -> AlertmanagerHandle:
        """Start Alertmanager on 127.0.0.1:<alertmanager_port>, routing every alert to
        `webhook_url` (bearer token from `credentials_file`); down() stops it."""
        return alertmanager.start(self.spec, webhook_url, credentials_file, **timing)

    # ------------------------------------------------------------------ exporter config
    def exporter_config(self) -> dict[str, Any]:
        """Preshift configuration for an exporter watching this testbed."""
        return {
            "prometheus": {"url": self.spec.prometheus_url},
            "nodes": [
                {"name": n.name, "url": n.socket_url, "address": n.address,
                 "labels": {"host": n.host, "rack": n.rack, "site": n.site}}
                for n in self.nodes
            ],
        }

    def write_exporter_config(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(self.exporter_config(), sort_keys=False))
        return p

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What is running: per node reachable/pid/socket/address/labels/containers, plus
        Prometheus and swarm."""
        state = State(self.spec.state_file)
        nodes: dict[str, Any] = {}
        for n in self.nodes:
            p = dockerd_proc(state, n)
            entry: dict[str, Any] = {
                "reachable": engines.ping(n.socket),
                "pid": p.pid if p and p.owned() else None,
                "socket": n.socket_url, "address": n.address, "netns": n.netns,
                "link_up": net.link_up(n), "labels": None, "containers": None,
            }
            if entry["reachable"]:
                with contextlib.suppress(docker.errors.DockerException):
                    info = self.client(n.name).info()
                    entry["labels"] = dict(lb.split("=", 1) for lb in info.get("Labels", []))
                    entry["containers"] = info.get("Containers")
                    entry["hostname"] = info.get("Name")
                    entry["engine_id"] = info.get("ID")
            nodes[n.name] = entry
        pp = state.proc("prometheus")
        out: dict[str, Any] = {
            "prefix": self.spec.prefix,
            "state_file": str(self.spec.state_file) if self.spec.state_file.exists() else None,
            "nodes": nodes,
            "prometheus": {
                "url": self.spec.prometheus_url if self.spec.prometheus else None,
                "up": self.spec.prometheus and prometheus.ready(self.spec),
                "pid": pp.pid if pp and pp.owned() else None,
            },
            "swarm": None,
        }
        for role in (haproxy.ROLE, alertmanager.ROLE):
            p = state.proc(role)
            out[role] = {"pid": p.pid} if p and p.owned() else None
        first = self.nodes[0]
        if nodes[first.name]["reachable"]:
            with contextlib.suppress(docker.errors.DockerException):
                out["swarm"] = swarm.info(self.client(first.name))
        return out
