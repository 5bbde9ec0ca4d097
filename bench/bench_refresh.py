"""Benchmark the exporter's whole refresh: time, memory, /metrics latency, and the naive way.

Run from the repository root (about 2.5 minutes on 2 cores; figures in docs/benchmarks.md)::

    .venv/bin/python bench/bench_refresh.py                      # 100, 1,000, 10,000 components
    .venv/bin/python bench/bench_refresh.py --quick      # smoke run: 50 and 300 components, ~20 s

What runs: the whole exporter in-process over fake sources (``exporter.synthetic``: the real
``SignalHistory``, refresh loop, assess stage, collector, exposition and WSGI app over
``SyntheticPrometheus`` and fake inventory/failure sources), with its ETS fits in the child
process ``python -m exporter.fitworker`` as ``preshift exporter`` runs them. Per component: one
replica, two component-scoped signals, 288 points of history at a 60 s step; 20 nodes with one
node-scoped signal each (one hot node, so the plan has entries); horizon 60 steps, bands at 80
and 95 %; the Assessor's defaults otherwise (400 fits per refresh at most, within 4.5 s).

Per size, in a child process of its own (so its peak RSS is its own):

1. the first refresh (the whole history is fetched; the fit worker starts), then ``--refreshes``
   refreshes back to back, the world's clock advancing one step (60 s) before each, so every
   series gets one new point every refresh (pessimistic: at a 15 s refresh and a 60 s step only
   one refresh in four brings points). Wall time of ``RefreshLoop.refresh_once()``, which
   includes rendering the exposition and the JSON.
2. at the scrape size (default: the largest), the in-process ``ExporterServer`` on 127.0.0.1,
   and a separate client process scraping ``/metrics`` (gzip, Prometheus's Accept header) every
   ``--scrape-interval`` for ``--scrape-seconds`` (at most ``--scrape-max`` requests) while
   refreshes run back to back; latency = request sent to the whole body received.
3. peak RSS (VmHWM) of the exporter process and of the fit worker, read from /proc.

Then, in another child process (statsforecast's import must not count in the exporter's
memory), the naive way on the same data (the windows of the first refresh):
``StatsForecast([AutoETS(model="AZN")], n_jobs=2).forecast(df, h=60, level=[80, 95])`` plus
per-step breach probabilities, a full refit of every series as every refresh would need. Above
``--naive-max-series`` series it runs on that many and is extrapolated linearly (labelled). It
counts only the fits and forecasts, not the rest of a refresh: the ratio is a lower bound.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEP = 60.0
NODES = 20
POINTS = 288
HORIZON_STEPS = 60
LEVELS = (80, 95)
TARGET_SIZE = 10_000
TARGET_REFRESH_S = 10.0
TARGET_RSS_MIB = 300.0
TARGET_P99_MS = 50.0
# What Prometheus 2.x/3.x sends (text/plain is accepted, so the exporter's fast path answers).
PROM_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
               "application/openmetrics-text;version=0.0.1;q=0.4,"
               "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


# -- helpers ---------------------------------------------------------------------------------

def proc_mem(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB (NaN when it is gone)."""
    out = {"rss": math.nan, "hwm": math.nan}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["hwm"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def reset_peak() -> bool:
    """Reset this process's VmHWM (Linux), so the next peak belongs to the next phase."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the exporter (child process, one size) --------------------------------------------------

def make_world(components: int):
    from exporter.synthetic import synthetic_world

    world = synthetic_world(components=components, nodes=NODES, points=POINTS, step=STEP)
    # synthetic_world keeps the default horizon (30 min = 30 steps); the benchmark's is 60.
    world.config = world.config.model_copy(update={"horizon": HORIZON_STEPS * STEP})
    return world


def run_exporter(args: argparse.Namespace) -> dict:
    # As `preshift exporter` does before serving (exporter/cli.py): 1 ms GIL switch interval.
    sys.setswitchinterval(0.001)
    from exporter.fitworker import ProcessFitter
    from exporter.server import ExporterServer

    components = args.exporter
    out: dict = {"components": components, "load_start": loadavg()}
    mem0 = proc_mem()
    t0 = time.perf_counter()
    world = make_world(components)
    fitter = ProcessFitter()
    try:
        service = world.service(fitter=fitter)
        out["world_build_s"] = time.perf_counter() - t0
        out["rss_before_mib"] = mem0["rss"]
        loop = service.loop
        assert loop._assessor.forecaster.horizon_steps == HORIZON_STEPS

        def one() -> dict:
            t = time.perf_counter()
            snap = loop.refresh_once()
            wall = time.perf_counter() - t
            world.clock.now += STEP
            a = snap.assessment
            st = a.forecast_stats if a is not None else None
            return {
                "wall": wall,
                "stages": {k: o.duration for k, o in snap.stages.items()},
                "stale": sorted(k for k, o in snap.stages.items() if o.stale),
                "series": st.series if st else 0,
                "new_points": st.new_points if st else 0,
                "fitted": st.fitted if st else 0,
                "fit_failed": st.fit_failed if st else 0,
                "fit_s": st.seconds_fit if st else 0.0,
                "backlog": st.fit_backlog if st else 0,
                "plan_entries": len(a.plan.entries) if a is not None else 0,
                "rss": proc_mem()["rss"],
            }

        first = one()
        out["first"] = first
        out["hwm_first_mib"] = proc_mem()["hwm"]
        out["peak_reset"] = reset_peak()
        steady = [one() for _ in range(args.refreshes)]
        out["hwm_steady_mib"] = proc_mem()["hwm"]
        out["steady"] = steady
        log(f"{components:,} components: first {first['wall']:.2f} s, steady median "
            f"{statistics.median(r['wall'] for r in steady):.2f} s")

        if args.scrape_seconds > 0:
            out["scrape"] = scrape_phase(args, service.app, one, ExporterServer)
            out["hwm_scrape_mib"] = proc_mem()["hwm"]
        expo = service.collector.exposition()
        out["exposition_bytes"], out["exposition_gzip_bytes"] = expo.size, len(expo.gzipped)
        out["rss_end_mib"] = proc_mem()["rss"]
        wpid = fitter.pid
        wmem = proc_mem(wpid) if wpid is not None else {"rss": math.nan, "hwm": math.nan}
        out["worker_pid"], out["worker_rss_mib"], out["worker_hwm_mib"] = (
            wpid, wmem["rss"], wmem["hwm"])
        out["statsforecast_in_exporter"] = "statsforecast" in sys.modules
        out["fits_total"] = dict(loop.current().assessment.fits)  # type: ignore[union-attr]
    finally:
        fitter.close()
    out["load_end"] = loadavg()
    return out


def scrape_phase(args: argparse.Namespace, app, one, server_cls) -> dict:
    """Serve `app` on 127.0.0.1, start the scraper process, refresh back to back meanwhile."""
    server = server_cls(app, "127.0.0.1", 0)
    server.start()
    scraper = None
    # The scraper's answer (~70 KB of JSON for 1,200 scrapes) goes to a file: through a pipe
    # nobody reads until it exits, it would block once the pipe's 64 KiB are full, and the
    # refreshes would go on until the deadline below (they did: 2 minutes instead of 1).
    with tempfile.TemporaryFile("w+") as out_file:
        try:
            host, port = server.address
            cmd = [sys.executable, __file__, "--scraper", f"{host}:{port}",
                   "--scrape-seconds", str(args.scrape_seconds), "--scrape-max",
                   str(args.scrape_max), "--scrape-interval", str(args.scrape_interval)]
            scraper = subprocess.Popen(cmd, stdout=out_file, text=True)
            refreshes: list[tuple[float, float, dict[str, float]]] = []
            walls: list[float] = []
            deadline = time.monotonic() + args.scrape_seconds + 60
            while scraper.poll() is None and time.monotonic() < deadline:
                t0 = time.monotonic()
                r = one()
                walls.append(r["wall"])
                refreshes.append((t0, time.monotonic(), r["stages"]))
            scraper.wait(timeout=60)
            out_file.seek(0)
            res = json.loads(out_file.read().strip().splitlines()[-1])
        finally:
            if scraper is not None and scraper.poll() is None:
                scraper.kill()
                scraper.wait()
            server.stop()
    samples = res.pop("samples")  # (start monotonic, latency s, status, bytes)

    def part(t: float) -> str | None:
        """The part of the refresh running at `t` (stage durations laid end to end; the
        few ms of malloc_trim between them are not placed), None between refreshes."""
        for a, b, stages in refreshes:
            if a <= t < b:
                edge = a
                for name, label in (("inventory", "inventory+signals"),
                                    ("signals", "inventory+signals"),
                                    ("failures", "failures"), ("assess", "assess")):
                    edge += stages.get(name, 0.0)
                    if t < edge:
                        return label
                return "rest (snapshot, JSON, exposition)"
        return None

    ok = [s for s in samples if s[2] == 200]
    lat_all = [1000 * s[1] for s in ok]
    where = [(part(s[0]), 1000 * s[1]) for s in ok]
    lat_during = [lat for p, lat in where if p is not None]
    by_part = {}
    for name in ("inventory+signals", "failures", "assess", "rest (snapshot, JSON, exposition)"):
        lats = [lat for p, lat in where if p == name]
        if not lats:
            continue
        by_part[name] = {"count": len(lats), "p50_ms": pct(lats, 50), "p99_ms": pct(lats, 99),
                         "max_ms": max(lats), "over_target": sum(x > TARGET_P99_MS for x in lats)}
    busy = sum(b - a for a, b, _ in refreshes)
    span = refreshes[-1][1] - refreshes[0][0] if refreshes else math.nan
    return {
        **res,
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "during_count": len(lat_during),
        "during_p50_ms": pct(lat_during, 50), "during_p90_ms": pct(lat_during, 90),
        "during_p99_ms": pct(lat_during, 99),
        "during_max_ms": max(lat_during) if lat_during else math.nan,
        "all_p50_ms": pct(lat_all, 50), "all_p99_ms": pct(lat_all, 99),
        "all_max_ms": max(lat_all) if lat_all else math.nan,
        "by_part": by_part,
        "refreshes": len(walls),
        "refresh_median_s": statistics.median(walls) if walls else math.nan,
        "refresh_busy_share": busy / span if span else math.nan,
        "body_gzip_bytes": statistics.median(s[3] for s in ok) if ok else math.nan,
    }


# -- the scraper (child of the exporter child) -----------------------------------------------

def run_scraper(args: argparse.Namespace) -> dict:
    host, port = args.scraper.rsplit(":", 1)
    samples, bodies = [], []
    end = time.monotonic() + args.scrape_seconds
    nxt = time.monotonic()
    while len(samples) < args.scrape_max and time.monotonic() < end:
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/metrics", headers={
                "Accept": PROM_ACCEPT, "Accept-Encoding": "gzip",
                "User-Agent": "bench_refresh"})
            resp = conn.getresponse()
            body, status = resp.read(), resp.status
        except OSError:
            body, status = b"", -1
        finally:
            conn.close()
        t1 = time.monotonic()
        samples.append((t0, t1 - t0, status, len(body)))
        if status == 200 and (not bodies or len(bodies) == 1):
            bodies[1:] = [body]  # keep the first and the latest, checked after the clock stops
        nxt = max(nxt + args.scrape_interval, t1)  # no catch-up bursts after a slow answer
    checks = []
    for b in bodies[:1] + bodies[-1:]:
        text = gzip.decompress(b)
        checks.append({"bytes": len(text),
                       "hps_samples": text.count(b"\npreshift_health_projection_score{")})
    return {"samples": samples, "checks": checks}


# -- the naive way (child process, one size) -------------------------------------------------

def run_naive(args: argparse.Namespace) -> dict:
    import numpy as np

    from exporter.synthetic import SIGNALS, T0

    components = args.naive
    world = make_world(components)
    prom = world.prometheus
    start = T0 - world.config.prometheus.history
    # The series the exporter forecasts: 2 per component, then 1 per node.
    n_total = 2 * components + NODES
    k = min(components, args.naive_max_series // 2) if n_total > args.naive_max_series \
        else components
    rows, limits = [], []
    for sig in SIGNALS:
        got = prom.query_range(sig["query"], start, T0, STEP)
        if sig["scope"] == "component":
            got = got[:k]
        elif k < components:
            got = []  # a subset: component series only
        rows += [s.values for s in got]
        limits += [sig["limit"]] * len(got)
    window = np.vstack(rows)
    n = window.shape[0]
    assert window.shape[1] == POINTS, window.shape
    mem0 = proc_mem()
    t_import = time.perf_counter()
    import pandas as pd
    from scipy.special import ndtr, ndtri
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS
    import_s = time.perf_counter() - t_import
    times = []
    for _ in range(args.naive_runs):
        t0 = time.perf_counter()
        df = pd.DataFrame({
            "unique_id": np.repeat(np.arange(n), POINTS),
            "ds": np.tile(np.arange(POINTS), n),
            "y": window.ravel(),
        })
        sf = StatsForecast(models=[AutoETS(model="AZN", damped=None)], freq=1, n_jobs=2)
        fc = sf.forecast(df=df, h=HORIZON_STEPS, level=list(LEVELS))
        mean = fc["AutoETS"].to_numpy().reshape(n, HORIZON_STEPS)
        sd = (fc["AutoETS-hi-95"].to_numpy().reshape(n, HORIZON_STEPS) - mean) / ndtri(0.975)
        _ = ndtr((mean - np.asarray(limits)[:, None]) / sd).max(axis=1)  # all limits above
        times.append(time.perf_counter() - t0)
    measured = statistics.median(times)
    return {
        "components": components, "series_total": n_total, "series_measured": n,
        "extrapolated": n < n_total, "runs": times, "measured_s": measured,
        "naive_s": measured * n_total / n, "import_s": import_s,
        "rss_before_import_mib": mem0["rss"], "hwm_parent_mib": proc_mem()["hwm"],
    }


# -- the orchestrator ------------------------------------------------------------------------

def child(argv: list[str], timeout: float) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], stdout=subprocess.PIPE,
                          text=True, timeout=timeout, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    mem = math.nan
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    try:
        sfv = metadata.version("statsforecast")
    except metadata.PackageNotFoundError:
        sfv = "not installed"
    return {"nproc": os.cpu_count(), "ram_gib": mem, "python": platform.python_version(),
            "statsforecast": sfv, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load": loadavg()}


def fmt_size(n: int) -> str:
    return f"{n:,}"


def report(rows: list[dict], m: dict, args: argparse.Namespace) -> str:
    out = [
        f"machine: {m['nproc']} CPUs, {m['ram_gib']:.1f} GiB RAM, Python {m['python']}, "
        f"statsforecast {m['statsforecast']}; {m['date']}; load average at start {m['load']}",
        f"workload: components x 2 signals + {NODES} node series, {POINTS} points at "
        f"{STEP:g} s, horizon {HORIZON_STEPS} steps, bands {LEVELS[0]}/{LEVELS[1]} %, "
        f"{args.refreshes} timed refreshes after the first, one new point per series each",
        "",
        "| components | series | first refresh (s) | median refresh (s) [min-max] | fits per "
        "refresh | exporter peak RSS (MiB) | fit worker peak RSS (MiB) | sum (MiB) "
        "| naive refit per refresh (s) | naive / ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, nv = r["exporter"], r["naive"]
        walls = [s["wall"] for s in e["steady"]]
        med = statistics.median(walls)
        fits = statistics.mean(s["fitted"] for s in e["steady"])
        peak = max(e["hwm_first_mib"], e["hwm_steady_mib"], e.get("hwm_scrape_mib", 0))
        naive = f"{nv['naive_s']:.1f}"
        if nv["extrapolated"]:
            naive += (f" (**extrapolated** x{nv['series_total'] / nv['series_measured']:.1f} "
                      f"from {nv['series_measured']:,} series: {nv['measured_s']:.1f} s)")
        out.append(
            f"| {fmt_size(e['components'])} | {e['first']['series']:,} | {e['first']['wall']:.2f} "
            f"| {med:.2f} [{min(walls):.2f}-{max(walls):.2f}] | {fits:.0f} "
            f"| {peak:.0f} | {e['worker_hwm_mib']:.0f} | {peak + e['worker_hwm_mib']:.0f} "
            f"| {naive} | {nv['naive_s'] / med:.0f}x |")
    out.append("")
    for r in rows:
        e, nv = r["exporter"], r["naive"]
        st = e["steady"]
        stages = {k: statistics.median(s["stages"][k] for s in st) for k in st[0]["stages"]}
        render = statistics.median(s["wall"] - sum(s["stages"].values()) for s in st)
        stale = sorted({k for s in [e["first"], *st] for k in s["stale"]})
        out.append(
            f"{fmt_size(e['components'])} components: steady medians: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
            + f", rest (snapshot, JSON, exposition) {render:.2f} s; fitting "
            f"{statistics.median(s['fit_s'] for s in st):.2f} s for "
            f"{statistics.median(s['fitted'] for s in st):.0f} fits, backlog after the last "
            f"{st[-1]['backlog']:,}; first refresh: {e['first']['fitted']} fits in "
            f"{e['first']['fit_s']:.2f} s; exporter RSS before the world "
            f"{e['rss_before_mib']:.0f}, between refreshes "
            f"{statistics.median(s['rss'] for s in st):.0f}, peak in the first refresh "
            f"{e['hwm_first_mib']:.0f}, peak in steady refreshes {e['hwm_steady_mib']:.0f} MiB; "
            f"fit worker RSS at the end {e['worker_rss_mib']:.0f} MiB; plan entries "
            f"{st[-1]['plan_entries']}; exposition {e['exposition_bytes'] / 1e6:.1f} MB "
            f"({e['exposition_gzip_bytes'] / 1e6:.2f} MB gzip); stale stages: "
            f"{', '.join(stale) or 'none'}; statsforecast imported by the exporter: "
            f"{e['statsforecast_in_exporter']}; naive: statsforecast import "
            f"{nv['import_s']:.1f} s, parent peak RSS {nv['hwm_parent_mib']:.0f} MiB (+ its 2 "
            f"pool workers); load average {e['load_start']} -> {e['load_end']}")
    scraped = [r for r in rows if "scrape" in r["exporter"]]
    if scraped:
        out += ["", "/metrics scraped by a separate process every "
                f"{1000 * args.scrape_interval:.0f} ms for {args.scrape_seconds:g} s "
                f"(at most {args.scrape_max} requests) while refreshes ran back to back:", "",
                "| components | scrapes (during a refresh) | p50 (ms) | p90 (ms) | p99 (ms) "
                "| max (ms) | all scrapes p50 / p99 / max (ms) | errors | refreshes "
                "(median s) | body gzip / text (MB) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in scraped:
            s = r["exporter"]["scrape"]
            text = s["checks"][-1]["bytes"] / 1e6 if s["checks"] else math.nan
            out.append(
                f"| {fmt_size(r['exporter']['components'])} | {s['requests']} "
                f"({s['during_count']}) | {s['during_p50_ms']:.1f} | {s['during_p90_ms']:.1f} "
                f"| {s['during_p99_ms']:.1f} | {s['during_max_ms']:.1f} "
                f"| {s['all_p50_ms']:.1f} / {s['all_p99_ms']:.1f} / {s['all_max_ms']:.1f} "
                f"| {s['errors']} | {s['refreshes']} ({s['refresh_median_s']:.2f}) "
                f"| {s['body_gzip_bytes'] / 1e6:.2f} / {text:.1f} |")
        for r in scraped:
            s = r["exporter"]["scrape"]
            out += ["", f"{fmt_size(r['exporter']['components'])} components, scrapes by the "
                    "part of the refresh running when they were sent:", "",
                    "| part | scrapes | p50 (ms) | p99 (ms) | max (ms) "
                    f"| over {TARGET_P99_MS:g} ms |",
                    "|---|---|---|---|---|---|"]
            for name, b in s["by_part"].items():
                out.append(f"| {name} | {b['count']} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} "
                           f"| {b['max_ms']:.1f} | {b['over_target']} |")
    out += ["", *targets(rows)]
    return "\n".join(out)


def targets(rows: list[dict]) -> list[str]:
    at = [r for r in rows if r["exporter"]["components"] == TARGET_SIZE]
    head = f"targets at {TARGET_SIZE:,} components on {os.cpu_count()} CPUs:"
    if not at:
        return [head, f"  not measured: run with {TARGET_SIZE:,} among --sizes"]
    e = at[0]["exporter"]
    lines = [head]

    def verdict(name: str, value: float, limit: float, unit: str, note: str = "") -> None:
        ok = value <= limit
        miss = "" if ok else f" (missed by {value - limit:.1f} {unit}, {value / limit - 1:+.0%})"
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {name}: {value:.1f} {unit} <= {limit:g} "
                     f"{unit}{miss}{note}")

    walls = [s["wall"] for s in e["steady"]]
    verdict("median refresh", statistics.median(walls), TARGET_REFRESH_S, "s")
    verdict("slowest refresh (first included)", max([e["first"]["wall"], *walls]),
            TARGET_REFRESH_S, "s")
    peak = max(e["hwm_first_mib"], e["hwm_steady_mib"], e.get("hwm_scrape_mib", 0))
    verdict("exporter process peak RSS", peak, TARGET_RSS_MIB, "MiB")
    verdict("exporter + fit worker peak RSS (sum of the two peaks)",
            peak + e["worker_hwm_mib"], TARGET_RSS_MIB, "MiB",
            "  [stricter reading: the target names the exporter; the worker is a child]")
    if "scrape" in e:
        s = e["scrape"]
        verdict(f"/metrics p99 during a refresh ({s['during_count']} scrapes)",
                s["during_p99_ms"], TARGET_P99_MS, "ms")
    else:
        lines.append("  /metrics latency: not measured (--scrape-seconds 0 or another size)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="components, comma-separated")
    ap.add_argument("--refreshes", type=int, default=8, help="timed refreshes after the first")
    ap.add_argument("--scrape-seconds", type=float, default=60.0)
    ap.add_argument("--scrape-interval", type=float, default=0.05)
    ap.add_argument("--scrape-max", type=int, default=1500, help="requests at most")
    ap.add_argument("--scrape-size", type=int, help="components (default: the largest size)")
    ap.add_argument("--naive-max-series", type=int, default=2000)
    ap.add_argument("--naive-runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: sizes 50,300, 3 refreshes, 5 s of scrapes, naive <= 200")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--timeout", type=float, default=900.0, help="per child process, s")
    # internal modes
    ap.add_argument("--exporter", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--naive", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--scraper", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.refreshes, args.scrape_seconds = "50,300", 3, 5.0
        args.naive_max_series = 200
    if args.scraper:
        print(json.dumps(run_scraper(args)))
        return
    if args.exporter is not None:
        print(json.dumps(run_exporter(args)))
        return
    if args.naive is not None:
        print(json.dumps(run_naive(args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    scrape_size = args.scrape_size or max(sizes)
    m = machine()
    rows = []
    started = time.perf_counter()
    for size in sizes:
        common = ["--refreshes", str(args.refreshes), "--scrape-interval",
                  str(args.scrape_interval), "--scrape-max", str(args.scrape_max)]
        scrape = args.scrape_seconds if size == scrape_size else 0.0
        log(f"{size:,} components: exporter")
        e = child(["--exporter", str(size), "--scrape-seconds", str(scrape), *common],
                  args.timeout)
        log(f"{size:,} components: naive")
        nv = child(["--naive", str(size), "--naive-max-series", str(args.naive_max_series),
                    "--naive-runs", str(args.naive_runs)], args.timeout)
        rows.append({"exporter": e, "naive": nv})
    log(f"done in {time.perf_counter() - started:.0f} s")
    m["load_end"] = loadavg()
    text = report(rows, m, args)
    print(text)
    print(f"\nload average at the end: {m['load_end']}; wall time "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        with contextlib.suppress(OSError):
            args.json.write_text(json.dumps({"machine": m, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
