"""Fault harness for migrations on a real testbed (used by test_faults.py and
bench/bench_faults.py).

One plain-Docker testbed (3 engines), a component `web` with replicas web-n1 (n1) and web-n2
(n2) behind a real HAProxy, and the real executor with the real adapters (DockerRuntime,
HAProxy runtime API, PromQL against the testbed's Prometheus) moving web-n2 to n3.

Faults are injected by wrapping the adapters (`Faulty`): a `Trigger` fires on the first
adapter call made while the journal row is in a given phase (`kind="effect"`: the first
side effect; `"any"`: the first call, reads included, for phases without effects), before
or after that call. A kill -9 runs the executor in a child process (`python -m
tests.integration.faults <spec>`) that SIGKILLs itself at the trigger; the other faults run
the executor in-process and are healed by the driver (`Fault.heal_if` / `heal_after`).

Two engine faults: "engine" stops the target's dockerd (n3: the canary's), "source" the
original's (n2: the risky node failing, what Preshift moves away from). The source engine is
started again once the move waits only for the original's removal (`data.cleanup` in
standby) or is terminal; its dockerd then restarts web-n2 by its restart policy (unless it
was put on standby already), and the decommission must remove it.

Own names: prefix rf, subnet 198.18.18, ports 127.0.0.1:20420-20449.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from preshift.act.docker_runtime import DockerRuntime
from preshift.act.factory import make_executor, make_query
from preshift.act.haproxy import HAProxy
from preshift.act.journal import Journal
from preshift.act.phases import Phase
from preshift.act.plan_source import PlanSource, StaticPlanSource
from preshift.act.records import Migration, new_migration_id
from preshift.config import Config, load_config
from preshift.errors import TestbedError
from preshift.testbed import IMAGE, Testbed, TestbedSpec
from preshift.testbed import haproxy as tb_haproxy
from preshift.testbed.haproxy import Backend
from preshift.testbed.load import Load, Summary
from preshift.testbed.procs import State

from .stack import ROOT, wait_for, write_yaml

P = Phase
PREFIX, SUBNET = "rf", "198.18.18"
PROM_PORT = 20420
EXPORTER, SIMULATOR = "127.0.0.1:20422", "127.0.0.1:20423"
FRONTEND = "127.0.0.1:20424"
#: Where the exporter case's exporter listens (nothing listens there while it is "down").
EXPORTER_CASE = "127.0.0.1:20426"
BACKEND, COMPONENT, PORT = "be_web", "web", 8080
ORIGINALS = ("web-n1", "web-n2")
SOURCE, TARGET = "n2", "n3"
TICK = 0.1  # the executor's tick in these tests (the webhook's default is 1 s)
#: The app: /tmp/ok is its health; a test removes it from a canary to make it fail.
SERVE = ["sh", "-c", ': > /tmp/ok; echo "$NODE" > /www/index.html; '
         "exec httpd -f -p 80 -h /www"]
MS = 1_000_000  # Docker durations are in nanoseconds

SPEC = TestbedSpec(prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT,
                   exporter_address=EXPORTER, simulator_address=SIMULATOR)

#: The phases a move passes through on its way to success, and the two ways back.
FORWARD = (P.PLANNED, P.STARTING, P.HEALTH_CHECK, P.ROUTING, P.SHIFTING, P.PROMOTED,
           P.DRAINING, P.STANDBY)
BACK = (P.ROLLING_BACK, P.RESTORING)
#: Phases in which the executor takes no side effect: their trigger is the first call.
NO_EFFECT = frozenset({P.PLANNED, P.HEALTH_CHECK})
#: To reach a way back: the canary fails its health check in this phase.
SABOTAGE_IN = {P.ROLLING_BACK: P.SHIFTING, P.RESTORING: P.STANDBY}
READS = frozenset({"inspect", "probe", "servers"})


def settings(**over: Any) -> dict[str, Any]:
    """Fast migration settings: a case takes seconds."""
    mig: dict[str, Any] = {
        "step_weights": [50, 100], "step_interval": "0.4s", "health_timeout": "6s",
        "drain_timeout": "3s", "progress_deadline": "7s", "standby_ttl": "1.5s",
        "cooldown": "0s", "max_concurrent": 1, "max_moves_per_node_per_hour": 1000,
        "analysis": {"min_requests": 1, "max_error_ratio": 0.2, "failed_checks": 1},
    }
    analysis = over.pop("analysis", {})
    mig.update(over)
    mig["analysis"] = {**mig["analysis"], **analysis}
    return mig


def config_dict(tb: Testbed, journal: Path, exporter: str = EXPORTER_CASE,
                **migration: Any) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg["prometheus"].update(timeout="1s")
    cfg.update(
        services={COMPONENT: {"min_available": 1}},
        docker={"timeout": "3s"},
        webhook={"journal": str(journal), "exporter_url": f"http://{exporter}",
                 "tick": f"{TICK}s"},
        traffic={"kind": "haproxy", "socket": str(tb.spec.haproxy_socket), "timeout": "1s",
                 "backends": {COMPONENT: BACKEND}},
        migration=settings(**migration),
    )
    return cfg


# -- adapters with fault injection ----------------------------------------------------------


@dataclass
class Trigger:
    """Fire `action` once, on the first adapter call made while the row is in `phase`
    (`kind` "effect": the first side effect), `when` "before" or "after" that call."""

    phase: Phase
    action: Callable[[], None]
    when: str = "before"
    kind: str = "effect"
    fired: bool = False
    call: str = ""  # the call it fired on
    nth: int = 0  # > 0: on the nth side effect of the run instead, whatever the phase
    effects: int = 0  # side effects counted so far (nth)

    def matches(self, phase: Phase, name: str) -> bool:
        if self.fired:
            return False
        effect = name not in READS
        if self.nth:
            self.effects += effect
            return effect and self.effects == self.nth
        return phase == self.phase and (self.kind == "any" or effect)


class Faulty:
    """A Runtime or Traffic adapter whose calls pass the triggers (and are counted)."""

    def __init__(self, inner: Any, phase_of: Callable[[], Phase],
                 triggers: list[Trigger]) -> None:
        self._inner, self._phase_of, self._triggers = inner, phase_of, triggers
        self.errors: list[str] = []

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._inner, name)
        if not callable(fn) or name.startswith("_") or name in ("client", "close"):
            return fn

        def call(*args: Any, **kw: Any) -> Any:
            phase = self._phase_of()
            hit = [t for t in self._triggers if t.matches(phase, name)]
            for t in hit:
                t.fired, t.call = True, f"{name} {t.when}"
                if t.when == "before":
                    t.action()
            try:
                return fn(*args, **kw)
            except Exception as exc:
                self.errors.append(f"{name}: {exc}")
                raise
            finally:
                for t in hit:
                    if t.when == "after":
                        t.action()

        return call


def sabotage(runtime: DockerRuntime, canary: str) -> None:
    """The canary fails its health check from now on (it still answers HTTP)."""
    with contextlib.suppress(docker.errors.NotFound):  # idempotent: it may be gone
        c = runtime.client(TARGET).containers.get(canary)
        c.exec_run(["rm", "-f", "/tmp/ok"])


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Fault:
    """A fault injected by a trigger and healed by the driver: when `heal_if(m, ports)`
    holds or `heal_after` seconds after it was injected, whichever comes first."""

    name: str
    inject: Callable[[], None]
    heal: Callable[[], None]
    heal_after: float = 30.0
    heal_if: Callable[[Migration, list[Faulty]], bool] = lambda m, ports: False
    min_hold: float = 0.0  # never healed sooner
    seen: list[str] = field(default_factory=list)  # what heal_if noticed
    injected_at: float | None = None
    healed_at: float | None = None

    def fire(self) -> None:
        self.inject()
        self.injected_at = time.monotonic()


@dataclass
class Run:
    """What one drive of the executor saw."""

    migration: Migration
    fired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    held: float = 0.0  # how long the fault lasted (s)
    duration: float = 0.0
    seen: list[str] = field(default_factory=list)  # what the fault's heal_if noticed
    during: set[str] = field(default_factory=set)  # phases seen while the fault lasted


def drive(config: Config, mid: str, triggers: list[Trigger], fault: Fault | None = None,
          timeout: float = 90.0, until: Callable[[Migration], bool] | None = None,
          plans: PlanSource | None = None) -> Run:
    """A fresh executor over the journal, ticking every TICK until the migration is
    terminal (or `until`); the fault, if any, is healed on the way."""
    t0 = time.monotonic()
    journal = Journal(config.webhook.journal)
    runtime = DockerRuntime(config.nodes, label_prefix=config.docker.label_prefix,
                            timeout=config.docker.timeout)

    def phase_of() -> Phase:
        m = journal.get(mid)
        assert m is not None
        return m.phase

    for t in triggers:  # sabotage triggers need the runtime; they are built without it
        if getattr(t.action, "needs_runtime", False):
            t.action = (lambda a=t.action: a(runtime))  # type: ignore[misc]
    rt = Faulty(runtime, phase_of, triggers)
    tr = Faulty(HAProxy(config.traffic.socket or "", timeout=config.traffic.timeout),
                phase_of, triggers)
    ex = make_executor(config, journal, runtime=rt, traffic=tr,  # type: ignore[arg-type]
                       plans=plans or StaticPlanSource([]),
                       query=make_query(config))
    until = until or (lambda m: m.terminal)
    during: set[str] = set()
    try:
        while True:
            ex.tick()
            m = journal.get(mid)
            assert m is not None
            since = time.monotonic() - (fault.injected_at or 0) if fault else 0.0
            if fault and fault.injected_at is not None and fault.healed_at is None:
                during.add(str(m.phase))
            if fault and fault.injected_at is not None and fault.healed_at is None and \
                    since >= fault.min_hold and (fault.heal_if(m, [rt, tr])
                                                 or since > fault.heal_after):
                fault.heal()
                fault.healed_at = time.monotonic()
            if until(m) and (fault is None or fault.injected_at is None
                             or fault.healed_at is not None):
                break
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"not terminal after {timeout:g}s: {m.phase} "
                                     f"{m.error!r} {dict(m.data)}")
            time.sleep(TICK)
    finally:
        if fault and fault.injected_at is not None and fault.healed_at is None:
            fault.heal()  # never leave the testbed broken
            fault.healed_at = time.monotonic()
        runtime.close()
        journal.close()
    held = (fault.healed_at - fault.injected_at) if fault and fault.injected_at and \
        fault.healed_at else 0.0
    return Run(m, [t.call for t in triggers if t.fired], rt.errors + tr.errors, held,
               time.monotonic() - t0, list(fault.seen) if fault else [], during)


# -- the child process of a kill -9 case ----------------------------------------------------


CHILD_ARGV = [sys.executable, "-m", "tests.integration.faults"]


def child_spec(config_path: Path, mid: str, phase: Phase, when: str,
               sabotage_in: Phase | None, nth: int = 0) -> str:
    """The child's one line on stdin."""
    return json.dumps({"config": str(config_path), "mid": mid, "phase": str(phase),
                       "when": when, "sabotage": str(sabotage_in) if sabotage_in else None,
                       "nth": nth}) + "\n"


