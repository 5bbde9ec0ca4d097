"""Benchmark of the webhook's intake: notifications accepted per second and ack latency.

Starts the REAL app under gunicorn (webhook/gunicorn.conf.py, 2 workers by default, on
127.0.0.1:19742, journal in a temporary directory on disk, synchronous=FULL as always) and,
in the same run, a baseline: a trivial Flask endpoint under the same gunicorn settings that
answers 202 without authenticating, parsing or journaling (on 127.0.0.1:19743). The ratio of
the two shows what the journal and the checks cost.

The client runs in separate processes (so its own GIL does not bound the result), each with
several threads, each thread on one keep-alive connection, sending pre-built Alertmanager
notifications (one alert each, ~700 bytes, with a bearer token) until --count requests or
--seconds have passed. Mixes: `unique` (every notification new: one journal insert each)
and `duplicates` (90 % copies of 20 notifications, like HA Alertmanagers re-sending).

    .venv/bin/python bench/bench_webhook.py                       # both mixes, gthread
    .venv/bin/python bench/bench_webhook.py --worker-class sync   # compare the worker class
    .venv/bin/python bench/bench_webhook.py --no-group-commit     # one transaction per request
    .venv/bin/python bench/bench_webhook.py --quick               # a 30-second smoke run

Prints a Markdown table and PASS/FAIL against the targets (2 cores: >= 1,000
notifications/s, p99 <= 20 ms, unique mix). Only processes it started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
APP_PORT, BASELINE_PORT = 19742, 19743
TOKEN = "bench-token"
TARGET_RATE, TARGET_P99_MS = 1000.0, 20.0


# --- the baseline app (imported by gunicorn: keep this module's top level import-light) ---


def baseline_app() -> Any:
    """A Flask app whose only endpoint answers 202 at once: the floor of Flask + gunicorn."""
    from flask import Flask, Response

    app = Flask("baseline")

    @app.post("/api/v1/alerts")
    def alerts() -> Response:
        return Response('{"accepted":1,"duplicates":0}\n', status=202,
                        mimetype="application/json")

    @app.get("/-/ready")
    def ready() -> Response:
        return Response("ok\n")

    return app


# --- payloads -------------------------------------------------------------------------------


def notification(fingerprint: str, status: str = "firing") -> bytes:
    return json.dumps({
        "version": "4",
        "groupKey": '{}/{preshift_action="migrate"}:{alertname="PreshiftFootprintDiscrepancy"}',
        "truncatedAlerts": 0, "status": status, "receiver": "preshift-webhook",
        "groupLabels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web"},
        "commonLabels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web"},
        "commonAnnotations": {"summary": "Replicas of web are not where Preshift wants them"},
        "externalURL": "http://alertmanager:9093", "notification_reason": "new_alerts",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web",
                       "preshift_action": "migrate", "severity": "warning"},
            "annotations": {"summary": "Replicas of web are not where Preshift wants them"},
            "startsAt": "2026-05-01T12:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=component%3Apreshift",
            "fingerprint": fingerprint,
        }],
    }).encode()


def bodies(mix: str, n: int, salt: str) -> list[bytes]:
    """`n` request bodies; `salt` keeps fingerprints unique across runs and clients."""
    if mix == "unique":
        return [notification(f"{salt}{i:010x}") for i in range(n)]
    hot = [notification(f"{salt}ff{i:08x}") for i in range(20)]
    return [notification(f"{salt}{i:010x}") if i % 10 == 0 else hot[i % 20] for i in range(n)]


# --- client ---------------------------------------------------------------------------------


def _client_thread(port: int, payloads: list[bytes], deadline: float, out: list[float],
                   errors: list[str]) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    for body in payloads:
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/alerts", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            continue
        out.append(time.perf_counter() - t0)
        if status != 202:
            errors.append(f"HTTP {status}")
    conn.close()


def _client_process(
    args: tuple[int, list[list[bytes]], float],
) -> tuple[list[float], list[str], float, float, float]:
    port, per_thread, seconds = args
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in per_thread]
    errors: list[str] = []
    threads = [threading.Thread(target=_client_thread, args=(port, p, deadline, lat[i], errors))
               for i, p in enumerate(per_thread)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return [x for xs in lat for x in xs], errors, start, end, cpu


def load(port: int, payloads: list[bytes], procs: int, threads: int,
         seconds: float) -> dict[str, Any]:
    """Send `payloads` with procs x threads keep-alive connections; latency and rate."""
    k = procs * threads
    chunks = [payloads[i::k] for i in range(k)]
    jobs = [(port, chunks[p * threads:(p + 1) * threads], seconds) for p in range(procs)]
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_client_process, jobs)
    lat = sorted(x for r in results for x in r[0])
    errors = [e for r in results for e in r[1]]
    wall = max(r[3] for r in results) - min(r[2] for r in results)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    client_cpu = sum(r[4] for r in results)
    return {"requests": len(lat), "seconds": wall,
            "client_cpu_ms": client_cpu / len(lat) * 1000 if lat else 0.0,
            "rate": len(lat) / wall if wall else 0.0,
            "p50": pct(0.50), "p99": pct(0.99), "max": lat[-1] * 1000 if lat else float("nan"),
            "errors": len(errors), "error_kinds": sorted(set(errors))[:5]}


# --- servers --------------------------------------------------------------------------------


class Gunicorn:
    """A gunicorn we start (and stop by its PID only)."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
                conn.request("GET", "/-/ready")
                if conn.getresponse().status == 200:
                    time.sleep(1.0)  # let every worker finish booting
                    return
            except OSError:
                pass
            time.sleep(0.2)
        sys.exit(f"gunicorn not ready after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of gunicorn's master and its live workers so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(d.name) == self.proc.pid or int(fields[1]) == self.proc.pid:
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def gunicorn_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "PRESHIFT_WEBHOOK_WORKER_CLASS": args.worker_class,
        "PRESHIFT_WEBHOOK_THREADS": str(args.server_threads),
        "PRESHIFT_WEBHOOK_WORKERS": str(args.workers),
        "PRESHIFT_WEBHOOK_LOG_LEVEL": "warning",
    }


