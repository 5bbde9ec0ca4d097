"""Benchmark: a node lost on a real 3-node Swarm, with Preshift acting first (proactive)
against Swarm alone (reactive). Failed requests through HAProxy per arm.

Brings up a private testbed (prefix "sp", 3 Docker engines on 198.18.17.0/24 forming a swarm,
n1 the manager; its Prometheus on 127.0.0.1:20290), the telemetry simulator (127.0.0.1:20332),
the exporter (127.0.0.1:20331) and HAProxy (frontend 127.0.0.1:20300, stats 127.0.0.1:20301,
backend be_web, `retries 0` as the testbed starts it). The Swarm service `web`: 2 replicas of
preshift-box:latest, one task on n1 and one on n2 (n3 free), host-mode port 8080, init,
restart delay 200 ms, a 0.5 s healthcheck, container label preshift.service=web; each task
answers /cgi-bin/app with its hostname `<node>-s<slot>`. HAProxy has one server per task,
named `web.<slot>` at the slot's node address (as SwarmRuntime names replicas).

One trial, the same for both arms: a bounded paced load through HAProxy (~30 requests/s, a
new connection each) for W + T seconds; at its start n2's signal degrades (the simulator
ramps n2's temperature 84 → 95 °C over 60 s, limit 85 °C: the warning); after the warning
period W (default 60 s) n2's link is cut (`Testbed.cut_link`: its veth goes down, Swarm marks
it Down after ~12 s and reschedules its tasks); the load goes on for T more seconds (default
30), then the link is restored and everything reset for the next trial (services and
containers removed, `web` recreated, HAProxy restarted, n2's temperature back to the
scenario's 50 °C).

- reactive (Swarm alone): no webhook. HAProxy's health checks (inter 500 ms, fall 2) take
  n2's server out; Swarm's replacement task (on n3) is NOT added to HAProxy: Swarm alone
  does not touch HAProxy, and adding it could only add capacity after the failures (they
  happen in the seconds before HAProxy marks the dead server DOWN, long before Swarm even
  marks the node Down).
- proactive (Preshift acting): the webhook under gunicorn (mode swarm, swarm.manager n1) runs;
  as soon as the exporter's plan shows a move of web off n2 (during W), the benchmark POSTs
  ONE Alertmanager v4 notification for `web` straight to the webhook. Prometheus' `for: 1m`
  and Alertmanager's group_wait are skipped ON PURPOSE (with W = 60 s and the rule's
  `for: 1m` the real path would fire at about the cut): what is measured is what Preshift
  does with a warning that reaches it in time. The migration runs (a pinned one-replica copy
  service on a safe node, canary weights through HAProxy, drain, standby that removes exactly
  the n2 task) before the cut; then the cut.

Per trial: failed requests (errors and non-2xx through HAProxy, split before / after the cut),
total requests, the warning lead time (from the first plan entry moving web off n2, and from
the first drop of n2's node HPS by 5 points, to the cut), the migration's time from the
notification to promoted (journal), when HAProxy marked n2's server DOWN, when Swarm marked
n2 Down and when the rescheduled task ran. The arms alternate (proactive first); the
reduction is 1 − proactive/reactive failed requests, per request (target ≥ 99 %).

    sudo .venv/bin/python bench/bench_swarm_proactive.py                 # 2 trials per arm
    sudo .venv/bin/python bench/bench_swarm_proactive.py --trials 1 --warning 45 --after 25

Needs root (the testbed) and takes 1.5–4 minutes per trial (up to --settle s waiting for n2's
score to recover first): 12–14 minutes with the defaults.
Everything is torn down in `finally` (links restored, testbed down, processes stopped by
their PID only); the leftovers of a killed earlier run are cleared first. Traffic goes only
to 127.0.0.1 and the testbed's own addresses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.types as dt
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preshift.act.haproxy import HAProxy  # noqa: E402
from preshift.act.journal import Journal  # noqa: E402
from preshift.errors import TestbedError  # noqa: E402
from preshift.testbed import IMAGE, Testbed, TestbedSpec  # noqa: E402
from preshift.testbed.haproxy import Backend  # noqa: E402
from preshift.testbed.load import Load  # noqa: E402
from tests.integration.stack import Exporter, Process, preshift_argv, wait_for, write_yaml  # noqa: E402

PREFIX, SUBNET, PROM_PORT = "sp", "198.18.17", 20290
EXPORTER, SIMULATOR, WEBHOOK = "127.0.0.1:20331", "127.0.0.1:20332", "127.0.0.1:20333"
FRONTEND, STATS = "127.0.0.1:20300", "127.0.0.1:20301"
PORT = 8080  # the host-mode published port on each node's address
BACKEND = "be_web"
TOKEN = "bench-swarm-proactive-token"
WORK = Path("/var/lib/preshift-bench-swarm-proactive")  # fixed: a killed run's leftovers are found
MS = 1_000_000  # Swarm durations are in nanoseconds
RISKY = "n2"
HEALTHCHECK = {"test": ["CMD", "true"], "interval": 500 * MS, "timeout": 1000 * MS,
               "retries": 1}
RAMP = {"ramp": {"from": 84, "to": 95, "over": "60s"}, "noise": 0.3}
HPS_DROP = 5.0  # points of n2's node HPS below its value at the start of the warning
SETTLED_HPS = 95.0  # n2's node HPS before a warning starts (healthy nodes score ~99.97)


# --- leftovers of a killed earlier run ------------------------------------------------------


MARK = f"PRESHIFT_BENCH_SWARM_PROACTIVE={WORK}"  # in the environment of every process we start


def _ours(pid: int) -> bool:
    """The process still runs and carries our mark in its environment (not a reused PID)."""
    try:
        return MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _port_busy(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, int(port))) == 0


def clear_leftovers() -> list[str]:
    """Stop the processes an earlier, killed run of this script left: by the PIDs it wrote,
    each checked to carry our mark (the webhook's whole process group: gunicorn's workers)."""
    stopped = []
    for pidfile in sorted(WORK.glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            if _ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    if pidfile.stem == "webhook":
                        os.killpg(pid, signal.SIGKILL)  # its own session: only gunicorn
                    else:
                        os.kill(pid, signal.SIGKILL)
                stopped.append(f"{pidfile.stem} (PID {pid})")
        pidfile.unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            _port_busy(a) for a in (EXPORTER, SIMULATOR, WEBHOOK)):
        time.sleep(0.2)
    return stopped


def started(proc: Process, name: str) -> Process:
    """Start `proc` with our mark in its environment and write its PID to WORK/name.pid."""
    key, _, value = MARK.partition("=")
    proc.env = {**(proc.env or {}), key: value}
    proc.start()
    assert proc.proc is not None
    (WORK / f"{name}.pid").write_text(f"{proc.proc.pid}\n")
    return proc


# --- the world: swarm service, HAProxy ------------------------------------------------------


@dataclass
class World:
    tb: Testbed
    haproxy: HAProxy
    servers: dict[str, str]  # HAProxy server name (web.<slot>) -> node
    haproxy_retries: int = 0


def node_names(tb: Testbed) -> dict[str, str]:
    """swarm node ID -> testbed node name (hostnames are the node names)."""
    names = {n.hostname: n.name for n in tb.nodes}
    return {n["ID"]: names.get(n["Description"]["Hostname"], n["Description"]["Hostname"])
            for n in tb.client("n1").api.nodes()}


def node_states(tb: Testbed) -> dict[str, str]:
    names = {n.hostname: n.name for n in tb.nodes}
    return {names.get(n["Description"]["Hostname"], "?"): n["Status"]["State"]
            for n in tb.client("n1").api.nodes()}


def running_tasks(tb: Testbed, service: str = "web") -> dict[int, str]:
    """slot -> node of the service's tasks that run and are wanted running."""
    ids = node_names(tb)
    return {int(t["Slot"]): ids.get(t["NodeID"], "?")
            for t in tb.client("n1").api.tasks(filters={"service": service,
                                                       "desired-state": "running"})
            if t["Status"]["State"] == "running"}