def child_main(raw: str) -> int:
    """Run the executor until the trigger SIGKILLs this process; 3: it never fired. The
    spec comes on stdin once the parent has reset the testbed: the child's start-up
    (imports) overlaps the reset."""
    if not raw.strip():
        return 4  # the parent gave up before sending the case
    spec = json.loads(raw)
    config = load_config(spec["config"])
    phase = Phase(spec["phase"])
    triggers = sabotage_triggers(spec["mid"], Phase(spec["sabotage"])
                                 if spec["sabotage"] else None)
    triggers.append(Trigger(phase, kill_self, spec["when"],
                            "any" if phase in NO_EFFECT else "effect", nth=spec["nth"]))
    run = drive(config, spec["mid"], triggers, timeout=60)
    print(f"the kill never fired: {run.migration.phase} {run.fired}", flush=True)
    return 3


def sabotage_triggers(mid: str, phase: Phase | None) -> list[Trigger]:
    """The canary starts failing its health check in `phase` (None: never)."""
    if phase is None:
        return []

    def act(runtime: DockerRuntime) -> None:
        sabotage(runtime, f"{COMPONENT}-{mid}")

    act.needs_runtime = True  # type: ignore[attr-defined]
    # after the first weight step (the analysis then sees it unhealthy), or at once
    kind, when = ("effect", "after") if phase == P.SHIFTING else ("any", "before")
    return [Trigger(phase, act, when, kind)]  # type: ignore[arg-type]


