"""Side effects as values: what the machine asks the executor to do. Pure.

`machine.decide` returns at most one of these per tick; the executor journals its `action`
and `detail` as the step's intent, then carries it out through the ports (`apply`). Every
effect is idempotent on the port's side, so repeating one after a crash is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .ports import Instance

if TYPE_CHECKING:
    from .ports import Runtime, Traffic


@dataclass(frozen=True, slots=True)
class Clone:
    source: Instance
    node: str
    name: str
    labels: Mapping[str, str]
    action = "clone"

    @property
    def detail(self) -> str:
        return f"copy {self.source.name}@{self.source.node} to {self.node} as {self.name}"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        runtime.clone(self.source, self.node, self.name, self.labels)


@dataclass(frozen=True, slots=True)
class StartContainer:
    node: str
    name: str
    restart_policy: str | None = None  # the original's, journaled before it went to standby
    action = "start"

    @property
    def detail(self) -> str:
        return f"start {self.name}@{self.node}"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        runtime.start(self.node, self.name, self.restart_policy)


@dataclass(frozen=True, slots=True)
class Standby:
    node: str
    name: str
    labels: Mapping[str, str]
    action = "standby"

    @property
    def detail(self) -> str:
        return f"stop {self.name}@{self.node} and keep it on standby"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        runtime.standby(self.node, self.name, self.labels)


@dataclass(frozen=True, slots=True)
class RemoveContainer:
    node: str
    name: str
    action = "remove_container"

    @property
    def detail(self) -> str:
        return f"remove {self.name}@{self.node}"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        runtime.remove(self.node, self.name)


@dataclass(frozen=True, slots=True)
class AddServer:
    backend: str
    name: str
    address: str
    port: int
    action = "add_server"

    @property
    def detail(self) -> str:
        return f"add {self.backend}/{self.name} at {self.address}:{self.port}, weight 0"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        traffic.add_server(self.backend, self.name, self.address, self.port)


@dataclass(frozen=True, slots=True)
class SetWeights:
    backend: str
    weights: tuple[tuple[str, int], ...]  # (server, weight), applied in this order
    action = "set_weights"

    @property
    def detail(self) -> str:
        return f"{self.backend}: " + ", ".join(f"{n}={w}" for n, w in self.weights)

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        for name, weight in self.weights:
            traffic.set_weight(self.backend, name, weight)


@dataclass(frozen=True, slots=True)
class Drain:
    backend: str
    name: str
    action = "drain"

    @property
    def detail(self) -> str:
        return f"drain {self.backend}/{self.name}"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        traffic.drain(self.backend, self.name)


@dataclass(frozen=True, slots=True)
class Ready:
    backend: str
    name: str
    action = "ready"

    @property
    def detail(self) -> str:
        return f"{self.backend}/{self.name} back to ready"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        traffic.ready(self.backend, self.name)


@dataclass(frozen=True, slots=True)
class RemoveServer:
    backend: str
    name: str
    action = "remove_server"

    @property
    def detail(self) -> str:
        return f"remove {self.backend}/{self.name}"

    def apply(self, runtime: Runtime, traffic: Traffic) -> None:
        traffic.remove_server(self.backend, self.name)


Effect = (Clone | StartContainer | Standby | RemoveContainer | AddServer | SetWeights | Drain
          | Ready | RemoveServer)
