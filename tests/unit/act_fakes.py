"""In-memory fakes of the act layer's ports, for the executor's pure-logic tests.

`World` is both a Runtime and a Traffic: containers on nodes and one HAProxy-like set of
backends whose server status follows the container's health. It records every call, can be
told to fail a method (`fail`), to "crash" around one (`crash`, a BaseException that no
handler in the executor catches, like kill -9), and checks that no change the executor asks
for takes a component below min_available (`violations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from preshift.act.ports import Health, Instance, Server
from preshift.act.records import PlanItem, ReplicaRef
from preshift.config import Config, parse_config
from preshift.errors import ActionError


class Crash(BaseException):
    """Simulated process death (not an Exception: nothing in the executor catches it)."""


@dataclass
class Box:
    node: str
    name: str
    component: str
    state: str = "running"
    health: str = "healthy"
    address: str | None = None
    port: int | None = 8080
    labels: dict[str, str] = field(default_factory=dict)
    fail_ratio: float = 0.0  # share of its requests that fail
    restart_policy: str = "unless-stopped"


@dataclass
class Srv:
    address: str
    port: int
    weight: int = 0
    admin: str = "ready"  # ready | drain | maint
    sessions: int = 0
    requests: int = 0
    failures: int = 0
    checks_pending: int = 0  # like HAProxy: a new server is DOWN until a health check passes


class World:
    def __init__(self, min_available: Mapping[str, int] | None = None,
                 requests_per_read: int = 20) -> None:
        self.boxes: dict[tuple[str, str], Box] = {}
        self.backends: dict[str, dict[str, Srv]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail: dict[str, ActionError] = {}  # method -> error raised (once, then removed)
        self.fail_always: dict[str, ActionError] = {}
        self.crash: dict[str, str] = {}  # method -> "before" | "after" (once)
        self.min_available = dict(min_available or {})
        self.violations: list[str] = []
        self.requests_per_read = requests_per_read
        self.clone_health = "healthy"

    # building ------------------------------------------------------------------------

    def add(self, node: str, name: str, component: str, **kw: Any) -> Box:
        box = Box(node, name, component, address=f"10.0.0.{len(self.boxes) + 1}", **kw)
        self.boxes[(node, name)] = box
        return box

    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        self._call("add_server", backend, name, address, port)
        srvs = self.backends.setdefault(backend, {})
        if name in srvs:
            srvs[name].address, srvs[name].port, srvs[name].admin = address, port, "ready"
        else:
            srvs[name] = Srv(address, port, checks_pending=1)
        self._done("add_server")

    def box_named(self, name: str) -> Box | None:
        return next((b for b in self.boxes.values() if b.name == name), None)

    def serving(self, component: str) -> int:
        return sum(1 for b in self.boxes.values() if b.component == component
                   and b.state == "running" and b.health != "unhealthy")

    def routable(self, backend: str) -> int:
        return sum(1 for n, s in self.backends.get(backend, {}).items()
                   if s.weight > 0 and s.admin == "ready" and self._status(n, s) == "UP")

    # failure injection -----------------------------------------------------------------

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        if self.crash.get(method) == "before":
            del self.crash[method]
            raise Crash(f"{method} before")
        if method in self.fail:
            raise self.fail.pop(method)
        if method in self.fail_always:
            raise self.fail_always[method]

    def _done(self, method: str) -> None:
        if self.crash.get(method) == "after":
            del self.crash[method]
            raise Crash(f"{method} after")

    def _guard(self, component: str, before: int, what: str) -> None:
        after = self.serving(component)
        need = min(self.min_available.get(component, 1), before)
        if after < need:
            self.violations.append(f"{what}: {component} serving {before} → {after}")

    # Runtime -------------------------------------------------------------------------

    def _inst(self, b: Box) -> Instance:
        return Instance(b.node, b.name, f"id-{b.name}", b.component, b.state, "img:1",
                        b.address, b.port, b.health if b.state == "running" else None,
                        MappingProxyType(dict(b.labels)), b.restart_policy)

    def inspect(self, node: str, name: str) -> Instance | None:
        b = self.boxes.get((node, name))
        return self._inst(b) if b else None

    def clone(self, source: Instance, node: str, name: str,
              labels: Mapping[str, str]) -> Instance:
        self._call("clone", node, name)
        b = self.boxes.get((node, name))
        if b is None:
            b = self.add(node, name, source.component, health=self.clone_health,
                         labels={**source.labels, **labels})
        b.state = "running"
        self._done("clone")
        return self._inst(b)

    def probe(self, instance: Instance) -> Health:
        b = self.boxes.get((instance.node, instance.name))
        if b is None or b.state != "running":
            return "unhealthy"
        return b.health  # type: ignore[return-value]

    def start(self, node: str, name: str, restart_policy: str | None = None) -> Instance:
        self._call("start", node, name)
        b = self.boxes[(node, name)]
        b.state = "running"
        if restart_policy is not None:
            b.restart_policy = restart_policy
        self._done("start")
        return self._inst(b)

    def standby(self, node: str, name: str, labels: Mapping[str, str]) -> None:
        self._call("standby", node, name)
        b = self.boxes.get((node, name))
        if b is not None:
            before = self.serving(b.component)
            b.state = "exited"
            b.restart_policy = "no"  # as Docker: a standby must not come back on its own
            self._guard(b.component, before, f"standby {name}")
        self._done("standby")

    def remove(self, node: str, name: str) -> None:
        self._call("remove", node, name)
        b = self.boxes.get((node, name))
        if b is not None:
            before = self.serving(b.component)
            del self.boxes[(node, name)]
            self._guard(b.component, before, f"remove {name}")
        self._done("remove")

    # Traffic -------------------------------------------------------------------------

    def _status(self, name: str, s: Srv) -> str:
        if s.admin == "maint":
            return "MAINT"
        if s.checks_pending:
            return "DOWN"
        b = self.box_named(name)
        up = b is not None and b.state == "running" and b.health == "healthy"
        if not up:
            return "DOWN"
        return "DRAIN" if s.admin == "drain" else "UP"

    def servers(self, backend: str) -> dict[str, Server]:
        srvs = self.backends.get(backend, {})
        self._serve(backend, self.requests_per_read)
        out = {n: Server(n, s.address, s.port, s.weight, self._status(n, s), s.sessions,
                         s.requests, s.failures) for n, s in srvs.items()}
        for s in srvs.values():  # the check runs between two reads
            s.checks_pending = max(0, s.checks_pending - 1)
        return out

    def _serve(self, backend: str, n: int) -> None:
        srvs = self.backends.get(backend, {})
        live = {k: s for k, s in srvs.items()
                if s.weight > 0 and s.admin == "ready" and self._status(k, s) == "UP"}
        total = sum(s.weight for s in live.values())
        for k, s in live.items():
            got = n * s.weight // total
            s.requests += got
            b = self.box_named(k)
            s.failures += round(got * (b.fail_ratio if b else 0.0))

    def _before_traffic(self, backend: str) -> int:
        return self.routable(backend)

    def _after_traffic(self, backend: str, before: int, what: str) -> None:
        if self.routable(backend) < min(1, before):
            self.violations.append(f"{what}: {backend} has no routable server left")

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        self._call("set_weight", backend, name, weight)
        before = self._before_traffic(backend)
        self.backends[backend][name].weight = weight
        self._after_traffic(backend, before, f"set_weight {name}={weight}")
        self._done("set_weight")

    def drain(self, backend: str, name: str) -> None:
        self._call("drain", backend, name)
        before = self._before_traffic(backend)
        self.backends[backend][name].admin = "drain"
        self._after_traffic(backend, before, f"drain {name}")
        self._done("drain")

    def ready(self, backend: str, name: str) -> None:
        self._call("ready", backend, name)
        self.backends[backend][name].admin = "ready"
        self._done("ready")

    def remove_server(self, backend: str, name: str) -> None:
        self._call("remove_server", backend, name)
        before = self._before_traffic(backend)
        self.backends.get(backend, {}).pop(name, None)
        self._after_traffic(backend, before, f"remove_server {name}")
        self._done("remove_server")

    def mutations(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] != "servers"]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def make_config(**migration: Any) -> Config:
    traffic = migration.pop("traffic", "haproxy")
    services = migration.pop("services", {"web": {"min_available": 1}})
    mig = {"step_weights": [25, 50, 100], "step_interval": 2, "health_timeout": 10,
           "progress_deadline": 30, "drain_timeout": 5, "standby_ttl": 20, "cooldown": 0,
           "analysis": {"min_requests": 5, "max_error_ratio": 0.1, "failed_checks": 2}}
    analysis = migration.pop("analysis", {})
    mig.update(migration)
    mig["analysis"] = {**mig["analysis"], **analysis}  # type: ignore[dict-item]
    raw: dict[str, Any] = {
        "nodes": [{"name": n, "url": f"tcp://10.1.0.{i}:2375"}
                  for i, n in enumerate(("n1", "n2", "n3"), 1)],
        "services": services,
        "migration": mig,
    }
    if traffic == "haproxy":
        raw["traffic"] = {"kind": "haproxy", "socket": "/tmp/none.sock",
                          "backends": {"web": "be_web"}}
    return parse_config(raw)


def web_world(config: Config, replicas: int = 1) -> World:
    """web-1..N on n1 (all in backend be_web at weight 100 when traffic is on)."""
    w = World({k: v.min_available for k, v in config.services.items()})
    for i in range(1, replicas + 1):
        b = w.add("n1", f"web-{i}", "web")
        if config.traffic.kind == "haproxy":
            w.backends.setdefault("be_web", {})[b.name] = Srv(b.address or "", 8080, 100)
    return w


def move_item(replica: str = "web-1", to: str = "n2", *, action: str = "move",
              replicas: tuple[ReplicaRef, ...] = (ReplicaRef("n1", "web-1"),)) -> PlanItem:
    return PlanItem(action=action, component="web", replica=replica,
                    from_node="n1" if replica else None, to_node=to,
                    reason="risk 0.5 > tolerance 0.2", priority=50.0, hps=50.0,
                    target_hps=98.0, replicas=replicas)


def with_state(box: Box, **kw: Any) -> Box:
    return replace(box, **kw)


class Recorder:
    """An observer that keeps every event (and checks each phase change is allowed)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, str]] = []
        self.phases: list[tuple[str | None, str]] = []
        self.bad: list[str] = []

    def on_step(self, m: Any, action: str, outcome: str) -> None:
        self.steps.append((m.id, action, outcome))

    def on_phase(self, m_old: Any, m_new: Any) -> None:
        from preshift.act.phases import allowed

        old = m_old.phase if m_old is not None else None
        self.phases.append((old and str(old), str(m_new.phase)))
        if old is not None and not allowed(old, m_new.phase):
            self.bad.append(f"{old} → {m_new.phase}")