# -- the testbed ------------------------------------------------------------------------


class Bed:
    """The module's testbed with web-n1 and web-n2 behind HAProxy."""

    def __init__(self, tb: Testbed, artifacts: Path) -> None:
        self.tb, self.artifacts = tb, artifacts
        self.haproxy = HAProxy(tb.spec.haproxy_socket, timeout=2)
        self.cases = 0

    # apps
    def run_app(self, node: str) -> None:
        name = f"{COMPONENT}-{node}"
        self.tb.client(node).containers.run(
            IMAGE, SERVE, name=name, detach=True, init=True,
            labels={"preshift.service": COMPONENT}, environment={"NODE": node},
            ports={"80/tcp": (self.tb.address(node), PORT)},
            healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 200 * MS,
                         "timeout": 1000 * MS, "retries": 1, "start_period": 0},
            restart_policy={"Name": "unless-stopped"}, stop_signal="SIGTERM",
        )

    def healthy(self, node: str, name: str) -> bool:
        c = self.tb.client(node).containers.get(name)
        return bool(c.attrs["State"].get("Health", {}).get("Status") == "healthy")

    def containers(self) -> dict[str, tuple[str, str, dict[str, str]]]:
        """name -> (node, status, labels) of every container on every engine."""
        out = {}
        for n in self.tb.nodes:
            for c in self.tb.client(n.name).containers.list(all=True):
                out[c.name] = (n.name, c.status, dict(c.labels))
        return out

    def reset(self, retry: bool = False) -> None:
        """Every case starts alike: engines up, only the two originals (running, healthy,
        restart policy intact), a fresh HAProxy with both at weight 100, Prometheus
        running, the admin socket in place."""
        tb = self.tb
        prom_continue(tb.spec)
        away = Path(f"{tb.spec.haproxy_socket}.away")
        if away.exists():
            away.rename(tb.spec.haproxy_socket)
        for n in tb.nodes:
            tb.start_engine(n.name)  # no-op when it answers
        for n in tb.nodes:
            cl = tb.client(n.name)
            for c in cl.containers.list(all=True):
                keep = c.name == f"{COMPONENT}-{n.name}" and n.name in ("n1", "n2") and \
                    c.status == "running" and \
                    (c.attrs["HostConfig"].get("RestartPolicy") or {}).get("Name") == \
                    "unless-stopped"
                if not keep:
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True)
        have = self.containers()
        for node in ("n1", "n2"):
            if f"{COMPONENT}-{node}" not in have:
                self.run_app(node)
        for node in ("n1", "n2"):
            wait_for(lambda n=node: self.healthy(n, f"{COMPONENT}-{n}"), 20,
                     f"{COMPONENT}-{node} healthy")
        backend = Backend(BACKEND, FRONTEND, tuple(
            (f"{COMPONENT}-{n}", tb.address(n), PORT, 100) for n in ("n1", "n2")))
        # The old HAProxy's closing connections may hold the port a moment after it exits.
        wait_for(lambda: self._start_haproxy(backend, retry), 10, "HAProxy to start", 0.2)
        wait_for(lambda: all(s.up for s in self.haproxy.servers(BACKEND).values()), 10,
                 "both originals UP in HAProxy")

    def wait_original(self) -> None:
        """web-n2 running, healthy and UP in HAProxy (after its engine came back)."""
        name = f"{COMPONENT}-{SOURCE}"
        wait_for(lambda: self.healthy(SOURCE, name), 20, f"{name} healthy again")
        wait_for(lambda: self.haproxy.servers(BACKEND)[name].up, 10, f"{name} UP again")

    def _start_haproxy(self, backend: Backend, retry: bool) -> bool:
        try:
            tb_haproxy.start(self.tb.spec, [backend], retry=retry)
        except TestbedError as exc:
            if "in use" not in str(exc):
                raise
            return False
        return True

    def new_case(self, name: str, **migration: Any) -> tuple[Path, Config, Migration]:
        """A fresh journal with one planned move of web-n2 to n3, and its config."""
        self.cases += 1
        d = self.artifacts / f"{self.cases:03d}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        path = write_yaml(d / "preshift.yaml",
                          config_dict(self.tb, d / "journal.sqlite3", **migration))
        config = load_config(path)
        mid = new_migration_id()
        m = Migration(id=mid, component=COMPONENT, action="move", target_node=TARGET,
                      canary_name=f"{COMPONENT}-{mid}", source_node=SOURCE,
                      source_name=f"{COMPONENT}-{SOURCE}", backend=BACKEND,
                      reason=f"fault case {name}",
                      data={"copy_from": [["n1", "web-n1"], ["n2", "web-n2"]]})
        with Journal(config.webhook.journal) as j:
            m = j.create_migration(m, detail=f"fault case {name}")
        return path, config, m

    def load(self) -> Load:
        host, port = FRONTEND.split(":")
        # ≤ 40 requests/s, each on a new connection; bounded in count and time
        return Load(host, int(port), "/", total=4000, threads=2, deadline=120,
                    interval=0.05, timeout=3).start()