def web_healthy(tb: Testbed) -> set[str]:
    """Nodes where a task container of web is Docker-healthy."""
    out = set()
    for n in ("n1", "n2"):
        for c in tb.client(n).containers.list(filters={"label": "preshift.service=web"}):
            if c.attrs["State"].get("Health", {}).get("Status") == "healthy":
                out.add(n)
    return out


def create_web(tb: Testbed) -> dict[str, str]:
    """`web`, one task on n1 and one on n2, then n3 free for the scheduler again (a
    placement-only change: nothing moves). Returns HAProxy server name -> node."""
    m = tb.client("n1")
    svc = m.services.create(
        IMAGE, ["httpd", "-f", "-p", "80", "-h", "/www"], name="web", init=True,
        hostname="{{.Node.Hostname}}-s{{.Task.Slot}}",
        mode=dt.ServiceMode("replicated", replicas=2),
        constraints=[f"node.hostname!={tb.node('n3').hostname}"],
        container_labels={"preshift.service": "web"},
        restart_policy=dt.RestartPolicy("any", delay=200 * MS),
        update_config=dt.UpdateConfig(parallelism=1, delay=0, monitor=1000 * MS,
                                      order="start-first", failure_action="pause"),
        stop_grace_period=2000 * MS,
        healthcheck=HEALTHCHECK,
        endpoint_spec=dt.EndpointSpec(ports={PORT: (80, "tcp", "host")}),
    )
    wait_for(lambda: sorted(running_tasks(tb).values()) == ["n1", "n2"], 30, "web on n1, n2",
             0.1)
    wait_for(lambda: web_healthy(tb) == {"n1", "n2"}, 30, "web's tasks healthy", 0.1)
    raw = m.api.inspect_service(svc.id)
    raw["Spec"]["TaskTemplate"]["Placement"] = {}
    m.api._raise_for_status(m.api._post_json(
        m.api._url("/services/{0}/update", svc.id), data=raw["Spec"],
        params={"version": raw["Version"]["Index"]}))
    time.sleep(0.5)
    slots = running_tasks(tb)
    assert sorted(slots.values()) == ["n1", "n2"], slots
    return {f"web.{slot}": node for slot, node in sorted(slots.items())}


