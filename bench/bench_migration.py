"""Benchmark of one migration: wall time from the notification to promoted, standby, succeeded.

Brings up a private testbed (prefix "pb", 3 Docker engines on 198.18.14.0/24, its Prometheus
on 127.0.0.1:19890), the telemetry simulator (127.0.0.1:19932), the exporter (127.0.0.1:19931),
HAProxy (frontend 127.0.0.1:19900, stats 127.0.0.1:19901, backend be_web) and the webhook under
gunicorn (`preshift webhook serve`, 127.0.0.1:19933). Component `web` runs one busybox httpd
replica on n1 and one on n2 (Docker healthcheck every 0.5 s), both at HAProxy weight 100; the
simulator heats n2 so the exporter's plan moves web-n2 off n2. None of that is measured.

One run: a bounded, paced load through HAProxy (~30 requests/s, a new connection each), then
ONE Alertmanager v4 notification for component web POSTed straight to the webhook (bearer
token). Prometheus' `for: 1m` and Alertmanager's group_wait are skipped on purpose: the time
measured is Preshift's own, from the notification the webhook receives. The script polls
GET /api/v1/migrations?component=web every 0.1 s and, after the run, reads the journal (the
notification's received_at, the migration's steps) for the exact times and the phase-by-phase
breakdown. Between runs everything is reset (canary and standby removed, web-n1 and web-n2
recreated, HAProxy restarted with the original servers); migration.cooldown is 0s so the next
run's migration may start at once (one journal per configuration).

Baseline, in the same run: the same move done by hand with the adapters directly
(`DockerRuntime.clone` + wait healthy, `HAProxy.add_server` + wait UP, the same weight steps
and step interval, drain + wait for 0 sessions + standby, standby_ttl, remove), on the other
replica (web-n1 → n3) under the same load, polling every 0.05 s: the bare operations, so the
ratio shows the executor's overhead (ticks, journal, re-observation).

    .venv/bin/python bench/bench_migration.py                 # e2e settings, 2 runs each
    .venv/bin/python bench/bench_migration.py --defaults      # also [10,25,50,75,100] / 2s
    .venv/bin/python bench/bench_migration.py --runs 3 --json /tmp/migration.json

Needs root (the testbed) and takes a few minutes. Prints Markdown tables and PASS/FAIL against
the target (2 cores: notification → promoted ≤ 15 s with 0 failed requests, in every run).
Everything is torn down at the end, also after an error or Ctrl-C; processes are stopped by
their PID only. Traffic goes only to 127.0.0.1 and the testbed's own addresses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preshift.act.docker_runtime import DockerRuntime  # noqa: E402
from preshift.act.haproxy import HAProxy  # noqa: E402
from preshift.act.journal import Journal  # noqa: E402
from preshift.config import parse_config  # noqa: E402
from preshift.errors import TestbedError  # noqa: E402
from preshift.testbed import Testbed, TestbedSpec  # noqa: E402
from preshift.testbed.haproxy import Backend  # noqa: E402
from preshift.testbed.load import Load  # noqa: E402
from tests.integration.stack import Exporter, Process, preshift_argv, wait_for, write_yaml  # noqa: E402

PREFIX, SUBNET, PROM_PORT = "pb", "198.18.14", 19890
EXPORTER, SIMULATOR, WEBHOOK = "127.0.0.1:19931", "127.0.0.1:19932", "127.0.0.1:19933"
FRONTEND, STATS = "127.0.0.1:19900", "127.0.0.1:19901"
APP_PORT = 8080  # the container port published on each node's address
BACKEND = "be_web"
TOKEN = "bench-migration-token"
WORK = Path("/var/lib/preshift-bench-migration")  # fixed: a killed run's leftovers are found
IMAGE = "preshift-box:latest"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
HEALTHCHECK = {"test": ["CMD", "true"], "interval": 500_000_000, "retries": 1}
TARGET_SECONDS = 15.0
TERMINAL = {"succeeded", "rolled_back", "cancelled", "dry_run", "failed"}
#: A move's phases in order: a phase the API poll missed (promoted lasts one tick) counts as
#: reached when a later one is seen.
ORDER = ["planned", "starting", "health_check", "routing", "shifting", "promoted", "draining",
         "standby", "succeeded"]


# --- leftovers of a killed earlier run ------------------------------------------------------


MARK = f"PRESHIFT_BENCH_MIGRATION={WORK}"  # in the environment of every process we start


def _ours(pid: int) -> bool:
    """The process still runs and carries our mark in its environment (not a reused PID)."""
    try:
        return MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


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


def _port_busy(hostport: str) -> bool:
    import socket

    host, port = hostport.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, int(port))) == 0


def started(proc: Process, name: str) -> Process:
    """Start `proc` with our mark in its environment and write its PID to WORK/name.pid."""
    key, _, value = MARK.partition("=")
    proc.env = {**(proc.env or {}), key: value}
    proc.start()
    assert proc.proc is not None
    (WORK / f"{name}.pid").write_text(f"{proc.proc.pid}\n")
    return proc


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    tb: Testbed
    haproxy: HAProxy
    runtime: DockerRuntime
    copy_image: bool = False
    haproxy_retries: int = 0  # times a restart found the frontend's port still in use

    def backends(self) -> list[Backend]:
        return [Backend(BACKEND, FRONTEND, tuple(
            (f"web-{n}", self.tb.address(n), APP_PORT, 100) for n in ("n1", "n2")))]


def run_replica(tb: Testbed, node: str) -> None:
    tb.client(node).containers.run(
        IMAGE, HTTPD, name=f"web-{node}", detach=True, init=True,
        labels={"preshift.service": "web"}, ports={"80/tcp": (tb.address(node), APP_PORT)},
        healthcheck=HEALTHCHECK, environment={"NODE": node},
    )


def healthy(tb: Testbed, node: str, name: str) -> bool:
    c = tb.client(node).containers.get(name)
    return c.attrs["State"].get("Health", {}).get("Status") == "healthy"


def reset_world(st: Stack) -> None:
    """web-n1 and web-n2 fresh and healthy, nothing else of web anywhere, HAProxy restarted
    with the two original servers at weight 100, both UP. No load runs meanwhile. With
    `copy_image`, n3 (no replica there) loses the image, so a clone to n3 must copy it."""
    tb = st.tb
    for n in tb.nodes:
        for c in tb.client(n.name).containers.list(
                all=True, filters={"label": "preshift.service=web"}):
            c.remove(force=True)
    if st.copy_image:
        with contextlib.suppress(docker.errors.ImageNotFound):
            tb.client("n3").images.remove(IMAGE, force=True)
    for node in ("n1", "n2"):
        run_replica(tb, node)
    for node in ("n1", "n2"):
        wait_for(lambda n=node: healthy(tb, n, f"web-{n}"), 30, f"web-{node} healthy", 0.1)
    _restart_haproxy(st)
    wait_for(lambda: {k: s.up for k, s in st.haproxy.servers(BACKEND).items()}
             == {"web-n1": True, "web-n2": True}, 15, "both servers UP in HAProxy", 0.1)


def _restart_haproxy(st: Stack) -> None:
    """A fresh HAProxy with the original config. The frontend's port was once reported in
    use right after the old HAProxy exited (an orphaned connection of its, it seems): retry."""
    deadline = time.monotonic() + 20
    while True:
        try:
            st.tb.start_haproxy(st.backends(), stats=STATS)
            return
        except TestbedError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            st.haproxy_retries += 1
            time.sleep(0.5)


def config(tb: Testbed, journal: Path, steps: list[int], interval: float, ttl: float,
           tick: float) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg.update(
        refresh_interval="1s", horizon="60s",
        services={"web": {"min_available": 1}},
        docker={"timeout": "5s"},
        exporter={"listen": EXPORTER},
        webhook={"listen": WEBHOOK, "journal": str(journal),
                 "exporter_url": f"http://{EXPORTER}", "tick": f"{tick:g}s"},
        traffic={"kind": "haproxy", "socket": str(tb.spec.haproxy_socket),
                 "backends": {"web": BACKEND}},
        migration={
            "step_weights": steps, "step_interval": f"{interval:g}s",
            "health_timeout": "8s", "drain_timeout": "10s", "progress_deadline": "60s",
            "standby_ttl": f"{ttl:g}s", "cooldown": "0s", "max_concurrent": 1,
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


def plan_moves_web_n2(exporter: Exporter) -> bool:
    return any(e["component"] == "web" and e["from_node"] == "n2" and e["action"] == "move"
               and e["replica"] == "web-n2"
               for e in exporter.footprint()["plan"]["entries"])


def new_load(rate: float, seconds: float) -> Load:
    host, port = FRONTEND.split(":")
    threads = 3
    # each thread: one request (a few ms) then `interval` s of pause
    interval = max(0.0, threads / rate - 0.005)
    return Load(host, int(port), "/cgi-bin/app", total=int(rate * seconds) + 100,
                threads=threads, deadline=seconds, interval=interval)


def notification(fingerprint: str, starts_at: str) -> dict[str, Any]:
    labels = {"alertname": "PreshiftFootprintDiscrepancy", "component": "web",
              "preshift_action": "migrate", "severity": "warning"}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PreshiftFootprintDiscrepancy", component="web"}',
        "truncatedAlerts": 0, "status": "firing", "receiver": "preshift",
        "groupLabels": {"alertname": labels["alertname"], "component": "web"},
        "commonLabels": labels, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:19893",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": fingerprint}],
    }


def api(path: str, **params: Any) -> Any:
    r = requests.get(f"http://{WEBHOOK}{path}", params=params, timeout=5,
                     headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    return r.json()


# --- one executor run -----------------------------------------------------------------------


def executor_run(st: Stack, exporter: Exporter, journal_path: Path, k: int, label: str,
                 args: argparse.Namespace, expected_seconds: float) -> dict[str, Any]:
    reset_world(st)
    wait_for(lambda: plan_moves_web_n2(exporter), 240, "a plan entry moving web-n2 off n2", 0.5)
    load = new_load(args.rate, expected_seconds + 30).start()
    time.sleep(1.0)  # the load is steady before the notification
    fp = f"{int(time.time() * 1000) & 0xffffffffffff:012x}{k:04x}"
    starts_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    seen: dict[str, float] = {}
    t0 = time.monotonic()
    w0 = time.time()
    r = requests.post(f"http://{WEBHOOK}/api/v1/alerts", json=notification(fp, starts_at),
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    ack = time.monotonic() - t0
    if r.status_code != 202:
        load.stop()
        raise SystemExit(f"the webhook answered {r.status_code}: {r.text}")
    mid = None
    deadline = t0 + expected_seconds + 60
    phase = ""
    while time.monotonic() < deadline:
        ms = [m for m in api("/api/v1/migrations", component="web")["migrations"]
              if m["created_at"] >= w0 - 1]
        now = time.monotonic() - t0
        if ms:
            m = ms[0]
            mid, phase = m["id"], m["phase"]
            seen.setdefault(phase, now)
            if phase in TERMINAL:
                break
        time.sleep(0.1)
    load.stop()
    summary = load.summary()
    reached = {p: min((t for q, t in seen.items() if q in ORDER[i:]), default=float("nan"))
               for i, p in enumerate(ORDER)}
    if mid is None:
        raise SystemExit(f"{label} run {k}: no migration appeared; see {WORK}/webhook-*.log")
    with Journal(journal_path) as j:
        m = j.get(mid)
        steps = j.steps(mid)
        notes = [n for n in j.notifications(1000) if n.fingerprint == fp]
    assert m is not None and notes
    breakdown = journal_breakdown(notes[0].received_at, m.created_at, steps)
    return {
        "kind": "executor", "config": label, "run": k, "migration": mid, "phase": phase,
        "target": m.target_node, "source": f"{m.source_name}@{m.source_node}",
        "ack_ms": ack * 1000, "api_seen": reached, "phases": breakdown,
        "requests": summary.total, "failures": summary.failures, "statuses": summary.statuses,
        "served_by": len(summary.bodies), "reason": m.reason,
    }


def journal_breakdown(received: float, created: float, steps: list[Any]) -> dict[str, float]:
    """Phase-by-phase durations (s) and cumulative times from the journal's steps."""
    def phase_done(arrow: str) -> float | None:
        s = next((s for s in steps if s.action == "phase" and s.detail.startswith(arrow)), None)
        return s.done_at if s is not None else None

    def effect(action: str) -> Any:
        return next((s for s in steps if s.action == action), None)

    out: dict[str, float] = {}
    clone = effect("clone")
    to_routing = phase_done("health_check → routing")
    to_shifting = phase_done("routing → shifting")
    to_promoted = phase_done("shifting → promoted")
    standby = effect("standby")
    succeeded = phase_done("standby → succeeded")
    out["intake (notification → planned)"] = created - received
    starting = phase_done("planned → starting") or created
    out["planned → starting"] = starting - created
    if clone is not None:
        out["clone (incl. image copy)"] = clone.done_at - starting
    if clone is not None and to_routing is not None:
        out["health gate"] = to_routing - clone.done_at
    if to_routing is not None and to_shifting is not None:
        out["routing until HAProxy UP"] = to_shifting - to_routing
    weights = [s for s in steps if s.action == "set_weights"
               and s.phase == "shifting"]
    marks = [s.at for s in weights] + ([to_promoted] if to_promoted else [])
    for i, s in enumerate(weights):
        share = s.detail.split("=")[1].split(",")[0] if "=" in s.detail else "?"
        if i + 1 < len(marks):
            out[f"step {i + 1} (canary weight {share})"] = marks[i + 1] - s.at
    if weights and to_shifting is not None:
        out["first step set after UP"] = weights[0].at - to_shifting
    if to_promoted is not None and standby is not None:
        out["drain + stop (promoted → standby)"] = standby.done_at - to_promoted
        out["  of which docker stop"] = standby.done_at - standby.at
    if standby is not None and succeeded is not None:
        out["standby_ttl + decommission"] = succeeded - standby.done_at
    if to_promoted is not None:
        out["TOTAL notification → promoted"] = to_promoted - received
    if standby is not None:
        out["TOTAL notification → standby"] = standby.done_at - received
    if succeeded is not None:
        out["TOTAL notification → succeeded"] = succeeded - received
    return out