@contextlib.contextmanager
def loaded(bed: Bed) -> Iterator[Load]:
    load = bed.load()
    try:
        yield load
    finally:
        load.stop()
        load.wait(10)  # no request in flight when the next case restarts HAProxy


# -- faults on the testbed -------------------------------------------------------------


def prometheus_pid(spec: TestbedSpec) -> int:
    p = State(spec.state_file).proc("prometheus")
    assert p is not None and p.owned(), "the testbed's Prometheus is not running"
    return p.pid


def prom_stop(spec: TestbedSpec) -> None:
    os.kill(prometheus_pid(spec), signal.SIGSTOP)


def prom_continue(spec: TestbedSpec) -> None:
    p = State(spec.state_file).proc("prometheus")
    if p is not None and p.owned():
        os.kill(p.pid, signal.SIGCONT)


def socket_away(spec: TestbedSpec) -> None:
    """HAProxy keeps serving; its admin socket is unreachable (the path is gone)."""
    spec.haproxy_socket.rename(f"{spec.haproxy_socket}.away")


def socket_back(spec: TestbedSpec) -> None:
    Path(f"{spec.haproxy_socket}.away").rename(spec.haproxy_socket)


def cleanup_pending(m: Migration, ports: list[Faulty]) -> bool:
    return bool(m.data.get("cleanup")) or m.terminal