def reset_world(w: World) -> None:
    """Links up, all 3 swarm nodes ready, no services or containers, `web` fresh on n1 and
    n2, HAProxy restarted with its two servers, both UP."""
    tb = w.tb
    for n in tb.nodes:
        tb.restore_link(n.name)
    wait_for(lambda: set(node_states(tb).values()) == {"ready"}, 60, "3 swarm nodes ready",
             0.2)
    tb.reset()
    w.servers = create_web(tb)
    restart_haproxy(w)
    wait_for(lambda: all(s.up for s in w.haproxy.servers(BACKEND).values())
             and len(w.haproxy.servers(BACKEND)) == 2, 15, "both servers UP", 0.1)


def restart_haproxy(w: World) -> None:
    """A fresh HAProxy; retried while the frontend's port is still reported in use."""
    backends = [Backend(BACKEND, FRONTEND, tuple(
        (name, w.tb.address(node), PORT, 100) for name, node in w.servers.items()))]
    deadline = time.monotonic() + 20
    while True:
        try:
            w.tb.start_haproxy(backends, stats=STATS)
            return
        except TestbedError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            w.haproxy_retries += 1
            time.sleep(0.5)


# --- Preshift: exporter, webhook ------------------------------------------------------------


def config(tb: Testbed, journal: Path, tick: float) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg.update(
        mode="swarm", swarm={"manager": "n1"},
        refresh_interval="1s", horizon="60s",
        services={"web": {"min_available": 1}},
        docker={"timeout": "5s"},
        exporter={"listen": EXPORTER},
        webhook={"listen": WEBHOOK, "journal": str(journal),
                 "exporter_url": f"http://{EXPORTER}", "tick": f"{tick:g}s"},
        traffic={"kind": "haproxy", "socket": str(tb.spec.haproxy_socket),
                 "backends": {"web": BACKEND}},
        migration={
            "step_weights": [25, 50, 75, 100], "step_interval": "1s",
            "health_timeout": "10s", "drain_timeout": "10s", "progress_deadline": "60s",
            "standby_ttl": "4s", "cooldown": "0s", "max_concurrent": 1,
            "max_moves_per_node_per_hour": 1000,
            "analysis": {"min_requests": 1, "max_error_ratio": 0.0, "failed_checks": 1},
        },
    )
    cfg["prometheus"].update(step="1s", history="15m", timeout="3s")
    return cfg