# --- the baseline: the same move by hand ----------------------------------------------------


def baseline_run(st: Stack, k: int, label: str, steps: list[int], interval: float,
                 ttl: float, args: argparse.Namespace, expected_seconds: float,
                 ) -> dict[str, Any]:
    reset_world(st)
    rt, hp = st.runtime, st.haproxy
    load = new_load(args.rate, expected_seconds + 20).start()
    time.sleep(1.0)
    out: dict[str, float] = {}
    name = f"web-base{k}"
    poll = 0.05
    try:
        t0 = time.time()
        mark = t0

        def lap(what: str) -> None:
            nonlocal mark
            now = time.time()
            out[what] = now - mark
            mark = now

        src = rt.inspect("n1", "web-n1")
        assert src is not None and src.running
        canary = rt.clone(src, "n3", name, {"preshift.migration": f"baseline-{k}",
                                            "preshift.replaces": src.name})
        lap("clone (incl. image copy)")
        wait_for(lambda: rt.probe(canary) == "healthy", 30, "the copy healthy", poll)
        lap("health gate")
        assert canary.address and canary.port
        hp.add_server(BACKEND, name, canary.address, canary.port)
        wait_for(lambda: hp.servers(BACKEND)[name].up, 30, "the copy UP in HAProxy", poll)
        lap("routing until HAProxy UP")
        for i, w in enumerate(steps):
            hp.set_weight(BACKEND, name, w)
            hp.set_weight(BACKEND, src.name, 100 - w)
            time.sleep(interval)
            lap(f"step {i + 1} (canary weight {w})")
        promoted = time.time()
        hp.drain(BACKEND, src.name)
        wait_for(lambda: hp.servers(BACKEND)[src.name].sessions == 0, 10, "0 sessions", poll)
        s0 = time.time()
        rt.standby("n1", src.name, {})
        standby = time.time()
        out["drain + stop (promoted → standby)"] = standby - promoted
        out["  of which docker stop"] = standby - s0
        mark = standby
        time.sleep(ttl)
        hp.remove_server(BACKEND, src.name)
        rt.remove("n1", src.name)
        lap("standby_ttl + decommission")
        out["TOTAL notification → promoted"] = promoted - t0
        out["TOTAL notification → standby"] = standby - t0
        out["TOTAL notification → succeeded"] = mark - t0
        time.sleep(0.5)
    finally:
        load.stop()
    summary = load.summary()
    return {"kind": "baseline", "config": label, "run": k, "phases": out,
            "requests": summary.total, "failures": summary.failures,
            "statuses": summary.statuses}


