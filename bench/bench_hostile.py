"""Hostile input against the REAL webhook under gunicorn: 100,000 requests, 0 5xx, 0 crashes,
0 migrations started, memory bounded.

Starts `preshift webhook serve` (gunicorn, 2 gthread workers as shipped, on 127.0.0.1:20400,
journal in a temporary directory, the executor idle so that the journal keeps every row for
the check below) and sends, with bounded concurrency (2 client processes x 4 threads, one
keep-alive connection each, reconnecting when the server closes one), `--payloads` requests
from the seeded fuzzer of `bench/hostile_inputs.py` (the pools the unit test
tests/unit/test_webhook_hostile.py draws from): mutated Alertmanager v4 payloads, hostile
labels (shell metacharacters aimed at a canary directory, path tricks, odd unicode, near
misses of the planned component), random JSON, raw bytes, nesting up to 100,000 levels,
bodies past webhook.max_body (5 % of bodies chunked), wrong content types, bad credentials,
other methods and paths, and the control API with hostile ids and query strings.

Baseline in the same run: valid notifications (component `api`, not in the plan) before and
after the hostile phase; the ratio of the rates is printed. Meanwhile the RSS of gunicorn's
master and workers is sampled every 0.5 s; worker PIDs are compared before and after (a crash
is a PID change). At the end one valid alert for `web` is posted (the positive control), the
server is stopped, and the real `preshift.act.intake.Intake` runs over every journaled
notification with a plan that moves `web` (running on n1): exactly one migration must come out,
the control's. Finally the canary directory must not exist (no shell ran a payload).

    .venv/bin/python bench/bench_hostile.py                    # 100,000 requests, ~2-4 min
    .venv/bin/python bench/bench_hostile.py --quick            # 5,000 requests, ~30 s
    .venv/bin/python bench/bench_hostile.py --payloads 20000 --seed 7

Exit status 0 when every check passes (PASS/FAIL printed). Only processes it started are
stopped, by PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.unit.act_fakes for the intake replay

import hostile_inputs as hi  # noqa: E402  (bench/ is sys.path[0] when run as a script)
from bench_webhook import Gunicorn  # noqa: E402

HOST = "127.0.0.1"
PORT = 20400
TOKEN = "bench-hostile-token"
MAX_BODY = 1_048_576
RSS_FACTOR = 2.0  # bounded: peak RSS during the hostile phase <= this x the RSS after warm-up
CONTROL_FINGERPRINT = "feedc0de00000001"
GUNICORN_LIMIT_REQUEST_LINE = 4094  # gunicorn's default limit_request_line
GUNICORN_DRAIN_MAX = 64 * 1024  # gunicorn drains this much of a body the app did not read


# --- the server -----------------------------------------------------------------------------


class Server(Gunicorn):
    """`preshift webhook serve` (it execs gunicorn: our child's PID is the master's)."""

    def __init__(self, work: Path, workers: int) -> None:
        self.journal = work / "journal.sqlite3"
        cfg = work / "preshift.yaml"
        cfg.write_text(
            "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]\n"
            f"webhook: {{listen: '{HOST}:{PORT}', journal: '{self.journal}', "
            f"max_body: {MAX_BODY}}}\n"
        )
        env = {"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
               "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "webhook.testing:idle_factory",
               "PRESHIFT_WEBHOOK_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
        argv = [str(Path(sys.executable).parent / "preshift"), "webhook", "serve",
                "--config", str(cfg), "--workers", str(workers)]
        super().__init__(argv, env, PORT, work / "gunicorn.log")

    def workers(self) -> list[int]:
        """PIDs of the master's children (the workers)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    out.append(int(d.name))
        return sorted(out)

    def rss_mib(self) -> float:
        """RSS of the master and its workers, MiB."""
        total = 0
        for pid in [self.proc.pid, *self.workers()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024


class RssSampler(threading.Thread):
    def __init__(self, server: Server, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.samples: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append(self.server.rss_mib())
            self._halt.wait(self.every)

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(5)
        return self.samples


# --- the client -----------------------------------------------------------------------------


def _send(conn: http.client.HTTPConnection, req: hi.Request) -> tuple[int, bytes]:
    headers = dict(req.headers)
    if req.chunked:
        body: Any = (req.body[i:i + 8192] for i in range(0, max(len(req.body), 1), 8192))
        conn.request(req.method, req.path, body=body, headers=headers, encode_chunked=True)
    else:
        conn.request(req.method, req.path, body=req.body or None, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def expected(req: hi.Request) -> set[int]:
    """The statuses an alerts request may get (202 vs 400 is left to the unit test's oracle,
    which checks it against docs/openapi.yaml); gunicorn itself answers 400 to a request line
    or header past its limits."""
    if len(req.method) + len(req.path) + 10 > GUNICORN_LIMIT_REQUEST_LINE:
        return {414}  # gunicorn's own answer (HTML), before the app
    if req.path.startswith("/-/"):
        return {200}  # open; the query is ignored
    if req.kind == "control":
        return {200, 400, 401, 404, 405, 409} if req.extra["auth_ok"] else {401, 404, 405}
    if req.path not in (hi.ALERTS_PATH, "/api/v1/%61lerts"):
        return {404, 405, 400}
    if req.method != "POST":
        return {405}
    if not req.extra["auth_ok"]:
        return {401}
    if len(req.body) > MAX_BODY:
        return {413}
    if not req.extra["json_ct"]:
        return {415}
    return {202, 400}


def _client_thread(seed: int, n: int, deadline: float, out: dict[str, Any]) -> None:
    fuzz = hi.Fuzzer(seed, TOKEN, MAX_BODY, out["canary"])
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    unexpected: list[str] = []
    five: list[str] = []
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    sent = 0
    unread = False  # the previous answer left more than gunicorn drains of its body unread
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        req = fuzz.request()
        sent += 1
        try:
            status, body = _send(conn, req)
        except (OSError, http.client.HTTPException) as exc:
            # gunicorn closes a keep-alive connection whose previous request body was not
            # read (beyond 64 KiB) after answering; a client re-sends on a new connection
            # ... and, answering before reading a body (401, 413), may close it while the
            # client is still sending that body (a broken pipe or reset)
            why = ("after an unread body > 64 KiB" if unread else
                   "while sending an unread body > 64 KiB"
                   if len(req.body) > GUNICORN_DRAIN_MAX else "other")
            errors[f"{req.kind}:{type(exc).__name__} {why}"] += 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
            try:
                status, body = _send(conn, req)
            except (OSError, http.client.HTTPException) as exc2:
                errors[f"{req.kind}:{type(exc2).__name__} on the retry"] += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
                unread = False
                continue
        unread = status in (401, 404, 405, 413, 414) and len(req.body) > GUNICORN_DRAIN_MAX
        statuses[f"{req.kind}:{status}"] += 1
        if status >= 500:
            five.append(f"{req.method} {req.path[:80]} {req.body[:120]!r} -> {status} "
                        f"{body[:200]!r}")
        elif status not in expected(req):
            unexpected.append(f"{req.kind} {req.method} {req.path[:60]} -> {status} "
                              f"{body[:160]!r}")
    conn.close()
    out["statuses"].update(statuses)
    out["errors"].update(errors)
    out["five"] += five[:20]
    out["unexpected"] += unexpected[:20]
    out["sent"] += sent


def _client_process(args: tuple[int, int, int, float, str]) -> dict[str, Any]:
    seed, n, threads, seconds, canary = args
    out: dict[str, Any] = {"statuses": Counter(), "errors": Counter(), "five": [],
                           "unexpected": [], "sent": 0, "canary": canary}
    deadline = time.monotonic() + seconds
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=_client_thread, args=(seed * 100 + i, per[i], deadline, out))
          for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def hostile(n: int, procs: int, threads: int, seconds: float, seed: int,
            canary: str) -> dict[str, Any]:
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    jobs = [(seed * 1000 + p, per[p], threads, seconds, canary) for p in range(procs)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_client_process, jobs)
    wall = time.perf_counter() - t0
    total: dict[str, Any] = {"statuses": Counter(), "errors": Counter(), "five": [],
                             "unexpected": [], "sent": 0, "seconds": wall}
    for r in results:
        for k in ("statuses", "errors"):
            total[k].update(r[k])
        for k in ("five", "unexpected"):
            total[k] += r[k]
        total["sent"] += r["sent"]
    return total


def _valid_thread(bodies: list[bytes], out: list[int]) -> None:
    conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    for body in bodies:
        try:
            conn.request("POST", hi.ALERTS_PATH, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            out.append(resp.status)
        except (OSError, http.client.HTTPException):
            out.append(-1)
            conn.close()
            conn = http.client.HTTPConnection(HOST, PORT, timeout=30)
    conn.close()


def valid(n: int, threads: int, salt: str) -> dict[str, Any]:
    """The baseline: `n` valid notifications (component `api`: not in the plan)."""
    bodies = [hi.dumps(hi.notification(hi.alert("api", f"{salt}{i:012x}"))) for i in range(n)]
    outs: list[list[int]] = [[] for _ in range(threads)]
    ts = [threading.Thread(target=_valid_thread, args=(bodies[i::threads], outs[i]))
          for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    codes = Counter(c for o in outs for c in o)
    return {"requests": n, "seconds": wall, "rate": n / wall, "codes": dict(codes)}


# --- the journal afterwards -----------------------------------------------------------------


def replay(journal: Path) -> dict[str, Any]:
    from preshift.act.journal import Journal
    from preshift.act.plan_source import StaticPlanSource
    from tests.unit.act_fakes import Clock, make_config, move_item, web_world

    cfg = make_config(cooldown=0)
    with Journal(journal) as j:
        t0 = time.perf_counter()
        r = hi.replay_intake(j, cfg, web_world(cfg), StaticPlanSource([move_item()]), Clock())
        seconds = time.perf_counter() - t0
    control = [m for m in r.migrations
               if (m.alert_key or "").startswith(CONTROL_FINGERPRINT + "|")]
    return {"notifications": r.notifications, "outcomes": dict(r.outcomes),
            "migrations": len(r.migrations), "control_migrations": len(control),
            "hostile_migrations": len(r.migrations) - len(control),
            "components": sorted({m.component for m in r.migrations}), "seconds": seconds}


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--payloads", type=int, default=100_000, help="hostile requests (bound)")
    ap.add_argument("--seconds", type=float, default=900.0, help="time bound of the hostile phase")
    ap.add_argument("--quick", action="store_true", help="5,000 hostile requests")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline", type=int, default=3000, help="valid requests before and after")
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--client-threads", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    if args.quick:
        args.payloads, args.baseline = 5000, 1000
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    try:
        res, pids0, pids1 = run(args, work)
    finally:  # also when the server did not start (wait_ready exits)
        shutil.rmtree(work, ignore_errors=True)
    ok = report(res, pids0, pids1)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0 if ok else 1


def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], list[int], list[int]]:
    """Server up, baseline, hostile phase, baseline, control, server down, replay."""
    canary = work / "canary"  # the shell payloads would create files in it
    server = Server(work, args.workers)
    res: dict[str, Any] = {"payloads": args.payloads, "seed": args.seed}
    try:
        server.wait_ready()
        valid(300, 2, "0eee")  # warm-up, not counted
        res["pids_before"] = pids0 = server.workers()
        res["rss_start"] = server.rss_mib()
        res["valid_before"] = valid(args.baseline, args.client_threads, "0aaa")
        sampler = RssSampler(server)
        sampler.start()
        h = hostile(args.payloads, args.client_procs, args.client_threads, args.seconds,
                    args.seed, str(canary))
        samples = sampler.stop()
        res["hostile"] = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in h.items()}
        res["rss_during_max"] = max(samples) if samples else float("nan")
        res["rss_samples"] = len(samples)
        res["valid_after"] = valid(args.baseline, args.client_threads, "0bbb")
        res["rss_end"] = server.rss_mib()
        res["pids_after"] = pids1 = server.workers()
        res["master_alive"] = server.proc.poll() is None
        ctrl = hi.dumps(hi.notification(hi.alert(hi.PLANNED, CONTROL_FINGERPRINT)))
        conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
        conn.request("POST", hi.ALERTS_PATH, body=ctrl, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        res["control_status"] = resp.status
        resp.read()
        conn.close()
    finally:
        server.stop()
    res["replay"] = replay(server.journal)
    res["journal_mib"] = server.journal.stat().st_size / 2**20
    res["canary_exists"] = canary.exists()
    log = server.log.read_text(errors="replace")
    res["log_tracebacks"] = log.count("Traceback")
    res["log_worker_timeouts"] = log.count("WORKER TIMEOUT")
    return res, pids0, pids1


def report(res: dict[str, Any], pids0: list[int], pids1: list[int]) -> bool:
    h = res["hostile"]
    codes: Counter[int] = Counter()
    by_kind: dict[str, Counter[int]] = {}
    for key, n in h["statuses"].items():
        kind, code = key.rsplit(":", 1)
        codes[int(code)] += n
        by_kind.setdefault(kind, Counter())[int(code)] += n
    five = sum(n for c, n in codes.items() if c >= 500)
    errors = sum(h["errors"].values())
    rate = h["sent"] / h["seconds"] if h["seconds"] else 0.0
    vb, va = res["valid_before"], res["valid_after"]
    print(f"\nhostile requests: {h['sent']:,} in {h['seconds']:.1f} s ({rate:,.0f}/s, "
          f"{os.cpu_count()} CPUs, client and server on the same machine)")
    print("\n| kind | requests | status codes | connection errors |")
    print("|---|---:|---|---:|")
    err_kind: Counter[str] = Counter()
    for key, n in h["errors"].items():
        err_kind[key.split(":", 1)[0]] += n
    unexplained = sum(n for k, n in h["errors"].items() if "64 KiB" not in k)
    for kind in sorted(by_kind):
        c = by_kind[kind]
        print(f"| {kind} | {sum(c.values()):,} | "
              + ", ".join(f"{k}: {v:,}" for k, v in sorted(c.items())) + f" | {err_kind[kind]} |")
    print(f"\nstatus codes: {dict(sorted(codes.items()))}")
    print(f"5xx: {five}; connection errors: {errors} (each re-sent once on a new connection; "
          f"{unexplained} not after an unread body > 64 KiB) {dict(h['errors'])}")
    print(f"answers outside the expected set: {len(h['unexpected'])}")
    for line in h["unexpected"][:5] + h["five"][:5]:
        print("   ", line)
    print(f"valid baseline: before {vb['rate']:,.0f}/s {vb['codes']}, "
          f"after {va['rate']:,.0f}/s {va['codes']}")
    print(f"hostile / valid rate: {rate / vb['rate']:.2f}")
    print(f"worker PIDs before {pids0}, after {pids1}; master alive: {res['master_alive']}")
    factor = res["rss_during_max"] / res["rss_start"]
    print(f"RSS master + workers: start {res['rss_start']:.1f} MiB, peak during "
          f"{res['rss_during_max']:.1f} MiB ({res['rss_samples']} samples), end "
          f"{res['rss_end']:.1f} MiB; peak/start {factor:.2f} (bound {RSS_FACTOR})")
    r = res["replay"]
    print(f"journal: {r['notifications']:,} notifications ({res['journal_mib']:.1f} MiB); "
          f"intake replay in {r['seconds']:.1f} s: outcomes {r['outcomes']}")
    print(f"migrations: {r['migrations']} ({r['control_migrations']} from the positive "
          f"control, answered {res['control_status']}; {r['hostile_migrations']} from hostile "
          f"input), components {r['components']}")
    print(f"canary directory created (a shell ran a payload): {res['canary_exists']}")
    print(f"gunicorn log: {res['log_tracebacks']} tracebacks, "
          f"{res['log_worker_timeouts']} worker timeouts")
    checks = {
        f">= {res['payloads']:,} requests sent": h["sent"] >= res["payloads"],
        "0 5xx": five == 0,
        "every request answered (a closed keep-alive connection re-sent once)":
            sum(codes.values()) == h["sent"],
        "no connection error but gunicorn's close after an unread body": unexplained == 0,
        "every answer in the expected set": not h["unexpected"],
        "0 crashes (same worker PIDs, master alive)": pids0 == pids1 and res["master_alive"],
        "0 migrations from hostile input": r["hostile_migrations"] == 0,
        "positive control: 1 migration for web": r["control_migrations"] == 1
        and res["control_status"] == 202,
        f"memory bounded (peak <= {RSS_FACTOR} x start)": factor <= RSS_FACTOR,
        "no canary file (no shell)": not res["canary_exists"],
        "no traceback in the log": res["log_tracebacks"] == 0,
        "valid traffic unaffected (all 202)": set(vb["codes"]) == {202}
        and set(va["codes"]) == {202},
    }
    print()
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


if __name__ == "__main__":
    sys.exit(main())