def start_webhook(config_path: Path, log: Path) -> Process:
    proc = started(Process(
        preshift_argv("webhook", "serve", "--config", str(config_path)), log,
        env={"PRESHIFT_WEBHOOK_TOKEN": TOKEN, "PRESHIFT_WEBHOOK_LOG_LEVEL": "warning"},
        own_group=True,
    ), "webhook")

    def ready() -> bool:
        if not proc.running:
            raise SystemExit(f"the webhook exited:\n{proc.tail()}")
        return requests.get(f"http://{WEBHOOK}/-/ready", timeout=2).ok

    wait_for(ready, 30, "the webhook to be ready", 0.2)
    return proc


def stop_webhook(proc: Process) -> None:
    if proc.running:
        proc.stop()
    if proc.running:
        proc.kill_group()
    (WORK / "webhook.pid").unlink(missing_ok=True)


LAST_FACTORS: dict[str, float] = {}  # n2's node factors at the last look()


def look(exporter: Exporter) -> tuple[dict[str, Any] | None, float | None, bool]:
    """The plan entry moving web off n2 (or None), n2's node HPS, and whether the exporter
    sees a running replica of web on n2."""
    fp = exporter.footprint()
    entries = (fp.get("plan") or {}).get("entries") or []
    entry = next((e for e in entries if e.get("component") == "web"
                  and e.get("from_node") == RISKY and e.get("action") == "move"), None)
    scores = fp.get("scores") or {}
    node = (scores.get("nodes") or {}).get(RISKY) or {}
    on_n2 = any(r.get("component") == "web" and r.get("node") == RISKY
                for r in scores.get("replicas") or ())
    LAST_FACTORS.clear()
    LAST_FACTORS.update(node.get("factors") or {})
    return entry, node.get("hps"), on_n2


def notification(fingerprint: str, starts_at: str) -> dict[str, Any]:
    labels = {"alertname": "PreshiftFootprintDiscrepancy", "component": "web",
              "preshift_action": "migrate", "severity": "warning"}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PreshiftFootprintDiscrepancy", component="web"}',
        "truncatedAlerts": 0, "status": "firing", "receiver": "preshift",
        "groupLabels": {"alertname": labels["alertname"], "component": "web"},
        "commonLabels": labels, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:20293",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": fingerprint}],
    }