def hit(what: str, times: int = 3) -> Callable[[Migration, list[Faulty]], bool]:
    """Heal once the executor has failed `times` calls mentioning `what`."""
    def enough(m: Migration, ports: list[Faulty]) -> bool:
        return sum(what in e for p in ports for e in p.errors) >= times or m.terminal
    return enough


#: Phases up to the shift, where an analysis query is still ahead.
UP_TO_SHIFT = (P.PLANNED, P.STARTING, P.HEALTH_CHECK, P.ROUTING, P.SHIFTING)


def held_for_no_data(fault: Fault) -> Callable[[Migration, list[Faulty]], bool]:
    """Heal once the analysis has held for lack of data (noted in `fault.seen`), or at
    once when no shift is ahead (Prometheus is not asked after it)."""
    def enough(m: Migration, ports: list[Faulty]) -> bool:
        last = m.data.get("last_check") or {}
        if "no data from the analysis query" in str(last.get("reason", "")):
            fault.seen.append(f"hold at step {last.get('step')}")
            return True
        return m.terminal  # injected after the shift: down until the end
    return enough


def engine_fault(tb: Testbed) -> Fault:
    return Fault("engine", lambda: tb.stop_engine(TARGET), lambda: tb.start_engine(TARGET),
                 heal_after=40, heal_if=cleanup_pending)


def source_fault(tb: Testbed) -> Fault:
    """The original's engine (n2) stopped; started again once the decommission waits only
    for it (noted in `seen` as "cleanup"), or the move is terminal (cancelled). `seen` also
    notes the original's status right after the engine returned ("original running":
    dockerd restarted it; "exited": it was on standby already)."""
    f = Fault("source", lambda: tb.stop_engine(SOURCE), lambda: None, heal_after=40)

    def enough(m: Migration, ports: list[Faulty]) -> bool:
        if m.data.get("cleanup"):
            f.seen.append(f"cleanup in {m.phase}: {m.error}")
            return True
        return m.terminal

    def heal() -> None:
        tb.start_engine(SOURCE)
        with contextlib.suppress(docker.errors.NotFound):
            c = tb.client(SOURCE).containers.get(f"{COMPONENT}-{SOURCE}")
            f.seen.append(f"original {c.status} when its engine returned")
            return
        f.seen.append("original absent when its engine returned")

    f.heal_if, f.heal = enough, heal
    return f


