"""`Runtime` over plain Docker engines (docker-py), one engine = one node.

`clone` rebuilds a container from its inspect data through the raw create API, so what is
copied is explicit (see `CONFIG_KEYS`, `HOST_CONFIG_KEYS`). Not copied, on purpose: volumes
and bind mounts (data does not move; stateful components are not migrated by default),
user-defined networks (they may not exist on the target), per-node settings (hostname,
cgroup parent, devices). Published ports keep their host port and are bound to the
target node's address.

Errors: reading raises SourceError, changing raises ActionError; both name the node and
container, and are retriable unless Docker refused the request itself (4xx).

Only Preshift's containers are changed: before start, standby, remove (and before reusing an
existing container under a canary's name) the target must carry the
component label `<prefix>.service`, and a reused canary also the migration label the
executor set. Otherwise a non-retriable ActionError names the container and the missing
label, and nothing is called on the engine (defence in depth: intake already skips
replicas whose component label does not match the plan).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import docker.errors
import requests

from ..config import NodeConfig
from ..errors import ActionError, SourceError
from ..sense._describe import describe
from ..sense.docker_engine import ClientFactory, _default_factory
from .ports import Health, Instance

#: Container Config fields a clone copies (Labels and ExposedPorts are handled too).
CONFIG_KEYS = (
    "Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Healthcheck", "StopSignal",
    "StopTimeout", "Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout",
    "AttachStderr", "Shell",
)
#: HostConfig fields a clone copies: resource limits, restart policy, init, security.
HOST_CONFIG_KEYS = (
    "Memory", "MemoryReservation", "MemorySwap", "MemorySwappiness", "KernelMemory",
    "NanoCpus", "CpuShares", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime",
    "CpusetCpus", "CpusetMems", "PidsLimit", "Ulimits", "BlkioWeight", "OomKillDisable",
    "OomScoreAdj", "ShmSize", "RestartPolicy", "Init", "LogConfig", "CapAdd", "CapDrop",
    "ReadonlyRootfs", "SecurityOpt", "Sysctls", "Tmpfs", "ExtraHosts", "Dns", "DnsOptions",
    "DnsSearch", "GroupAdd", "Privileged", "Runtime",
)
_BUILTIN_NETWORKS = ("default", "bridge", "host", "none")
DEFAULT_STOP_TIMEOUT = 10  # Docker's own default grace period, in seconds


class DockerRuntime:
    """Containers on plain Docker engines; one lazily created docker client per node."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        label_prefix: str = "preshift",
        timeout: float = 10.0,
        health_path: str | None = None,
        client_factory: ClientFactory | None = None,
        probe_timeout: float = 2.0,
    ) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.label_prefix = label_prefix
        self.service_label = f"{label_prefix}.service"
        self.migration_label = f"{label_prefix}.migration"
        self.timeout = float(timeout)
        self.health_path = health_path
        self.probe_timeout = float(probe_timeout)
        self._factory = client_factory or _default_factory
        self._lock = threading.Lock()  # guards the dicts below, never held across I/O
        self._clients: dict[str, Any] = {}
        # restart policy a standby had before, to restore on start (in memory only: the
        # journal is the source of truth across restarts)

    # ------------------------------------------------------------------ clients
    def _node(self, node: str) -> NodeConfig:
        cfg = self.nodes.get(node)
        if cfg is None:
            raise ActionError(f"unknown node {node!r}; configured nodes: {sorted(self.nodes)}")
        return cfg

    def client(self, node: str) -> Any:
        """The node's docker client (created on first use, then reused)."""
        cfg = self._node(node)
        with self._lock:
            cl = self._clients.get(node)
        if cl is not None:
            return cl
        try:
            cl = self._factory(cfg.url, self.timeout)  # negotiates the version: may raise
        except Exception as exc:
            raise SourceError(f"docker engine {node} ({cfg.url})",
                              describe(exc, self.timeout)) from exc
        with self._lock:
            cl = self._clients.setdefault(node, cl)
        return cl

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for cl in clients:
            with contextlib.suppress(Exception):
                cl.close()

    def _drop_client(self, node: str, exc: BaseException) -> None:
        """Forget a client after a connection failure, so the next call renegotiates."""
        if isinstance(exc, docker.errors.APIError):
            return  # the engine answered: the client is fine
        with self._lock:
            cl = self._clients.pop(node, None)
        if cl is not None:
            with contextlib.suppress(Exception):
                cl.close()

    @contextlib.contextmanager
    def reading(self, node: str, what: str) -> Iterator[None]:
        """Docker/connection errors inside become SourceError naming the node and `what`."""
        try:
            yield
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._drop_client(node, exc)
            raise SourceError(f"docker engine {node}", f"{what}: {_reason(exc, self.timeout)}",
                              retriable=_retriable(exc)) from exc

    @contextlib.contextmanager
    def changing(self, node: str, what: str) -> Iterator[None]:
        """Docker/connection errors (and SourceError) inside become ActionError."""
        try:
            yield
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._drop_client(node, exc)
            raise ActionError(f"{what} on node {node}: {_reason(exc, self.timeout)}",
                              retriable=_retriable(exc)) from exc
        except SourceError as exc:  # reading done as part of a change
            raise ActionError(f"{what}: {exc}", retriable=exc.retriable) from exc

    def _get(self, node: str, ref: str) -> Any | None:
        """The container object, or None when it does not exist (reading errors raise)."""
        cl = self.client(node)
        with self.reading(node, f"inspect container {ref}"):
            try:
                return cl.containers.get(ref)
            except docker.errors.NotFound:
                return None

    # ------------------------------------------------------------------ Runtime
    def inspect(self, node: str, name: str) -> Instance | None:
        c = self._get(node, name)
        return None if c is None else self._instance(node, c.attrs)

    def clone(
        self, source: Instance, node: str, name: str, labels: Mapping[str, str]
    ) -> Instance:
        what = f"clone {source.node}/{source.name} to {node}/{name}"
        with self.changing(node, what):
            existing = self._get(node, name)
            if existing is not None:
                # a container of that name that another migration (or someone else) made
                # is never started or adopted as this migration's canary
                want = labels.get(self.migration_label)
                self._check_ours(existing, node, name, what, {self.migration_label: want}
                                 if want else {})
                if existing.status != "running":
                    existing.start()
                return self._must_inspect(node, name)
        with self.changing(source.node, what):
            src = self._get(source.node, source.container_id) or self._get(
                source.node, source.name)
            if src is None:
                raise ActionError(f"{what}: source container is gone", retriable=False)
            attrs = src.attrs
            bindings = self._target_bindings(attrs, source.node, node)
            image = self.ensure_image(attrs, source.node, node)
        config = clone_config(attrs, image, labels, bindings)
        with self.changing(node, what):
            target = self.client(node)
            try:
                target.api.create_container_from_config(config, name=name)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: the name exists, a concurrent clone won
                    raise
            try:
                target.api.start(name)
            except docker.errors.APIError:
                # leave nothing half-made: a retry recreates it from scratch
                with contextlib.suppress(docker.errors.DockerException):
                    target.api.remove_container(name, force=True)
                raise
            return self._must_inspect(node, name)

    def probe(self, instance: Instance) -> Health:
        now = self.inspect(instance.node, instance.name)
        if now is None or not now.running:
            return "unhealthy"
        if now.health is not None:
            return _docker_health(now.health)
        address, port = now.address or instance.address, now.port or instance.port
        if self.health_path and address and port:
            return self._http_probe(address, port)
        return "healthy"

    def start(self, node: str, name: str, restart_policy: str | None = None) -> Instance:
        with self.changing(node, f"start container {name}"):
            c = self._get(node, name)
            if c is None:
                raise ActionError(f"start {name} on node {node}: no such container")
            self._check_ours(c, node, name, "start")
            if restart_policy not in (None, "", "no"):
                c.update(restart_policy=parse_restart_policy(restart_policy))
            if c.status == "paused":
                c.unpause()
            elif c.status != "running":
                c.start()
            return self._must_inspect(node, name)

    def standby(self, node: str, name: str, labels: Mapping[str, str]) -> None:
        # labels: Docker cannot relabel a container; the journal records them
        with self.changing(node, f"put container {name} on standby"):
            c = self._get(node, name)
            if c is None:
                return
            self._check_ours(c, node, name, "standby")
            host = c.attrs.get("HostConfig") or {}
            policy = dict(host.get("RestartPolicy") or {})
            if policy.get("Name") not in (None, "", "no"):
                # "no" first: an engine restart between the two calls must not revive it
                c.update(restart_policy={"Name": "no", "MaximumRetryCount": 0})
            if c.status in ("running", "paused", "restarting"):
                grace = (c.attrs.get("Config") or {}).get("StopTimeout")
                c.stop(timeout=int(grace if grace is not None else DEFAULT_STOP_TIMEOUT))

    def remove(self, node: str, name: str) -> None:
        with self.changing(node, f"remove container {name}"):
            c = self._get(node, name)
            if c is None:
                return
            self._check_ours(c, node, name, "remove")
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "in progress" not in str(exc.explanation):
                    raise

    # ------------------------------------------------------------------ helpers
    def _check_ours(self, c: Any, node: str, name: str, what: str,
                    extra: Mapping[str, str] | None = None) -> None:
        """ActionError (not retriable) unless the container carries the component label
        and each `extra` label with its value."""
        labels = (c.attrs.get("Config") or {}).get("Labels") or {}
        if not labels.get(self.service_label):
            raise not_ours(what, node, name, self.service_label)
        for key, value in (extra or {}).items():
            if labels.get(key) != value:
                raise not_ours(what, node, name, f"{key}={value}")

    def _must_inspect(self, node: str, name: str) -> Instance:
        inst = self.inspect(node, name)
        if inst is None:
            raise ActionError(f"container {name} on node {node} vanished right after a change",
                              retriable=True)
        return inst

    def _instance(self, node: str, attrs: Mapping[str, Any]) -> Instance:
        config = attrs.get("Config") or {}
        state = attrs.get("State") or {}
        labels = dict(config.get("Labels") or {})
        address, port = published(attrs)
        if address in (None, "", "0.0.0.0", "::"):
            address = node_address(self.nodes[node]) if node in self.nodes else None
        health = (state.get("Health") or {}).get("Status")
        return Instance(
            node=node,
            name=str(attrs.get("Name", "")).lstrip("/"),
            container_id=str(attrs.get("Id", "")),
            component=labels.get(self.service_label, ""),
            state=str(state.get("Status") or "unknown"),
            image=str(config.get("Image") or attrs.get("Image") or ""),
            address=address if port is not None else None,
            port=port,
            health=health or None,
            labels=MappingProxyType(labels),
            restart_policy=format_restart_policy((attrs.get("HostConfig") or {})
                                                 .get("RestartPolicy")),
        )

    def _target_bindings(
        self, attrs: Mapping[str, Any], source_node: str, node: str
    ) -> dict[str, list[dict[str, str]]]:
        """The source's port bindings, bound to the target node's address."""
        bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
        if not any(bindings.values()):
            return {}
        target = node_address(self._node(node))
        if target is None and node != source_node:
            raise ActionError(
                f"node {node} has no address: set nodes[].address of {node} in the "
                "configuration (the IP where its published ports are reached)")
        out: dict[str, list[dict[str, str]]] = {}
        for cport, binds in bindings.items():
            out[cport] = [{"HostIp": target if target is not None else b.get("HostIp", ""),
                           "HostPort": b.get("HostPort", "")} for b in binds or ()]
        return out

    def ensure_image(self, attrs: Mapping[str, Any], source_node: str, node: str) -> str:
        """The image reference to create the clone from; copies the image from the source
        engine (save -> load, streamed, no registry) when the target lacks it."""
        image_id = str(attrs.get("Image", ""))
        ref = str((attrs.get("Config") or {}).get("Image") or image_id)
        target = self.client(node)
        with self.changing(node, f"look up image {ref}"):
            by_ref = _image_id(target, ref)
            if by_ref == image_id:
                return ref
            if _image_id(target, image_id) is not None:
                return image_id  # the tag names another image there: use the exact one
        src = self.client(source_node)
        with self.changing(source_node, f"read image {ref}"):
            # save by tag only when the tag is this image on the source AND the target has
            # no such tag: loading moves the tag, and another image's tag must stay put
            save = ref if by_ref is None and _image_id(src, ref) == image_id else image_id
            stream = src.api.get_image(save)
        with self.changing(node, f"copy image {ref} from node {source_node}"):
            target.images.load(stream)
            if _image_id(target, image_id) is None:
                raise ActionError(f"image {ref} ({image_id[:19]}) was loaded on node {node} "
                                  "but is not there", retriable=True)
        return ref if save == ref else image_id

    def _http_probe(self, address: str, port: int) -> Health:
        host = f"[{address}]" if ":" in address else address
        try:
            r = requests.get(f"http://{host}:{port}{self.health_path}",
                             timeout=self.probe_timeout, allow_redirects=False)
        except requests.Timeout:
            return "unhealthy"
        except requests.ConnectionError:
            # refused, or docker-proxy accepted and closed at once: not listening yet
            return "starting"
        except requests.RequestException:
            return "unhealthy"
        return "healthy" if 200 <= r.status_code < 400 else "unhealthy"


