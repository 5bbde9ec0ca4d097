"""Docker Swarm inventory from a manager: nodes, services and tasks.

A Preshift component on Swarm is every service whose container spec carries the label
`<prefix>.service=<component>`; a replica is a task (its container on its node). The per-engine
inventory (`docker_engine.py`) already sees the task containers on each node; this module adds
what only a manager knows: the swarm node labels (failure domains, copied from the engines'
`<prefix>.rack/site/host`), each service's spec replica count (the intended count) and which
task runs where.

Pure parsers (`parse_nodes`, `parse_services`, `parse_tasks`) turn the Engine API's JSON into
frozen records; `read_swarm(client)` is the thin reader (three list calls on a manager);
`exporter_view(view, prefix)` returns what the exporter needs. Nothing here imports docker-py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..model import SCALE_UP_LABEL, NodeLabels

#: Task states in which a task holds (or is about to hold) its slot: not yet finished.
ACTIVE_DESIRED = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready",
                            "starting", "running"})
#: Task states before the container runs; a task there is on its way ("created").
STARTING_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready",
                             "starting"})
#: Finished task states whose container is gone or stopped for good.
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})


def _labels(raw: Any) -> Mapping[str, str]:
    return MappingProxyType({str(k): str(v) for k, v in (raw or {}).items()})


@dataclass(frozen=True, slots=True)
class SwarmNode:
    """A swarm node as the manager sees it."""

    id: str
    hostname: str
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker
    address: str | None = None  # Status.Addr
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def schedulable(self) -> bool:
        """Ready and active: Swarm may place tasks there."""
        return self.state == "ready" and self.availability == "active"


@dataclass(frozen=True, slots=True)
class PublishedPort:
    target: int
    published: int | None
    protocol: str
    mode: str  # host or ingress


@dataclass(frozen=True, slots=True)
class SwarmService:
    """A service's spec, reduced to what placement and counting need."""

    id: str
    name: str
    mode: str  # replicated, global, replicated-job, global-job
    replicas: int | None  # spec replicas (replicated only)
    labels: Mapping[str, str]  # service labels
    container_labels: Mapping[str, str]  # ContainerSpec.Labels: every task container has them
    constraints: tuple[str, ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    image: str = ""
    version: int = 0

    def component(self, prefix: str = "preshift") -> str | None:
        """The Preshift component (`<prefix>.service` container label), or None."""
        return self.container_labels.get(f"{prefix}.service") or None

    def owned(self, prefix: str = "preshift") -> bool:
        """Created by Preshift (a migration's copy): its service label `<prefix>.migration`."""
        return f"{prefix}.migration" in self.labels

    def spare(self, prefix: str = "preshift") -> bool:
        """A scale-up spare: the planner leaves it out of the intended count."""
        return self.container_labels.get(f"{prefix}.{SCALE_UP_LABEL}") == "true"

    def standby_marks(self, prefix: str = "preshift") -> dict[int, dict[str, Any]]:
        """Slots put on standby by Preshift (service labels `<prefix>.standby.<slot>`)."""
        return standby_marks(self.labels, prefix)

    @property
    def host_port(self) -> int | None:
        """The published port of the lowest host-mode TCP target port (what HAProxy uses)."""
        ports = sorted((p for p in self.ports if p.mode == "host" and p.protocol == "tcp"
                        and p.published), key=lambda p: p.target)
        return ports[0].published if ports else None


@dataclass(frozen=True, slots=True)
class SwarmTask:
    """One task: a slot of a service on a node (NodeID empty while unassigned)."""

    id: str
    service_id: str
    slot: int | None  # replicated services; None for global ones
    node_id: str
    desired: str  # desired state: running, ready, shutdown, remove, ...
    state: str  # observed state: new ... running, complete, shutdown, failed, rejected
    container_id: str = ""
    message: str = ""
    error: str = ""
    created_at: str = ""
    version: int = 0

    @property
    def active(self) -> bool:
        """Swarm wants it to run (it holds its slot)."""
        return self.desired in ACTIVE_DESIRED

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class SwarmView:
    """A snapshot of one manager's view."""

    nodes: tuple[SwarmNode, ...] = ()
    services: tuple[SwarmService, ...] = ()
    tasks: tuple[SwarmTask, ...] = ()

    def node(self, node_id: str) -> SwarmNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def service(self, name_or_id: str) -> SwarmService | None:
        return next((s for s in self.services if name_or_id in (s.name, s.id)), None)

    def tasks_of(self, service: SwarmService) -> tuple[SwarmTask, ...]:
        return tuple(t for t in self.tasks if t.service_id == service.id)


# ---------------------------------------------------------------------- pure parsers
def parse_nodes(raw: Iterable[Mapping[str, Any]]) -> tuple[SwarmNode, ...]:
    """`GET /nodes` → SwarmNode records, sorted by hostname."""
    out = []
    for n in raw:
        spec, status = n.get("Spec") or {}, n.get("Status") or {}
        out.append(SwarmNode(
            id=str(n.get("ID", "")),
            hostname=str((n.get("Description") or {}).get("Hostname") or ""),
            state=str(status.get("State") or "unknown"),
            availability=str(spec.get("Availability") or "active"),
            role=str(spec.get("Role") or "worker"),
            address=status.get("Addr") or None,
            labels=_labels(spec.get("Labels")),
        ))
    return tuple(sorted(out, key=lambda n: (n.hostname, n.id)))


def parse_service(s: Mapping[str, Any]) -> SwarmService:
    """One `GET /services` entry → SwarmService."""
    spec = s.get("Spec") or {}
    task = spec.get("TaskTemplate") or {}
    container = task.get("ContainerSpec") or {}
    mode_spec = spec.get("Mode") or {}
    mode = next(iter(mode_spec), "replicated").lower()
    mode = {"replicatedjob": "replicated-job", "globaljob": "global-job"}.get(mode, mode)
    replicas = None
    if mode == "replicated":
        replicas = int((mode_spec.get("Replicated") or {}).get("Replicas") or 0)
    ports = tuple(
        PublishedPort(target=int(p.get("TargetPort") or 0),
                      published=int(p["PublishedPort"]) if p.get("PublishedPort") else None,
                      protocol=str(p.get("Protocol") or "tcp"),
                      mode=str(p.get("PublishMode") or "ingress"))
        for p in (spec.get("EndpointSpec") or {}).get("Ports") or ()
    )
    return SwarmService(
        id=str(s.get("ID", "")),
        name=str(spec.get("Name") or ""),
        mode=mode,
        replicas=replicas,
        labels=_labels(spec.get("Labels")),
        container_labels=_labels(container.get("Labels")),
        constraints=tuple((task.get("Placement") or {}).get("Constraints") or ()),
        ports=ports,
        image=str(container.get("Image") or ""),
        version=int((s.get("Version") or {}).get("Index") or 0),
    )


def parse_services(raw: Iterable[Mapping[str, Any]]) -> tuple[SwarmService, ...]:
    """`GET /services` → SwarmService records, sorted by name."""
    return tuple(sorted((parse_service(s) for s in raw), key=lambda s: s.name))


def parse_task(t: Mapping[str, Any]) -> SwarmTask:
    """One `GET /tasks` entry → SwarmTask."""
    status = t.get("Status") or {}
    slot = t.get("Slot")
    return SwarmTask(
        id=str(t.get("ID", "")),
        service_id=str(t.get("ServiceID") or ""),
        slot=int(slot) if slot else None,
        node_id=str(t.get("NodeID") or ""),
        desired=str(t.get("DesiredState") or ""),
        state=str(status.get("State") or ""),
        container_id=str((status.get("ContainerStatus") or {}).get("ContainerID") or ""),
        message=str(status.get("Message") or ""),
        error=str(status.get("Err") or ""),
        created_at=str(t.get("CreatedAt") or ""),
        version=int((t.get("Version") or {}).get("Index") or 0),
    )


def parse_tasks(raw: Iterable[Mapping[str, Any]]) -> tuple[SwarmTask, ...]:
    """`GET /tasks` → SwarmTask records, oldest first within a slot."""
    return tuple(sorted((parse_task(t) for t in raw),
                        key=lambda t: (t.service_id, t.slot or 0, t.created_at, t.id)))


def standby_marks(labels: Mapping[str, str], prefix: str = "preshift") -> dict[int, dict[str, Any]]:
    """`<prefix>.standby.<slot>` service labels (JSON objects) by slot; bad ones skipped."""
    head = f"{prefix}.standby."
    out: dict[int, dict[str, Any]] = {}
    for key, value in labels.items():
        slot = key[len(head):]
        if not key.startswith(head) or not slot.isdigit():
            continue
        try:
            mark = json.loads(value)
        except ValueError:
            continue
        if isinstance(mark, dict):
            out[int(slot)] = mark
    return out


def current_task(tasks: Sequence[SwarmTask], slot: int | None = None,
                 node_id: str | None = None) -> SwarmTask | None:
    """The task that stands for a slot (or, for a global service, a node) now: an active
    one, running first, newest first; else the newest finished one; None without tasks."""
    mine = [t for t in tasks if (slot is None or t.slot == slot)
            and (node_id is None or t.node_id == node_id)]
    if not mine:
        return None
    return max(mine, key=lambda t: (t.active, t.active and t.running, t.created_at, t.version))


# ---------------------------------------------------------------------- what the exporter needs
@dataclass(frozen=True, slots=True)
class ExporterSwarm:
    """What the exporter takes from Swarm: failure domains per node and intended counts."""

    #: swarm node labels as failure domains, by hostname AND by swarm node ID (the engine's
    #: `info()["Swarm"]["NodeID"]`): host/rack/site from `<prefix>.host/rack/site`, else the
    #: hostname / "unknown" (the same defaults as the engine inventory)
    node_labels: Mapping[str, NodeLabels]
    #: component → intended replica count: the sum of spec replicas of its replicated
    #: services, scale-up spares left out; a global service counts its schedulable nodes
    intended: Mapping[str, int]
    #: component → tasks running now (what Swarm reports, for comparison)
    running: Mapping[str, int]
    #: component → names of its services
    services: Mapping[str, tuple[str, ...]]
    #: hostnames of nodes that are not ready or not active
    unschedulable: frozenset[str]


def exporter_view(view: SwarmView, prefix: str = "preshift") -> ExporterSwarm:
    """Reduce a SwarmView to what the exporter needs (pure)."""
    labels: dict[str, NodeLabels] = {}
    for n in view.nodes:
        nl = NodeLabels(host=n.labels.get(f"{prefix}.host") or n.hostname,
                        rack=n.labels.get(f"{prefix}.rack") or "unknown",
                        site=n.labels.get(f"{prefix}.site") or "unknown")
        labels[n.hostname] = nl
        labels[n.id] = nl
    schedulable = sum(1 for n in view.nodes if n.schedulable)
    intended: dict[str, int] = {}
    running: dict[str, int] = {}
    services: dict[str, list[str]] = {}
    for s in view.services:
        comp = s.component(prefix)
        if comp is None:
            continue
        services.setdefault(comp, []).append(s.name)
        if not s.spare(prefix):
            count = s.replicas if s.replicas is not None else (
                schedulable if s.mode == "global" else 0)
            intended[comp] = intended.get(comp, 0) + count
        running[comp] = running.get(comp, 0) + sum(
            1 for t in view.tasks_of(s) if t.active and t.running)
    return ExporterSwarm(
        node_labels=MappingProxyType(labels),
        intended=MappingProxyType(intended),
        running=MappingProxyType(running),
        services=MappingProxyType({k: tuple(sorted(v)) for k, v in services.items()}),
        unschedulable=frozenset(n.hostname for n in view.nodes if not n.schedulable),
    )


# ---------------------------------------------------------------------- the thin reader
def read_swarm(client: Any, *, all_tasks: bool = False) -> SwarmView:
    """Read nodes, services and tasks from a manager's docker client (docker-py). Only tasks
    Swarm wants running unless `all_tasks` (finished ones pile up to the history limit).
    Errors are docker-py's; the caller turns them into SourceError."""
    filters = None if all_tasks else {"desired-state": "running"}
    return SwarmView(
        nodes=parse_nodes(client.api.nodes()),
        services=parse_services(client.api.services()),
        tasks=parse_tasks(client.api.tasks(filters=filters)),
    )


def read_for_exporter(client: Any, prefix: str = "preshift") -> ExporterSwarm:
    """`exporter_view(read_swarm(client))`: the one call the exporter needs."""
    return exporter_view(read_swarm(client), prefix)