# --- report ---------------------------------------------------------------------------------


def fmt(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.median(xs):.2f} / {max(xs):.2f}"


def report(results: list[dict[str, Any]], labels: list[str], args: argparse.Namespace) -> bool:
    ok_all = True
    for label in labels:
        ex = [r for r in results if r["config"] == label and r["kind"] == "executor"]
        bl = [r for r in results if r["config"] == label and r["kind"] == "baseline"]
        print(f"\n### {label}\n")
        print(f"{len(ex)} executor run(s), {len(bl)} baseline run(s); seconds as "
              "median / max over the runs\n")
        print("| phase | executor (webhook) | baseline (adapters by hand) | executor − baseline "
              "(median) |")
        print("|---|---:|---:|---:|")
        keys: list[str] = []
        for r in ex + bl:
            keys += [k for k in r["phases"] if k not in keys]
        keys = [k for k in keys if not k.startswith("TOTAL")] + \
            [k for k in keys if k.startswith("TOTAL")]
        for key in keys:
            a = [r["phases"][key] for r in ex if key in r["phases"]]
            b = [r["phases"][key] for r in bl if key in r["phases"]]
            diff = (f"{statistics.median(a) - statistics.median(b):+.2f}" if a and b else "")
            name = f"**{key}**" if key.startswith("TOTAL") else key.replace("  ", "… ")
            print(f"| {name} | {fmt(a)} | {fmt(b)} | {diff} |")
        print("\n| run | migration | move | ack ms | API saw promoted / standby / succeeded (s) "
              "| end phase | requests | failed | baseline: requests / failed |")
        print("|---|---|---|---:|---|---|---:|---:|---|")
        for r in ex:
            s = r["api_seen"]
            b = next((x for x in bl if x["run"] == r["run"]), None)
            print(f"| {r['run']} | {r['migration']} | {r['source']} → {r['target']} "
                  f"| {r['ack_ms']:.0f} | {s['promoted']:.1f} / {s['standby']:.1f} / "
                  f"{s['succeeded']:.1f} | {r['phase']} | {r['requests']} "
                  f"| {r['failures']} | "
                  + (f"{b['requests']} / {b['failures']}" if b else "–") + " |")
        promoted = [r["phases"].get("TOTAL notification → promoted", float("inf")) for r in ex]
        fails = sum(r["failures"] for r in ex) + sum(r["failures"] for r in bl)
        ratio = ""
        bp = [r["phases"]["TOTAL notification → promoted"] for r in bl]
        if ex and bp and all(p != float("inf") for p in promoted):
            ratio = (f"; executor / baseline (to promoted, medians) = "
                     f"{statistics.median(promoted) / statistics.median(bp):.2f}")
        ok = bool(ex) and max(promoted) <= TARGET_SECONDS and fails == 0 and \
            all(r["phase"] == "succeeded" for r in ex)
        ok_all &= ok
        statuses: dict[str, int] = {}
        for r in ex + bl:
            for kk, v in r["statuses"].items():
                statuses[kk] = statuses.get(kk, 0) + v
        print(f"\nload outcomes over all runs: {statuses}{ratio}")
        print(f"target: notification → promoted ≤ {TARGET_SECONDS:g} s in every run with 0 "
              f"failed requests: {'PASS' if ok else 'FAIL'} (max "
              f"{max(promoted) if promoted else float('nan'):.2f} s, {fails} failed)")
    return ok_all