# ---------------------------------------------------------------------- pure helpers
def not_ours(what: str, node: str, name: str, label: str,
             kind: str = "container") -> ActionError:
    """The refusal to change something that does not carry Preshift's labels."""
    return ActionError(
        f"{what}: refused, {kind} {name} on node {node} does not carry the label "
        f"{label}; it is not Preshift's to change", retriable=False)


def node_address(cfg: NodeConfig) -> str | None:
    """Where the node's published ports are reached: `address`, else a tcp:// URL's host."""
    if cfg.address:
        return cfg.address
    parts = urlsplit(cfg.url)
    if parts.scheme in ("tcp", "http", "https") and parts.hostname:
        return parts.hostname
    return None


def format_restart_policy(policy: Mapping[str, Any] | None) -> str | None:
    """Docker's RestartPolicy → "always", "unless-stopped", "on-failure:3", "no" (or None)."""
    if not policy or not policy.get("Name"):
        return None
    name, count = str(policy["Name"]), int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{count}" if name == "on-failure" and count else name


def parse_restart_policy(text: str) -> dict[str, Any]:
    """The inverse of format_restart_policy."""
    name, _, count = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count) if count.isdigit() else 0}


def published(attrs: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(HostIp, HostPort) of the lowest published TCP port; live ports first, else the
    configured bindings (a stopped container has no live ports)."""
    for ports in ((attrs.get("NetworkSettings") or {}).get("Ports"),
                  (attrs.get("HostConfig") or {}).get("PortBindings")):
        tcp = sorted(((int(k.split("/")[0]), v) for k, v in (ports or {}).items()
                      if k.endswith("/tcp") and v), key=lambda kv: kv[0])
        for _, binds in tcp:
            for b in binds:
                if str(b.get("HostPort") or "").isdigit():
                    return b.get("HostIp") or None, int(b["HostPort"])
    return None, None


def clone_config(
    attrs: Mapping[str, Any], image: str, labels: Mapping[str, str],
    bindings: Mapping[str, list[dict[str, str]]],
) -> dict[str, Any]:
    """The create-container body of a copy of the container described by `attrs`."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    body: dict[str, Any] = {k: config[k] for k in CONFIG_KEYS if config.get(k) is not None}
    body["Image"] = image
    body["Labels"] = {**(config.get("Labels") or {}), **labels}
    exposed = dict(config.get("ExposedPorts") or {})
    exposed.update({p: {} for p in bindings})
    if exposed:
        body["ExposedPorts"] = exposed
    host_config: dict[str, Any] = {k: host[k] for k in HOST_CONFIG_KEYS
                                   if host.get(k) not in (None, "", [])}
    if host.get("NetworkMode") in _BUILTIN_NETWORKS:
        host_config["NetworkMode"] = host["NetworkMode"]
    if host.get("IpcMode") in ("private", "shareable", "none"):  # not "container:<id>"
        host_config["IpcMode"] = host["IpcMode"]
    if bindings:
        host_config["PortBindings"] = dict(bindings)
    body["HostConfig"] = host_config
    return body


def _image_id(client: Any, ref: str) -> str | None:
    try:
        return str(client.api.inspect_image(ref)["Id"])
    except docker.errors.NotFound:
        return None


def _docker_health(status: str) -> Health:
    if status == "healthy":
        return "healthy"
    return "starting" if status == "starting" else "unhealthy"


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return describe(exc, timeout)


def _retriable(exc: BaseException) -> bool:
    """Connection problems and engine-side (5xx) errors pass; a refused request (4xx) does
    not, except a conflict (409: e.g. removal in progress)."""
    if isinstance(exc, docker.errors.APIError) and exc.status_code is not None:
        return not (400 <= exc.status_code < 500) or exc.status_code == 409
    return not isinstance(exc, docker.errors.ImageLoadError)
