"""Ports of the act layer: what the executor needs from the container runtime and the
traffic layer. Adapters: `docker_runtime.DockerRuntime` (plain engines), `haproxy.HAProxy`
(runtime API), `nop` (dry-run and "no traffic layer"). Adapters raise only
`preshift.errors.ActionError` (changing failed) or `SourceError` (reading failed), each with
`.retriable`: a transient error leaves the migration where it is and the next tick retries.

Every method is idempotent: the executor may repeat a step after a crash without knowing
whether it happened (it journals the intent first, then re-observes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

Health = Literal["healthy", "unhealthy", "starting"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One container of a component on one node, as the runtime sees it now."""

    node: str
    name: str  # container name; unique per node, and the HAProxy server name
    container_id: str
    component: str
    state: str  # Docker's State.Status: running, exited, created, restarting, paused, dead
    image: str
    address: str | None = None  # where its published port is reached (None: not published)
    port: int | None = None  # the published host port that serves traffic
    health: str | None = None  # Docker healthcheck status, None without a healthcheck
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    restart_policy: str | None = None  # "always", "unless-stopped", "on-failure:3", "no"

    @property
    def running(self) -> bool:
        return self.state == "running"


class Runtime(Protocol):
    """Containers on nodes (plain Docker engines; Swarm gets its own adapter)."""

    def inspect(self, node: str, name: str) -> Instance | None:
        """The container `name` on `node`, or None when it does not exist."""

    def clone(
        self, source: Instance, node: str, name: str, labels: Mapping[str, str]
    ) -> Instance:
        """Create and start a copy of `source` on `node` named `name`: same image, command,
        entrypoint, environment, labels (plus `labels`), resource limits, healthcheck, restart
        policy and exposed/published container ports (published on the target node's address).
        Copies the image from the source node when the target lacks it. If `name` already
        exists on `node`, starts it if needed and returns it (idempotent)."""

    def probe(self, instance: Instance) -> Health:
        """Docker's healthcheck status when the container has one, else an HTTP GET of the
        configured health path on address:port (2xx/3xx healthy), else running = healthy.
        A container that is not running (or gone) is unhealthy."""

    def start(self, node: str, name: str, restart_policy: str | None = None) -> Instance:
        """Start a stopped container (restoring a standby); idempotent. `restart_policy`
        (as in Instance.restart_policy) is put back first when given: the executor journals
        the original's policy before `standby` sets it to "no"."""

    def standby(self, node: str, name: str, labels: Mapping[str, str]) -> None:
        """Stop the container (after its traffic is drained) and keep it for a fast rollback:
        restart policy "no" (so an engine restart does not bring it back; the caller keeps
        the original policy, Instance.restart_policy, to give it back to `start`). Docker cannot
        relabel a container, so `labels` are recorded by the adapter where it can (the
        journal is the source of truth). Idempotent; a missing container is not an error."""

    def remove(self, node: str, name: str) -> None:
        """Stop (if running) and remove the container; missing is not an error."""


@dataclass(frozen=True, slots=True)
class Server:
    """One server of an HAProxy backend (from `show stat`)."""

    name: str
    address: str
    port: int
    weight: int
    status: str  # UP, DOWN, MAINT, DRAIN, NOLB, "UP 1/2", ... as HAProxy prints it
    sessions: int  # scur: current sessions (drained when 0)
    requests: int  # stot: cumulative sessions sent to it
    failures: int  # hrsp_5xx + eresp + econ: cumulative failed responses/connections

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


class Traffic(Protocol):
    """A traffic layer in front of a component's replicas (one HAProxy backend each)."""

    def servers(self, backend: str) -> dict[str, Server]:
        """Every server of `backend` by name."""

    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        """Register a server with weight 0 and health checks, enabled (idempotent: an
        existing server with that name is re-pointed/enabled, not duplicated)."""

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        """Weight 0..256 (HAProxy's range; Preshift uses percentages 0..100)."""

    def drain(self, backend: str, name: str) -> None:
        """No new connections; existing ones finish."""

    def ready(self, backend: str, name: str) -> None:
        """Back to normal service (undo drain/maint)."""

    def remove_server(self, backend: str, name: str) -> None:
        """Put in maintenance, then delete; a missing server is not an error."""
