"""kill -9 of the real webhook in every phase a move passes through (issue 7).

The webhook runs as shipped: `preshift webhook serve` (gunicorn, 2 gthread workers, the
executor in the leader worker's thread), in a session of its own. Its executor is the real
one with the real adapters, built by the test factory tests/integration/killpoints.py, which
SIGKILLs the webhook's whole process group (master and workers) right after the first side
effect taken while the migration's journal row is in the case's phase (right before the
first call in planned and health_check, which take none). The test then restarts the webhook
clean and waits for the migration to end. Phases: planned, starting, health_check, routing,
shifting, promoted, draining, standby → succeeded; rolling_back (the canary starts failing
its healthcheck after its first weight step) and restoring (it starts failing in standby)
→ rolled_back.

Each migration comes from an Alertmanager v4 notification POSTed with the bearer token;
intake reads its plan from a tiny loopback HTTP server serving a footprint document in the
exporter's format (test equipment: the real exporter would need the simulator, Prometheus
and minutes of history to plan this one move). The restarted webhook of one case is the one
armed and killed in the next (the kill spec is a file the factory re-reads; removed before
each restart), so each case costs one gunicorn start.

Testbed: 3 plain Docker engines, web-n1 and web-n2 behind the testbed's HAProxy with
`retries 0`, a bounded load through it during each case. After each case: the terminal
phase, the phase the journal row had when the webhook died, containers of the migration on
every engine, the original's state and restart policy, HAProxy's servers and weights as the
journal says, no open step (those the kill interrupted closed as "interrupted: …"), exactly
one leader after the restart, and 0 failed requests.

Own names: prefix rk, subnet 198.18.21, ports 127.0.0.1:20520-20549.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from preshift.act.haproxy import HAProxy
from preshift.act.journal import Journal
from preshift.act.phases import Phase
from preshift.act.records import Migration
from preshift.errors import TestbedError
from preshift.testbed import IMAGE, Testbed, TestbedSpec
from preshift.testbed import haproxy as tb_haproxy
from preshift.testbed.haproxy import Backend
from preshift.testbed.load import Load, Summary

from . import killpoints
from .stack import Webhook, wait_for, write_yaml

pytestmark = pytest.mark.integration

P = Phase
PREFIX, SUBNET = "rk", "198.18.21"
WEBHOOK, PLAN, FRONTEND = "127.0.0.1:20520", "127.0.0.1:20521", "127.0.0.1:20522"
SPEC = TestbedSpec(prefix=PREFIX, subnet=SUBNET, prometheus=False, prometheus_port=20523,
                   exporter_address="127.0.0.1:20524", simulator_address="127.0.0.1:20525")
TOKEN = "kill-9-token"
BACKEND, COMPONENT, PORT = "be_web", "web", 8080
SOURCE, TARGET = "n2", "n3"
POLICY = "unless-stopped"
#: The app: /tmp/ok is its health (the sabotage removes it from a canary; HTTP still works).
SERVE = ["sh", "-c", ': > /tmp/ok; echo "$NODE" > /www/index.html; '
         "exec httpd -f -p 80 -h /www"]
MS = 1_000_000  # Docker durations are in nanoseconds


@dataclass(frozen=True)
class Case:
    """Kill the webhook in `phase` (`on`: after its first effect, or before its first
    call); the canary fails its healthcheck in `sabotage` (a way back) or never."""

    phase: Phase
    expected: Phase
    on: str = "effect"
    sabotage: tuple[Phase, str] | None = None


CASES = [
    Case(P.PLANNED, P.SUCCEEDED, "call"),
    Case(P.STARTING, P.SUCCEEDED),
    Case(P.HEALTH_CHECK, P.SUCCEEDED, "call"),
    Case(P.ROUTING, P.SUCCEEDED),
    Case(P.SHIFTING, P.SUCCEEDED),
    Case(P.PROMOTED, P.SUCCEEDED),
    Case(P.DRAINING, P.SUCCEEDED),
    Case(P.STANDBY, P.SUCCEEDED),
    Case(P.ROLLING_BACK, P.ROLLED_BACK, sabotage=(P.SHIFTING, "effect")),
    Case(P.RESTORING, P.ROLLED_BACK, sabotage=(P.STANDBY, "call")),
]


# -- the plan: a footprint document in the exporter's format (test equipment) --------------


class PlanServer:
    """GET /api/v1/footprint on PLAN: web-n1 and web-n2 running; while `armed`, one plan
    entry moving web-n2 from n2 to n3. Assessed now, at every request."""

    def __init__(self) -> None:
        self.armed = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(owner.document()).encode()
                self.send_response(200 if self.path == "/api/v1/footprint" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        host, port = PLAN.split(":")
        self.server = ThreadingHTTPServer((host, int(port)), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def document(self) -> dict[str, Any]:
        entry = {"action": "move", "component": COMPONENT, "replica": f"{COMPONENT}-{SOURCE}",
                 "from_node": SOURCE, "to_node": TARGET, "reason": "kill -9 case",
                 "priority": 50.0, "hps": 40.0, "target_hps": 98.0}
        replicas = [{"name": f"{COMPONENT}-{n}", "node": n, "state": "running",
                     "health": "healthy"} for n in ("n1", "n2")]
        return {"version": 1, "generated_at": time.time(), "stale": False,
                "components": {COMPONENT: {"replicas": replicas}},
                "plan": {"assessed_at": time.time(), "stale": False,
                         "entries": [entry] if self.armed else []}}

    def __enter__(self) -> PlanServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the rig: testbed, HAProxy, the webhook ------------------------------------------------


class Rig:
    def __init__(self, tb: Testbed, artifacts: Path, plan: PlanServer) -> None:
        self.tb, self.artifacts, self.plan = tb, artifacts, plan
        self.haproxy = HAProxy(tb.spec.haproxy_socket, timeout=2)
        self.journal = artifacts / "journal.sqlite3"
        self.kill_spec = artifacts / "kill.json"
        self.config = write_yaml(artifacts / "preshift.yaml", self._config())
        self.webhook: Webhook | None = None
        self.starts = 0
        self.cases = 0

    def _config(self) -> dict[str, Any]:
        cfg = self.tb.exporter_config()
        cfg.update(
            services={COMPONENT: {"min_available": 1}},
            docker={"timeout": "3s"},
            webhook={"listen": WEBHOOK, "journal": str(self.journal),
                     "exporter_url": f"http://{PLAN}", "tick": "0.1s"},
            traffic={"kind": "haproxy", "socket": str(self.tb.spec.haproxy_socket),
                     "timeout": "1s", "backends": {COMPONENT: BACKEND}},
            migration={
                "step_weights": [50, 100], "step_interval": "0.4s", "health_timeout": "6s",
                "drain_timeout": "3s", "progress_deadline": "7s", "standby_ttl": "1.5s",
                "cooldown": "0s", "max_concurrent": 1, "max_moves_per_node_per_hour": 1000,
                "analysis": {"min_requests": 1, "max_error_ratio": 0.2, "failed_checks": 1},
            },
        )
        return cfg

    # the webhook
    def start_webhook(self) -> Webhook:
        self.starts += 1
        proc = Webhook(
            self.config, WEBHOOK, self.artifacts / f"webhook-{self.starts:02d}.log", token=TOKEN,
            env={"PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "tests.integration.killpoints:factory",
                 killpoints.SPEC_ENV: str(self.kill_spec)},
        )
        proc.start()
        self.webhook = proc.wait_ready(interval=0.1)
        return proc

    def post_alert(self, fingerprint: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        labels = {"alertname": "PreshiftFootprintDiscrepancy", "component": COMPONENT,
                  "preshift_action": "migrate"}
        payload = {
            "version": "4", "groupKey": '{}:{component="web"}', "truncatedAlerts": 0,
            "status": "firing", "receiver": "preshift", "groupLabels": {"component": "web"},
            "commonLabels": labels, "commonAnnotations": {}, "externalURL": "",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": fingerprint}],
        }
        r = requests.post(f"http://{WEBHOOK}/api/v1/alerts", json=payload, timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202, (r.status_code, r.text)

    def leaders(self) -> dict[int, float]:
        """pid -> preshift_webhook_leader of every live worker (multiprocess, liveall)."""
        text = requests.get(f"http://{WEBHOOK}/metrics", timeout=5).text
        out = {}
        for line in text.splitlines():
            m = re.match(r'preshift_webhook_leader\{[^}]*pid="(\d+)"[^}]*\} (\S+)$', line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
        return out

    # the apps and HAProxy
    def run_app(self, node: str) -> None:
        self.tb.client(node).containers.run(
            IMAGE, SERVE, name=f"{COMPONENT}-{node}", detach=True, init=True,
            labels={"preshift.service": COMPONENT}, environment={"NODE": node},
            ports={"80/tcp": (self.tb.address(node), PORT)},
            healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 200 * MS,
                         "timeout": 1000 * MS, "retries": 1, "start_period": 0},
            restart_policy={"Name": POLICY}, stop_signal="SIGTERM",
        )

    def healthy(self, node: str) -> bool:
        c = self.tb.client(node).containers.get(f"{COMPONENT}-{node}")
        return bool(c.attrs["State"].get("Health", {}).get("Status") == "healthy")

    def containers(self) -> dict[str, tuple[str, str, dict[str, str], str]]:
        """name -> (node, status, labels, restart policy) on every engine."""
        out = {}
        for n in self.tb.nodes:
            for c in self.tb.client(n.name).containers.list(all=True):
                policy = (c.attrs["HostConfig"].get("RestartPolicy") or {}).get("Name", "")
                out[c.name] = (n.name, c.status, dict(c.labels), policy)
        return out

    def weights(self) -> dict[str, tuple[int, bool]]:
        return {n: (s.weight, s.up) for n, s in self.haproxy.servers(BACKEND).items()}

    def reset(self) -> None:
        """Only the two originals (running, healthy, their restart policy), both at weight
        100 and UP in HAProxy; HAProxy is restarted only when it differs."""
        originals = {f"{COMPONENT}-n1", f"{COMPONENT}-n2"}
        for name, (node, status, _, policy) in self.containers().items():
            if not (name in originals and name == f"{COMPONENT}-{node}"
                    and status == "running" and policy == POLICY):
                with contextlib.suppress(docker.errors.NotFound):
                    self.tb.client(node).containers.get(name).remove(force=True)
        have = self.containers()
        for node in ("n1", "n2"):
            if f"{COMPONENT}-{node}" not in have:
                self.run_app(node)
        for node in ("n1", "n2"):
            wait_for(lambda n=node: self.healthy(n), 20, f"{COMPONENT}-{node} healthy", 0.1)
        want = {f"{COMPONENT}-{n}": (100, True) for n in ("n1", "n2")}
        with contextlib.suppress(Exception):
            if self.weights() == want:
                return
        backend = Backend(BACKEND, FRONTEND, tuple(
            (f"{COMPONENT}-{n}", self.tb.address(n), PORT, 100) for n in ("n1", "n2")))
        wait_for(lambda: self._start_haproxy(backend), 10, "HAProxy to start", 0.2)
        wait_for(lambda: self.weights() == want, 10, "both originals UP in HAProxy", 0.1)

    def _start_haproxy(self, backend: Backend) -> bool:
        try:
            tb_haproxy.start(self.tb.spec, [backend], retry=False)  # retries 0
        except TestbedError as exc:
            if "in use" not in str(exc):  # the old one's closing connections hold the port
                raise
            return False
        return True

    def load(self) -> Load:
        host, port = FRONTEND.split(":")
        # ≤ 20 requests/s, each on a new connection; bounded in count and time
        return Load(host, int(port), "/", total=2000, threads=2, deadline=60,
                    interval=0.1, timeout=3).start()


def group_gone(pgid: int) -> bool:
    """No live (non-zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return False
    return True


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tb = Testbed(SPEC)
    tb.up()
    try:
        with PlanServer() as plan:
            r = Rig(tb, tmp_path_factory.mktemp("webhook-kill"), plan)
            try:
                r.reset()
                r.start_webhook()
                yield r
            finally:
                if r.webhook is not None and r.webhook.running:
                    r.webhook.stop()
                    if not group_gone(r.webhook.proc.pid):  # type: ignore[union-attr]
                        r.webhook.kill_group()
    finally:
        tb.down()  # raises if anything of the prefix is left


# -- one case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    migration: Migration
    died_in: Phase  # the journal row's phase right after the kill
    fired: list[dict[str, Any]]
    interrupted: list[int]  # ids of the steps open when the webhook died
    load: Summary
    down: float  # from the kill to the restarted webhook's readiness (s)
    duration: float


def run_case(rig: Rig, case: Case) -> Outcome:
    rig.cases += 1
    t0 = time.monotonic()
    rig.reset()
    with Journal(rig.journal) as j:  # the previous case is over, its alert handled
        wait_for(lambda: j.count_unhandled() == 0 and not j.migrations(active=True), 10,
                 "an idle journal", 0.1)
        before = {m.id for m in j.migrations(limit=1000)}
    proc = rig.webhook
    assert proc is not None and proc.proc is not None and proc.running
    fired_file = killpoints.fired_path(rig.kill_spec)
    fired_file.unlink(missing_ok=True)
    spec = {"pgid": proc.proc.pid, "kill": {"phase": str(case.phase), "on": case.on},
            "sabotage": {"phase": str(case.sabotage[0]), "on": case.sabotage[1]}
            if case.sabotage else None}
    tmp = rig.kill_spec.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec))
    tmp.rename(rig.kill_spec)  # atomic: the factory never reads half a spec
    rig.plan.armed = True
    load = rig.load()
    try:
        rig.post_alert(f"{0x6b000000 + rig.cases:016x}")
        try:
            rc = proc.proc.wait(40)
        except Exception:
            raise AssertionError(f"the webhook was not killed in {case.phase}: "
                                 f"{killpoints.fired(rig.kill_spec)}\n{proc.tail()}") from None
        killed_at = time.monotonic()
        rig.kill_spec.unlink()
        rig.plan.armed = False
        assert rc == -signal.SIGKILL, f"the webhook exited {rc}:\n{proc.tail()}"
        wait_for(lambda: group_gone(proc.proc.pid), 10, "the webhook's workers gone", 0.1)
        with Journal(rig.journal) as j:
            new = [m for m in j.migrations(limit=1000) if m.id not in before]
            assert len(new) == 1, new
            died = new[0]
            interrupted = [s.id for s in j.open_steps(died.id)]
        rig.start_webhook()
        down = time.monotonic() - killed_at

        def terminal() -> Migration | None:
            with Journal(rig.journal) as j:
                m = j.get(died.id)
            return m if m is not None and m.terminal else None

        m = wait_for(terminal, 40, f"migration {died.id} to end", 0.1)
    finally:
        load.stop()
    return Outcome(m, died.phase, killpoints.fired(rig.kill_spec), interrupted,
                   load.summary(), down, time.monotonic() - t0)