def start_app(args: argparse.Namespace, work: Path) -> Gunicorn:
    journal = work / "journal.sqlite3"
    cfg = work / "preshift.yaml"
    cfg.write_text(
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]\n"
        f"webhook: {{listen: '{HOST}:{APP_PORT}', journal: '{journal}'}}\n"
    )
    env = {
        **gunicorn_env(args), "PRESHIFT_CONFIG": str(cfg), "PRESHIFT_WEBHOOK_TOKEN": TOKEN,
        "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": {
            "none": "webhook.testing:idle_factory",
            "mark-handled": "webhook.testing:mark_handled_factory",
        }[args.executor],
        "PRESHIFT_WEBHOOK_GROUP_COMMIT": "1" if args.group_commit else "0",
    }
    argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "webhook" / "gunicorn.conf.py"),
            "--pythonpath", str(ROOT)]
    return Gunicorn(argv, env, APP_PORT, work / "app.log")


def start_baseline(args: argparse.Namespace, work: Path) -> Gunicorn:
    # the same gunicorn settings file (it needs a config for its bind and metrics dir)
    cfg = work / "baseline.yaml"
    cfg.write_text(
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]\n"
        f"webhook: {{listen: '{HOST}:{BASELINE_PORT}', journal: '{work / 'baseline.sqlite3'}'}}\n"
    )
    env = {**gunicorn_env(args), "PRESHIFT_CONFIG": str(cfg)}
    argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "webhook" / "gunicorn.conf.py"),
            "--pythonpath", str(ROOT / "bench"), "bench_webhook:baseline_app()"]
    return Gunicorn(argv, env, BASELINE_PORT, work / "baseline.log")