class Harness:
    """A journal, a fake world, a static plan and an executor, on an injectable clock."""

    def __init__(self, path: Any, items: Any = None, replicas: int = 1, **cfg: Any) -> None:
        from preshift.act.executor import Executor
        from preshift.act.journal import Journal
        from preshift.act.plan_source import StaticPlanSource

        self.config = make_config(**cfg)
        self.clock = Clock()
        self.world = web_world(self.config, replicas)
        self.path = path
        self.journal = Journal(path, clock=self.clock)
        self.plans = StaticPlanSource([move_item()] if items is None else items)
        self.events = Recorder()
        self.query: Any = None
        self.ex = Executor(self.config, self.journal, self.world, self.world, self.plans,
                           clock=self.clock, observer=self.events,
                           query=lambda q: self.query(q) if self.query else None)

    def restart(self) -> None:
        """A new process: a fresh journal connection and executor on the same file."""
        from preshift.act.executor import Executor
        from preshift.act.journal import Journal

        self.journal.close()
        self.journal = Journal(self.path, clock=self.clock)
        self.ex = Executor(self.config, self.journal, self.world, self.world, self.plans,
                           clock=self.clock, observer=self.events,
                           query=lambda q: self.query(q) if self.query else None)

    def fire(self, fingerprint: str = "fp1", status: str = "firing",
             labels: Mapping[str, str] | None = None) -> None:
        from preshift.act.records import Notification

        labels = {"component": "web"} if labels is None else labels
        self.journal.record_notifications([Notification(
            status, "PreshiftFootprintDiscrepancy", labels.get("component", ""), fingerprint,
            "2025-01-01T00:00:00Z", labels)])

    def m(self) -> Any:
        return self.journal.migrations(limit=1)[0]

    def tick(self, dt: float = 1.0) -> Any:
        self.clock.advance(dt)
        return self.ex.tick()

    def run(self, until: Any = None, dt: float = 1.0, max_ticks: int = 400) -> Any:
        """Tick until `until(migration)` (default: terminal); returns the migration."""
        until = until or (lambda m: m.terminal)
        for _ in range(max_ticks):
            self.tick(dt)
            ms = self.journal.migrations(limit=1)
            if ms and until(ms[0]):
                return ms[0]
        raise AssertionError(f"not reached after {max_ticks} ticks: {self.m()}")