def check(rig: Rig, case: Case, out: Outcome) -> None:
    m = out.migration
    # where it died: the kill fired in the case's phase, and the row was still there
    kills = [f for f in out.fired if f["what"] == "kill"]
    assert [(f["migration"], f["phase"]) for f in kills] == [(m.id, str(case.phase))], out.fired
    assert out.died_in == case.phase, (out.died_in, out.fired)
    assert m.phase == case.expected, (m.phase, m.reason, m.error)
    if case.sabotage:  # the way back was taken for the canary's failure, nothing else
        assert [f["phase"] for f in out.fired if f["what"] == "sabotage"] == \
            [str(case.sabotage[0])], out.fired
        assert "unhealthy" in m.reason, m.reason
    # containers on every engine
    cs = rig.containers()
    mine = {n: v[:2] for n, v in cs.items()
            if n == m.canary_name or v[2].get("preshift.migration") == m.id}
    weights = rig.weights()
    source = f"{COMPONENT}-{SOURCE}"
    if case.expected == P.SUCCEEDED:
        assert mine == {m.canary_name: (TARGET, "running")}, mine
        assert source not in cs, cs  # decommissioned
        full = int(m.data.get("full_weight", 100))
        assert weights == {f"{COMPONENT}-n1": (100, True),
                           m.canary_name: (round(full * m.weight / 100), True)}, weights
    else:
        assert not mine, f"orphan canary: {mine}"
        assert cs[source][:2] == (SOURCE, "running") and cs[source][3] == POLICY, cs[source]
        assert m.weight == 0
        assert weights == {f"{COMPONENT}-n1": (100, True), source: (100, True)}, weights
    assert cs[f"{COMPONENT}-n1"][:2] == ("n1", "running"), cs
    # the journal: no open step; those the kill interrupted closed as such
    with Journal(rig.journal) as j:
        assert not [s for x in j.migrations(limit=1000) for s in j.open_steps(x.id)]
        steps = {s.id: s for s in j.steps(m.id)}
    for sid in out.interrupted:
        assert (steps[sid].outcome or "").startswith("interrupted"), steps[sid]
    if case.on == "effect":  # killed after an effect whose outcome was never journaled
        assert out.interrupted, list(steps.values())
    # exactly one leader, a worker of the restarted webhook
    master = rig.webhook.proc.pid  # type: ignore[union-attr]
    wait_for(lambda: list(rig.leaders().values()).count(1.0) == 1, 10, "one leader", 0.1)
    leaders = rig.leaders()
    leader = next(pid for pid, v in leaders.items() if v == 1.0)
    assert len(leaders) == 2 and all(parent_of(pid) == master for pid in leaders), leaders
    assert Path(f"{rig.journal}.lock").read_text().strip() == str(leader)
    # the load through HAProxy
    assert out.load.total > 20, out.load
    assert out.load.failures == 0, out.load.statuses


@pytest.mark.parametrize("case", CASES, ids=[str(c.phase) for c in CASES])
def test_webhook_killed_in_phase_converges(rig: Rig, case: Case) -> None:
    out = run_case(rig, case)
    s = out.load
    print(f"kill -9 in {case.phase} ({out.fired[-1]['call'] if out.fired else '-'}): "
          f"{out.migration.phase} in {out.duration:.1f}s, webhook down {out.down:.1f}s, "
          f"{len(out.interrupted)} interrupted step(s); load {s.total} requests, "
          f"{s.failures} failed {s.statuses}")
    check(rig, case, out)


def test_cases_cover_every_phase_of_a_move() -> None:
    """Every non-terminal phase a move without approval passes, and both ways back."""
    phases = {str(p) for p in P} - {"succeeded", "rolled_back", "cancelled", "dry_run",
                                     "failed", "awaiting_approval"}
    assert {str(c.phase) for c in CASES} == phases