def haproxy_fault(tb: Testbed, heal_after: float = 20.0, times: int | None = 3) -> Fault:
    """The admin socket away until the executor failed `times` calls on it (None: for
    heal_after seconds)."""
    return Fault("haproxy", lambda: socket_away(tb.spec), lambda: socket_back(tb.spec),
                 heal_after=heal_after, min_hold=1.0,
                 heal_if=hit("HAProxy", times) if times else never)


def prometheus_fault(tb: Testbed, heal_after: float = 20.0,
                     until_hold: bool = True) -> Fault:
    """Prometheus stopped until the analysis held for lack of data (else heal_after s)."""
    f = Fault("prometheus", lambda: prom_stop(tb.spec), lambda: prom_continue(tb.spec),
              heal_after=heal_after, min_hold=1.0)
    f.heal_if = held_for_no_data(f) if until_hold else never
    return f


def never(m: Migration, ports: list[Faulty]) -> bool:
    return False


# -- one case ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A fault in a phase and the terminal phase it must converge to."""

    fault: str  # kill | engine (target's) | source (original's engine) | haproxy | prometheus
    phase: Phase
    expected: Phase
    when: str = "before"  # before | after the trigger's call
    kind: str = ""  # effect | any; "" = effect, or any in a phase without effects
    retry: bool = False  # HAProxy with production-like retries (RETRY_LINES)
    long: bool = False  # the fault outlasts the progress deadline
    nth: int = 0  # kill only: at the nth side effect of the run instead of in `phase`
    sabotage: Phase | None = None  # the canary fails here (default: SABOTAGE_IN[phase])
    spans: tuple[Phase, ...] = ()  # the phases the fault lasts through (default: phase)

    @property
    def covers(self) -> tuple[Phase, ...]:
        return self.spans or (self.phase,)

    @property
    def id(self) -> str:
        extra = "-retry" if self.retry else ""
        extra += "-long" if self.long else ""
        if self.nth:
            way = f"-via-{self.sabotage}" if self.sabotage else ""
            return f"{self.fault}-{self.when}{way}#k{self.nth}"
        return f"{self.fault}-{self.phase}-{self.when}-{self.trigger_kind}{extra}"

    @property
    def trigger_kind(self) -> str:
        return self.kind or ("any" if self.phase in NO_EFFECT else "effect")


@dataclass
class Result:
    case: Case
    config: Config
    migration: Migration
    run: Run
    load: Summary
    fired: list[str]
    duration: float

    def line(self) -> str:
        s = self.load
        return (f"{self.case.id}: {self.migration.phase} in {self.duration:.1f}s, fired "
                f"{self.fired}, fault held {self.run.held:.1f}s, {len(self.run.errors)} "
                f"adapter errors; load {s.total} requests, {s.failures} failed {s.statuses}")