def migrations() -> list[dict[str, Any]]:
    r = requests.get(f"http://{WEBHOOK}/api/v1/migrations", params={"component": "web"},
                     timeout=5, headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    return r.json()["migrations"]


def set_heat(on: bool) -> None:
    url = f"http://{SIMULATOR}/api/v1/nodes/{RISKY}/temperature_celsius"
    r = requests.put(url, json=RAMP, timeout=5) if on else requests.delete(url, timeout=5)
    if r.status_code not in (200, 204, 404):
        raise SystemExit(f"the simulator answered {r.status_code}: {r.text}")


# --- one trial ------------------------------------------------------------------------------


def new_load(rate: float, seconds: float, threads: int) -> Load:
    host, port = FRONTEND.split(":")
    interval = max(0.0, threads / rate - 0.005)  # each thread: a request, then a pause
    return Load(host, int(port), "/cgi-bin/app", total=int(rate * seconds) + 100,
                threads=threads, deadline=seconds, interval=interval)


def trial(w: World, exporter: Exporter, arm: str, k: int, args: argparse.Namespace,
          ) -> dict[str, Any]:
    tb = w.tb
    set_heat(False)
    reset_world(w)
    # the warning starts from a quiet n2: the exporter sees web's new task there, n2's HPS is
    # back (the forecast needs a while to forget the last ramp) and no plan entry moves web
    t_settle = time.monotonic()
    quiet, hps_seen = False, None
    while time.monotonic() - t_settle < args.settle:
        with contextlib.suppress(requests.RequestException):
            entry, hps_seen, on_n2 = look(exporter)
            if on_n2 and entry is None and hps_seen is not None and hps_seen >= SETTLED_HPS:
                quiet = True
                break
        time.sleep(1.0)
    settle = time.monotonic() - t_settle
    webhook: Process | None = None
    journal = WORK / f"journal-{k}.sqlite3"
    if arm == "proactive":
        cfg_path = write_yaml(WORK / f"webhook-{k}.yaml", config(tb, journal, args.tick))
        webhook = start_webhook(cfg_path, WORK / f"webhook-{k}.log")
    out: dict[str, Any] = {"arm": arm, "trial": k, "settle_s": settle, "quiet_at_start": quiet,
                           "hps_n2_settled": hps_seen, "factors_n2_settled": dict(LAST_FACTORS),
                           "servers": dict(w.servers)}
    risky_server = next(name for name, node in w.servers.items() if node == RISKY)
    load = new_load(args.rate, args.warning + args.after + 10, args.threads)
    try:
        load.start()
        t0 = time.monotonic()  # the warning starts: n2 degrades
        set_heat(True)
        hps0: float | None = None
        t_plan = t_drop = t_post = None
        entry: dict[str, Any] | None = None
        fp = ""
        seen: dict[str, float] = {}
        mid = None
        phase = None
        next_look = 0.0
        while (now := time.monotonic()) < t0 + args.warning:
            if now >= next_look:
                next_look = now + 0.5
                with contextlib.suppress(requests.RequestException):
                    e, hps, _ = look(exporter)
                    if hps is not None:
                        hps0 = hps if hps0 is None else hps0
                        if t_drop is None and hps <= hps0 - HPS_DROP:
                            t_drop = now
                    if e is not None and t_plan is None:
                        t_plan, entry = now, e
            if webhook is not None and t_plan is not None and t_post is None:
                fp = f"{int(time.time() * 1000) & 0xffffffffffff:012x}{k:04x}"
                starts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                r = requests.post(f"http://{WEBHOOK}/api/v1/alerts",
                                  json=notification(fp, starts), timeout=10,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
                if r.status_code != 202:
                    raise SystemExit(f"the webhook answered {r.status_code}: {r.text}")
                t_post = time.monotonic()
            if t_post is not None:
                with contextlib.suppress(requests.RequestException):
                    ms = migrations()
                    if ms:
                        mid, phase = ms[0]["id"], ms[0]["phase"]
                        seen.setdefault(phase, time.monotonic() - t_post)
            time.sleep(0.2)
        phase_at_cut = phase
        # --- the node is lost
        t_cut = time.monotonic()
        tb.cut_link(RISKY)
        with contextlib.suppress(Exception):
            out["risky_server_at_cut"] = w.haproxy.servers(BACKEND).get(risky_server) is not None
        t_hp_down = t_swarm_down = t_resched = None
        while (now := time.monotonic()) < t_cut + args.after:
            with contextlib.suppress(Exception):
                srv = w.haproxy.servers(BACKEND).get(risky_server)
                if t_hp_down is None and srv is not None and not srv.up:
                    t_hp_down = now - t_cut
            with contextlib.suppress(Exception):
                if t_swarm_down is None and node_states(tb).get(RISKY) == "down":
                    t_swarm_down = time.monotonic() - t_cut
                if t_resched is None and t_swarm_down is not None:
                    slot = int(risky_server.split(".")[1])
                    if running_tasks(tb).get(slot) not in (None, RISKY):
                        t_resched = time.monotonic() - t_cut
            if webhook is not None and mid is not None:
                with contextlib.suppress(requests.RequestException):
                    ms = migrations()
                    if ms:
                        seen.setdefault(ms[0]["phase"], time.monotonic() - t_post)
            time.sleep(0.25)
        load.stop()
    finally:
        load.stop()
        tb.restore_link(RISKY)
        set_heat(False)
    summary = load.summary()
    cut_at = t_cut - t0
    samples = load.samples()
    failed = [s for s in samples if not s.ok]
    out.update({
        "requests": summary.total, "failures": summary.failures, "statuses": summary.statuses,
        "served_by": summary.bodies,
        "failures_before_cut": sum(1 for s in failed if s.t < cut_at),
        "failures_after_cut": sum(1 for s in failed if s.t >= cut_at),
        "failure_times_after_cut": [round(s.t - cut_at, 2) for s in failed],
        "warning_s": cut_at,
        "plan_after_s": None if t_plan is None else t_plan - t0,
        "lead_plan_s": None if t_plan is None else t_cut - t_plan,
        "lead_hps_s": None if t_drop is None else t_cut - t_drop,
        "hps_n2_at_start": hps0, "plan_entry": entry,
        "haproxy_down_after_cut_s": t_hp_down, "swarm_down_after_cut_s": t_swarm_down,
        "rescheduled_after_cut_s": t_resched,
    })
    if webhook is not None:
        try:
            final = migrations()
        finally:
            stop_webhook(webhook)
        out["migrations"] = [{k2: m.get(k2) for k2 in ("id", "phase", "source_name",
                                                       "source_node", "target_node",
                                                       "canary_name")} for m in final]
        out["api_seen"] = seen
        out["phase_at_cut"] = phase_at_cut
        out["posted_after_s"] = None if t_post is None else t_post - t0
        if mid is not None:
            out.update(journal_times(journal, mid, fp))
    return out


def journal_times(path: Path, mid: str, fp: str) -> dict[str, Any]:
    """Notification → promoted / standby / succeeded (s) from the journal."""
    with Journal(path) as j:
        m = j.get(mid)
        steps = j.steps(mid)
        notes = [n for n in j.notifications(1000) if n.fingerprint == fp]
    if m is None or not notes:
        return {}
    received = notes[0].received_at

    def phase_done(arrow: str) -> float | None:
        s = next((s for s in steps if s.action == "phase" and s.detail.startswith(arrow)), None)
        return None if s is None or s.done_at is None else s.done_at - received

    standby = next((s for s in steps if s.action == "standby"), None)
    return {"migration": mid, "move": f"{m.source_name}@{m.source_node} → {m.target_node}",
            "end_phase": str(m.phase),
            "to_promoted_s": phase_done("shifting → promoted"),
            "to_standby_s": None if standby is None or standby.done_at is None
            else standby.done_at - received,
            "to_succeeded_s": phase_done("standby → succeeded")}


# --- report ---------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    print("\n| trial | arm | requests | failed (before / after the cut) | outcomes | n2 HPS at "
          "the start of W | plan entry after (s into W) | lead time: plan → cut / HPS drop → "
          "cut (s) | notification → promoted / standby (s) | phase at the cut | HAProxy DOWN "
          "/ Swarm Down / rescheduled (s after the cut) |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|")
    for r in results:
        mig = (f"{_f(r.get('to_promoted_s'), 2)} / {_f(r.get('to_standby_s'), 2)}"
               if r["arm"] == "proactive" else "–")
        hp = ("no n2 server" if r.get("risky_server_at_cut") is False
              else _f(r["haproxy_down_after_cut_s"]))
        resched = (_f(r["rescheduled_after_cut_s"]) if r["arm"] == "reactive"
                   or r["rescheduled_after_cut_s"] is not None else "no task on n2")
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(f"| {r['trial']} | {r['arm']} | {r['requests']} | {r['failures']} "
              f"({r['failures_before_cut']} / {r['failures_after_cut']}) | {outcomes} "
              f"| {_f(r['hps_n2_at_start'])}{'' if r['quiet_at_start'] else ' (not settled)'} "
              f"| {_f(r['plan_after_s'])} | {_f(r['lead_plan_s'])} / {_f(r['lead_hps_s'])} "
              f"| {mig} | {r.get('phase_at_cut') or '–'} "
              f"| {hp} / {_f(r['swarm_down_after_cut_s'])} / {resched} |")
    arms = {a: [r for r in results if r["arm"] == a] for a in ("reactive", "proactive")}
    print("\n| arm | trials | failed requests (sum) | requests (sum) | failed per trial | "
          "lead time plan → cut (median) | notification → promoted (median) |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for a, rs in arms.items():
        leads = [r["lead_plan_s"] for r in rs if r["lead_plan_s"] is not None]
        prom = [r["to_promoted_s"] for r in rs if r.get("to_promoted_s") is not None]
        print(f"| {a} | {len(rs)} | {sum(r['failures'] for r in rs)} | "
              f"{sum(r['requests'] for r in rs)} | {', '.join(str(r['failures']) for r in rs)} "
              f"| {_f(statistics.median(leads)) if leads else '–'} "
              f"| {_f(statistics.median(prom), 2) if prom else '–'} |")
    re_f = sum(r["failures"] for r in arms["reactive"])
    pro_f = sum(r["failures"] for r in arms["proactive"])
    # per request, so unequal totals do not skew it
    re_n = sum(r["requests"] for r in arms["reactive"]) or 1
    pro_n = sum(r["requests"] for r in arms["proactive"]) or 1
    ok = bool(arms["reactive"]) and bool(arms["proactive"]) and re_f > 0
    if ok:
        reduction = 1 - (pro_f / pro_n) / (re_f / re_n)
        ok = reduction >= 0.99 and all(r.get("end_phase") in ("succeeded", "standby")
                                       and r.get("phase_at_cut") in ("standby", "succeeded")
                                       for r in arms["proactive"])
        print(f"\nreduction of failed requests, 1 − proactive/reactive (per request): "
              f"{reduction * 100:.1f} % ({pro_f} of {pro_n} against {re_f} of {re_n}); "
              f"target ≥ 99 % with every proactive move done before the cut: "
              f"{'PASS' if ok else 'FAIL'}")
    else:
        print("\nno reactive failures (or an arm missing): no reduction to compute: FAIL")
    return ok


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=2, help="trials per arm (default 2)")
    ap.add_argument("--warning", type=float, default=60.0,
                    help="W: seconds from n2's degradation to the cut (default 60)")
    ap.add_argument("--after", type=float, default=30.0,
                    help="T: seconds of load after the cut (default 30)")
    ap.add_argument("--settle", type=float, default=150.0,
                    help="at most this long before each trial for n2's HPS to recover "
                    f"(≥ {SETTLED_HPS:g}) and the plan to have no move off n2 (default 150)")
    ap.add_argument("--rate", type=float, default=30.0, help="load, requests/s (default 30)")
    ap.add_argument("--threads", type=int, default=10,
                    help="load threads, each paced to rate/threads (default 10: a request "
                    "stuck 1 s on a dead server delays only its own thread's next one)")
    ap.add_argument("--tick", type=float, default=0.2, help="webhook.tick (default 0.2 s)")
    ap.add_argument("--first", choices=("proactive", "reactive"), default="proactive")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the testbed: network namespaces, dockerd)")
    WORK.mkdir(parents=True, exist_ok=True)
    gone = clear_leftovers()
    if gone:
        print(f"stopped leftovers of an earlier run: {', '.join(gone)}", file=sys.stderr)
    for p in list(WORK.glob("journal-*")) + list(WORK.glob("webhook-*")):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    spec = TestbedSpec(prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT, swarm=True,
                       exporter_address=EXPORTER, simulator_address=SIMULATOR)
    tb = Testbed(spec)
    results: list[dict[str, Any]] = []
    procs: list[Process] = []
    load_avg = os.getloadavg()
    t_start = time.monotonic()
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.split("\n")
    tb.up()  # clears what an earlier run of prefix "sp" left (links, engines, swarm)
    w = World(tb, HAProxy(spec.haproxy_socket, timeout=2), {})
    try:
        procs.append(started(Process(preshift_argv(
            "simulate", "--scenario", str(ROOT / "scenarios" / "steady.yaml"),
            "--listen", SIMULATOR, "--nodes", ",".join(n.name for n in tb.nodes),
            *[a for n in tb.nodes for a in ("--docker", f"{n.name}={n.socket_url}")],
        ), WORK / "simulator.log"), "simulator"))
        base = config(tb, WORK / "journal-0.sqlite3", args.tick)
        exporter = Exporter(write_yaml(WORK / "exporter.yaml", base), EXPORTER,
                            WORK / "exporter.log")
        started(exporter, "exporter")
        procs.append(exporter)
        exporter.wait_ready()
        wait_for(lambda: requests.get(f"http://{SIMULATOR}/api/v1/scenario", timeout=2).ok,
                 20, "the simulator", 0.5)
        wait_for(lambda: look(exporter)[1] is not None, 180, "the exporter's first scores", 1.0)
        print(f"set-up {time.monotonic() - t_start:.0f} s", file=sys.stderr)
        other = "reactive" if args.first == "proactive" else "proactive"
        k = 0
        for _ in range(args.trials):
            for arm in (args.first, other):
                k += 1
                r = trial(w, exporter, arm, k, args)
                results.append(r)
                print(f"  trial {k} {arm}: {r['failures']} of {r['requests']} failed "
                      f"({r['failures_before_cut']} before the cut); plan after "
                      f"{_f(r['plan_after_s'])} s, lead {_f(r['lead_plan_s'])} s"
                      + (f"; promoted {_f(r.get('to_promoted_s'), 2)} s after the "
                         f"notification, {r.get('phase_at_cut')} at the cut"
                         if arm == "proactive" else "")
                      + f"; HAProxy DOWN {_f(r['haproxy_down_after_cut_s'])} s, Swarm Down "
                      f"{_f(r['swarm_down_after_cut_s'])} s, rescheduled "
                      f"{_f(r['rescheduled_after_cut_s'])} s after the cut", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            for n in tb.nodes:
                tb.restore_link(n.name)
        for p in reversed(procs):
            p.stop()
        for name in ("simulator", "exporter", "webhook"):
            (WORK / f"{name}.pid").unlink(missing_ok=True)
        tb.down()
    wall = time.monotonic() - t_start
    print(f"\n{os.cpu_count()} CPUs, load average {load_avg[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; commit {git}"
          f"{' + uncommitted changes' if any(dirty) else ''}; W {args.warning:g} s, "
          f"T {args.after:g} s, load ~{args.rate:g} requests/s from {args.threads} threads "
          "through HAProxy (a new "
          f"connection each, retries 0, checks inter 500ms fall 2); webhook tick "
          f"{args.tick:g}s, steps 25/50/75/100 every 1 s, standby_ttl 4 s; {wall:.0f} s wall. "
          "The notification is POSTed straight to the webhook as soon as the exporter's plan "
          "moves web off n2: Prometheus' `for: 1m` and Alertmanager's group_wait are skipped "
          "on purpose.")
    for r in results:
        if not r["quiet_at_start"]:
            print(f"trial {r['trial']}: n2 had not recovered after {r['settle_s']:.0f} s "
                  f"(HPS {_f(r['hps_n2_settled'])}, factors {r['factors_n2_settled']}): "
                  "the warning started from an already lowered score")
    if w.haproxy_retries:
        print(f"HAProxy restarts waited for the frontend's port {w.haproxy_retries} time(s).")
    ok = report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