# --- main -----------------------------------------------------------------------------------


def steps_arg(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="runs per configuration (and baseline)")
    ap.add_argument("--steps", type=steps_arg, default=[25, 50, 75, 100],
                    help="migration.step_weights (default: the e2e test's 25,50,75,100)")
    ap.add_argument("--step-interval", type=float, default=1.0, help="seconds (default 1)")
    ap.add_argument("--standby-ttl", type=float, default=4.0, help="seconds (default 4)")
    ap.add_argument("--tick", type=float, default=0.2,
                    help="webhook.tick, seconds (default 0.2 as in the e2e test; the "
                    "product default is 0.25)")
    ap.add_argument("--defaults", action="store_true",
                    help="also run the product defaults: steps 10,25,50,75,100 every 2s "
                    "(same tick and standby_ttl)")
    ap.add_argument("--rate", type=float, default=30.0, help="load, requests/s (default 30)")
    ap.add_argument("--copy-image", action="store_true",
                    help="remove the image from n3 before every run, so the clone to n3 "
                    "copies it from the source engine (save → load, ~2 MB)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the testbed: network namespaces, dockerd)")
    configs = [(f"steps {args.steps}, every {args.step_interval:g}s, standby_ttl "
                f"{args.standby_ttl:g}s", args.steps, args.step_interval)]
    if args.defaults:
        configs.append((f"defaults: steps [10, 25, 50, 75, 100], every 2s, standby_ttl "
                        f"{args.standby_ttl:g}s", [10, 25, 50, 75, 100], 2.0))
    WORK.mkdir(parents=True, exist_ok=True)
    gone = clear_leftovers()
    if gone:
        print(f"stopped leftovers of an earlier run: {', '.join(gone)}", file=sys.stderr)
    for p in WORK.glob("journal-*"):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    spec = TestbedSpec(prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT,
                       exporter_address=EXPORTER, simulator_address=SIMULATOR)
    tb = Testbed(spec)
    results: list[dict[str, Any]] = []
    procs: list[Process] = []
    webhook: Process | None = None
    load_avg = os.getloadavg()
    t_start = time.monotonic()
    tb.up()  # clears what an earlier run of prefix "pb" left
    try:
        sim = started(Process(preshift_argv(
            "simulate", "--scenario", str(ROOT / "scenarios" / "steady.yaml"),
            "--listen", SIMULATOR, "--nodes", ",".join(n.name for n in tb.nodes),
            *[a for n in tb.nodes for a in ("--docker", f"{n.name}={n.socket_url}")],
        ), WORK / "simulator.log"), "simulator")
        procs.append(sim)
        base_cfg = config(tb, WORK / "journal-0.sqlite3", args.steps, args.step_interval,
                          args.standby_ttl, args.tick)
        parsed = parse_config(base_cfg)
        st = Stack(tb, HAProxy(spec.haproxy_socket), DockerRuntime(parsed.nodes, timeout=5),
                   args.copy_image)
        reset_world(st)
        exporter_cfg = write_yaml(WORK / "exporter.yaml", base_cfg)
        exporter = Exporter(exporter_cfg, EXPORTER, WORK / "exporter.log")
        started(exporter, "exporter")
        procs.append(exporter)
        exporter.wait_ready()
        wait_for(lambda: requests.put(
            f"http://{SIMULATOR}/api/v1/nodes/n2/temperature_celsius",
            json={"ramp": {"from": 84, "to": 95, "over": "60s"}, "noise": 0.3},
            timeout=5).status_code == 200, 20, "the simulator to take n2's heat", 0.5)
        t_plan = time.monotonic()
        wait_for(lambda: plan_moves_web_n2(exporter), 300, "a plan entry moving web-n2", 1.0)
        print(f"set-up {t_plan - t_start:.0f} s; the plan moved web-n2 after "
              f"{time.monotonic() - t_plan:.0f} s more", file=sys.stderr)
        labels = []
        for ci, (label, steps, interval) in enumerate(configs):
            labels.append(label)
            journal = WORK / f"journal-{ci}.sqlite3"
            cfg_path = write_yaml(WORK / f"webhook-{ci}.yaml", config(
                tb, journal, steps, interval, args.standby_ttl, args.tick))
            webhook = start_webhook(cfg_path, WORK / f"webhook-{ci}.log")
            expected = 3 + len(steps) * interval + args.standby_ttl
            try:
                for k in range(1, args.runs + 1):
                    r = executor_run(st, exporter, journal, k, label, args, expected)
                    results.append(r)
                    p = r["phases"]
                    print(f"  {label}: run {k} {r['phase']}, promoted after "
                          f"{p.get('TOTAL notification → promoted', float('nan')):.2f} s, "
                          f"{r['failures']} of {r['requests']} requests failed",
                          file=sys.stderr)
                    if not args.no_baseline:
                        b = baseline_run(st, k, label, steps, interval, args.standby_ttl,
                                         args, expected)
                        results.append(b)
                        print(f"  {label}: baseline {k} promoted after "
                              f"{b['phases']['TOTAL notification → promoted']:.2f} s, "
                              f"{b['failures']} of {b['requests']} requests failed",
                              file=sys.stderr)
            finally:
                stop_webhook(webhook)
                webhook = None
    finally:
        if webhook is not None:
            stop_webhook(webhook)
        for p in reversed(procs):
            p.stop()
        for name in ("simulator", "exporter"):
            (WORK / f"{name}.pid").unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            st.runtime.close()
        tb.down()
    wall = time.monotonic() - t_start
    image = ("removed from n3 before each run (the clone copies it)" if args.copy_image
             else "present on every node (imported at set-up: no copy)")
    print(f"\n{os.cpu_count()} CPUs, load average {load_avg[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; image on the target: "
          f"{image}; "
          f"tick {args.tick:g}s, load ~{args.rate:g} requests/s through HAProxy (a new "
          f"connection each, retries 0); webhook: 2 gunicorn workers; {wall:.0f} s wall in all. "
          "The notification is POSTed straight to the webhook: Prometheus' `for: 1m` and "
          "Alertmanager's group_wait (default 30 s) come on top in production.")
    if st.haproxy_retries:
        print(f"HAProxy restarts between runs had to wait for the frontend's port "
              f"{st.haproxy_retries} time(s) (0.5 s each; not in any measured time).")
    ok = report(results, labels, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                               "results": results}, indent=2, default=str))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