def run_case(bed: Bed, case: Case) -> Result:
    """Reset, plan the move, run it under load with the fault, to a terminal phase."""
    child = None
    if case.fault == "kill":  # started first: its imports overlap the reset
        log = bed.artifacts / f"{bed.cases + 1:03d}-child.log"
        with log.open("wb") as out:
            child = subprocess.Popen(CHILD_ARGV, stdin=subprocess.PIPE, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        return _run_case(bed, case, child)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(10)


def _run_case(bed: Bed, case: Case, child: subprocess.Popen[bytes] | None) -> Result:
    bed.reset(retry=case.retry)
    extra: dict[str, Any] = {}
    if case.fault == "prometheus":  # an analysis query: no data must hold, not pass
        extra["analysis"] = {"query": "vector(0)", "query_max": 1}
    path, config, m = bed.new_case(case.id, **extra)
    sab = case.sabotage or (None if case.nth else SABOTAGE_IN.get(case.phase))
    t0 = time.monotonic()
    with loaded(bed) as load:
        if case.fault == "none":  # the baseline
            run = drive(config, m.id, sabotage_triggers(m.id, sab))
            fired: list[str] = []
        elif case.fault == "kill":
            assert child is not None and child.stdin is not None
            log = bed.artifacts / f"{bed.cases:03d}-child.log"
            child.stdin.write(child_spec(path, m.id, case.phase, case.when, sab,
                                         case.nth).encode())
            child.stdin.close()
            try:
                rc = child.wait(90)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the child never died: {log.read_text()[-2000:]}") \
                    from None
            # 3: the run ended before an nth side effect (the bench's end of the series)
            never_fired = rc == 3 and case.nth > 0
            assert rc == -signal.SIGKILL or never_fired, \
                f"child exited {rc}: {log.read_text()[-2000:]}"
            fired = [] if never_fired else [
                f"kill -9 {case.when} side effect {case.nth}" if case.nth else
                f"kill -9 {case.when} the first {case.trigger_kind} in {case.phase}"]
            # a fresh executor on the same journal (the canary still fails where the
            # case wants it to, if the child died before it did)
            run = drive(config, m.id, sabotage_triggers(m.id, sab))
            run.during.add(str(case.phase))
        else:
            fault = make_fault(bed.tb, case, config)
            trig = Trigger(case.phase, fault.fire, case.when, case.trigger_kind)
            run = drive(config, m.id, [*sabotage_triggers(m.id, sab), trig], fault)
            assert fault.injected_at is not None, f"the fault never fired: {run.migration}"
            fired = [f"{fault.name} {trig.call}"]
            run.during.add(str(case.phase))  # where the trigger fired
            if case.fault == "source" and case.expected != P.SUCCEEDED:
                # cancelled: the original is back (restarted with its engine) and serving
                bed.wait_original()
        load.stop()
        load.wait(10)
    return Result(case, config, run.migration, run, load.summary(), fired,
                  time.monotonic() - t0)


def make_fault(tb: Testbed, case: Case, config: Config) -> Fault:
    longer = config.migration.progress_deadline + 3
    if case.fault == "engine":
        return engine_fault(tb)
    if case.fault == "source":
        return source_fault(tb)
    if case.fault == "haproxy":
        return haproxy_fault(tb, heal_after=longer, times=None) if case.long else \
            haproxy_fault(tb)
    if case.fault == "prometheus":
        return prometheus_fault(tb, heal_after=longer, until_hold=not case.long)
    raise ValueError(f"unknown fault {case.fault!r}")


def cases(retry_engine: bool = True) -> list[Case]:
    """Every fault in every phase (the CI matrix). An outage of HAProxy's socket from
    `planned` is first felt in `routing` (no HAProxy call before), so that one case spans
    planned..routing; Prometheus is asked only while shifting, so one outage spans
    planned..shifting and one promoted..standby."""
    out = []
    for phase in (*FORWARD, *BACK):
        ok = P.SUCCEEDED if phase in FORWARD else P.ROLLED_BACK
        out.append(Case("kill", phase, ok, "before" if phase in NO_EFFECT else "after"))
        # STARTING: the clone happened, then the engine went (the orphan case)
        out.append(Case("engine", phase, P.ROLLED_BACK,
                        *(("after", "effect") if phase == P.STARTING else ("before", "any")),
                        retry=retry_engine))
    for phase in (P.PLANNED, P.SHIFTING, P.PROMOTED, P.DRAINING, P.STANDBY, *BACK):
        ok = P.SUCCEEDED if phase in FORWARD else P.ROLLED_BACK
        spans = (P.PLANNED, P.STARTING, P.HEALTH_CHECK, P.ROUTING) \
            if phase == P.PLANNED else ()
        out.append(Case("haproxy", phase, ok, kind="any", spans=spans))
    out.append(Case("haproxy", P.SHIFTING, P.ROLLED_BACK, kind="any", long=True))
    out.append(Case("prometheus", P.PLANNED, P.SUCCEEDED, kind="any", spans=UP_TO_SHIFT))
    out.append(Case("prometheus", P.PROMOTED, P.SUCCEEDED, kind="any",
                    spans=(P.PROMOTED, P.DRAINING, P.STANDBY)))
    out += [Case("prometheus", phase, P.ROLLED_BACK, kind="any") for phase in BACK]
    out.append(Case("prometheus", P.SHIFTING, P.ROLLED_BACK, kind="any", long=True))
    return out + source_cases(retry_engine)


def source_cases(retry: bool = True, every_phase: bool = False) -> list[Case]:
    """The original's engine (n2) stopped in each forward phase. Planned: nothing to copy
    from → cancelled. Starting: before the clone (it reads the original's engine) →
    cancelled; after it → the canary carries on → succeeded. From health_check on (the
    first call of the phase: the engine dies between two observations; draining: before
    its standby step, which then fails) → the canary takes over, the original's removal
    waits for its engine → succeeded.

    The engine stays down until standby, so a case spans every later phase (checked in
    `Run.during`). The CI matrix (`every_phase` False) leaves out routing and promoted as
    trigger phases: health_check's case spans routing (web-n2 still at full weight, the
    same code path), shifting's spans promoted; the bench runs all of them."""
    out = [Case("source", P.PLANNED, P.CANCELLED, "before", "any", retry=retry),
           Case("source", P.STARTING, P.CANCELLED, "before", "effect", retry=retry),
           Case("source", P.STARTING, P.SUCCEEDED, "after", "effect", retry=retry)]
    spans = {P.HEALTH_CHECK: (P.HEALTH_CHECK, P.ROUTING), P.SHIFTING: (P.SHIFTING, P.PROMOTED)}
    for phase in FORWARD[2:]:
        if not every_phase and phase in (P.ROUTING, P.PROMOTED):
            continue
        when, kind = ("before", "effect") if phase == P.DRAINING else ("before", "any")
        out.append(Case("source", phase, P.SUCCEEDED, when, kind, retry=retry,
                        spans=() if every_phase else spans.get(phase, ())))
    return out


# -- the checks after every case ----------------------------------------------------------


def check(bed: Bed, config: Config, m: Migration, expected: Phase) -> None:
    """The world agrees with the journal: terminal phase, containers on every engine,
    HAProxy's servers and weights, no step left open."""
    assert m.phase == expected, (m.phase, m.reason, m.error)
    cs = bed.containers()
    mine = {n: v[:2] for n, v in cs.items()
            if n == m.canary_name or v[2].get("preshift.migration") == m.id}
    servers = bed.haproxy.servers(BACKEND)
    weights = {n: s.weight for n, s in servers.items()}
    full = int(m.data.get("full_weight", 100))
    if expected == P.SUCCEEDED:
        assert mine == {m.canary_name: (TARGET, "running")}, mine
        assert f"{COMPONENT}-{SOURCE}" not in cs, cs  # decommissioned
        assert weights == {"web-n1": 100, m.canary_name: round(full * m.weight / 100)}, weights
        assert servers[m.canary_name].up, servers
    else:
        assert not mine, f"orphan canary: {mine}"
        assert cs[f"{COMPONENT}-{SOURCE}"][:2] == (SOURCE, "running"), cs
        policy = bed.tb.client(SOURCE).containers.get(f"{COMPONENT}-{SOURCE}").attrs[
            "HostConfig"]["RestartPolicy"]["Name"]
        assert policy == "unless-stopped", policy
        assert m.weight == 0
        assert weights == {"web-n1": 100, "web-n2": 100}, weights
        assert servers["web-n2"].status.upper().startswith("UP"), servers
    assert cs["web-n1"][:2] == ("n1", "running"), cs
    with Journal(config.webhook.journal) as j:
        open_steps = j.open_steps(m.id)
    assert not open_steps, f"open steps: {open_steps}"


def check_source(run: Run, case: Case) -> None:
    """What the source-engine fault noticed (source_fault): a successful move kept
    the original's removal until its engine answered (healed on `data.cleanup`, not at the
    end), and the original was still there when the engine returned — check() then found
    it gone: the decommission removed it after the engine's return."""
    seen = run.seen
    if case.expected != P.SUCCEEDED:
        # cancelled, saying why (the original could not be read, nothing else is wrong)
        assert f"the engine of {SOURCE} is unreachable" in run.migration.reason, run.migration
        assert not any(s.startswith("cleanup") for s in seen), seen
        assert "original running when its engine returned" in seen, seen
        return
    waited = f"cleanup in standby: {COMPONENT}-{SOURCE} on {SOURCE} is removed once its engine"
    assert any(s.startswith(waited) for s in seen), seen
    # on standby already: stopped with restart policy "no"; else dockerd restarts it
    status = "exited" if case.phase == P.STANDBY else "running"
    assert f"original {status} when its engine returned" in seen, seen


if __name__ == "__main__":
    sys.exit(child_main(sys.stdin.readline()))