def count_rows(journal: Path) -> int:
    import sqlite3

    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT count(*) FROM notifications").fetchone()[0])


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="requests per scenario (bound)")
    ap.add_argument("--seconds", type=float, default=20.0, help="time per scenario (bound)")
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--client-threads", type=int, default=4, help="connections per process")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread")
    ap.add_argument("--server-threads", type=int, default=4, help="threads per gthread worker")
    ap.add_argument("--executor", choices=("none", "mark-handled"), default="mark-handled",
                    help="what the leader's executor does meanwhile (default: marks every "
                    "notification handled, one write each, as the real one does)")
    ap.add_argument("--group-commit", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--mix", choices=("unique", "duplicates", "both"), default="both")
    ap.add_argument("--dir", default=None, help="where the journal goes (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="3,000 requests / 5 s per scenario")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    if args.quick:
        args.count, args.seconds = 3000, 5.0
    work = Path(tempfile.mkdtemp(prefix="bench-webhook-", dir=args.dir))
    mixes = ("unique", "duplicates") if args.mix == "both" else (args.mix,)
    salt = f"{int(time.time()) & 0xffff:04x}"
    results: list[dict[str, Any]] = []
    warm = bodies("unique", 300, "0eee")
    servers = [("baseline (202, no journal)", start_baseline), ("webhook", start_app)]
    try:
        for label, starter in servers:
            server = starter(args, work)
            try:
                server.wait_ready()
                load(server.port, warm, 1, 2, 10)  # warm-up, not counted
                for mix in mixes:
                    payloads = bodies(mix, args.count, salt + ("a" if mix == "unique" else "b"))
                    cpu0 = server.cpu_seconds()
                    r = load(server.port, payloads, args.client_procs, args.client_threads,
                             args.seconds)
                    cpu = server.cpu_seconds() - cpu0
                    r.update(server=label, mix=mix,
                             server_cpu_ms=cpu / r["requests"] * 1000 if r["requests"] else 0)
                    results.append(r)
                    print(f"  {label:<28} {mix:<10} {r['rate']:8.0f}/s  p99 {r['p99']:.1f} ms",
                          file=sys.stderr)
                if server.port == APP_PORT:
                    rows = count_rows(work / "journal.sqlite3")
                    results.append({"journal_rows": rows})
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=2))


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    rows = [r for r in results if "server" in r]
    print(f"\nworkers {args.workers} x {args.worker_class}"
          + (f" ({args.server_threads} threads)" if args.worker_class == "gthread" else "")
          + f", group commit {'on' if args.group_commit else 'off'}, executor "
          f"{args.executor}, client {args.client_procs} procs x {args.client_threads} "
          f"keep-alive connections, {os.cpu_count()} CPUs\n")
    print("| server | mix | requests | seconds | notifications/s | p50 ms | p99 ms | max ms "
          "| server CPU ms/req | client CPU ms/req | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['server']} | {r['mix']} | {r['requests']:,} | {r['seconds']:.1f} "
              f"| {r['rate']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} "
              f"| {r['server_cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | {r['errors']} |")
    base = {r["mix"]: r for r in rows if r["server"].startswith("baseline")}
    app = {r["mix"]: r for r in rows if r["server"] == "webhook"}
    for mix, r in app.items():
        if mix in base and base[mix]["rate"]:
            print(f"\n{mix}: webhook / baseline = {r['rate'] / base[mix]['rate']:.2f} "
                  "of the baseline's rate")
    journal = [r["journal_rows"] for r in results if "journal_rows" in r]
    if journal:
        print(f"journal rows after the run: {journal[0]:,}")
    if "unique" in app:
        u = app["unique"]
        ok = u["rate"] >= TARGET_RATE and u["p99"] <= TARGET_P99_MS and u["errors"] == 0
        print(f"\ntarget (unique mix): >= {TARGET_RATE:,.0f}/s and p99 <= {TARGET_P99_MS:.0f} "
              f"ms: {'PASS' if ok else 'FAIL'} ({u['rate']:,.0f}/s, p99 {u['p99']:.1f} ms)")


if __name__ == "__main__":
    main()
