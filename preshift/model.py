"""The domain: nodes, replicas, the current footprint, failure events. Plain frozen data."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

#: Container label (after the configured prefix and a dot) that the executor sets to "true" on
#: replicas it starts as scale-ups: they are spares, not part of the intended replica count.
SCALE_UP_LABEL = "scale-up"

FailureReason = Literal["exit_nonzero", "oom", "unhealthy", "restart_loop", "unreachable"]
FAILURE_REASONS: tuple[FailureReason, ...] = (
    "exit_nonzero", "oom", "unhealthy", "restart_loop", "unreachable",
)


@dataclass(frozen=True, slots=True)
class NodeLabels:
    """Failure domains: a node sits on a host, in a rack, on a site (datacenter)."""

    host: str
    rack: str
    site: str


@dataclass(frozen=True, slots=True)
class Node:
    """A Docker engine as seen by the last refresh."""

    name: str
    url: str
    labels: NodeLabels
    reachable: bool
    engine_id: str | None = None
    hostname: str | None = None
    error: str | None = None  # why it is unreachable, for humans


@dataclass(frozen=True, slots=True)
class Replica:
    """One running (or stopped) instance of a component on a node."""

    container_id: str
    name: str
    component: str
    node: str
    state: str  # Docker's State.Status: running, exited, restarting, paused, created, dead
    image: str
    health: str | None = None  # healthy, unhealthy, starting, or None without a healthcheck
    labels: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class Footprint:
    """Where every replica runs now. `stale_nodes` were unreachable: their replicas are
    the last ones seen there, not confirmed by this refresh."""

    taken_at: float
    nodes: tuple[Node, ...]
    replicas: tuple[Replica, ...]
    stale_nodes: frozenset[str] = frozenset()

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def running_counts(self) -> Counter[tuple[str, str]]:
        """Running replicas per (component, node)."""
        return Counter((r.component, r.node) for r in self.replicas if r.running)

    def components(self) -> tuple[str, ...]:
        return tuple(sorted({r.component for r in self.replicas}))


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """A failure seen in Docker's event stream (or an engine becoming unreachable)."""

    ts: float  # seconds since the epoch, with sub-second precision
    reason: FailureReason
    node: str
    component: str = ""  # empty for node-level failures
    replica: str = ""
    detail: str = ""
