"""Benchmark the forecast stage of one refresh: Forecaster vs a full AutoETS refit every refresh.

Run from the repository root (about 2 minutes on 2 cores; each size runs in its own process so
its peak RSS is its own)::

    .venv/bin/python bench/bench_forecast.py                      # 100, 1,000, 10,000 components
    .venv/bin/python bench/bench_forecast.py --components 100     # a quick look

Workload per component: 2 signals (one with an upper limit, one with a lower), 288 points each,
horizon 60 steps, bands at 80 and 95 %. Every refresh appends one new point to every series (at
a 60 s step and a 15 s refresh only one refresh in four brings points), then calls
``Forecaster.update``. The timed refreshes run with ``refit_after=0``, so every one of them spends
its whole fit budget (``min(budget, series)`` AutoETS fits): the worst refresh the budget allows.
The steady state (every series refitted once per ``--refit-after``, default 1 h, at a 15 s refresh)
is derived from the measured parts: update+forecast + series·15/refit_after fits.

The synthetic series follow the team's forecasting-costs note: level + drift (30 % of series)
+ a 2-harmonic cycle of 24 points + AR(1) noise + 0.5 % positive spikes.

The naive way is ``StatsForecast([AutoETS(model="AZN")], n_jobs=2).forecast(df, h=60,
level=[80, 95])`` over every series on every refresh, in the same process on the same data.
Above ``--naive-max-series`` series it runs on that many and is extrapolated linearly (labelled).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEP = 300.0  # 5-minute resolution, as in notes/forecasting-costs.md
POINTS = 288
HORIZON = 60
LEVELS = (80.0, 95.0)


def rss_mib() -> tuple[float, float]:
    """(current, peak since the last reset) resident set size of this process, MiB."""
    cur = peak = math.nan
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def reset_peak() -> None:
    """Reset VmHWM so the next peak belongs to the phase being measured (Linux only)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak includes earlier phases; ru_maxrss is reported as well


class Synth:
    """Vectorised generator: every series advances one point per call, all at once."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = self.rng = np.random.default_rng(seed)
        self.level = rng.uniform(20, 80, n)
        self.drift = np.where(rng.random(n) < 0.3, rng.normal(0, 0.02, n), 0.0)
        self.amp = rng.uniform(0, 3, n)
        self.phase = rng.uniform(0, 2 * np.pi, n)
        self.noise = rng.uniform(0.2, 2.0, n)
        self.ar = np.zeros(n)
        self.t = 0

    def next(self) -> np.ndarray:
        rng, n = self.rng, self.level.size
        w = 2 * np.pi * self.t / 24 + self.phase
        self.ar = 0.6 * self.ar + rng.normal(0, 1, n) * self.noise
        spike = (rng.random(n) < 0.005) * 5 * self.noise
        self.t += 1
        return self.level + self.drift * self.t + self.amp * (np.sin(w) + 0.5 * np.sin(2 * w)) \
            + self.ar + spike

    def history(self, length: int) -> np.ndarray:
        out = np.empty((self.level.size, length))
        for j in range(length):
            out[:, j] = self.next()
        return out


def shift_in(window: np.ndarray, new: np.ndarray, chunk: int = 2048) -> None:
    """Drop the oldest column and append ``new``, in row chunks (a whole-array overlapping
    assignment would make numpy copy the full window first)."""
    for s in range(0, window.shape[0], chunk):
        window[s : s + chunk, :-1] = window[s : s + chunk, 1:]
    window[:, -1] = new


def naive_refresh(window: np.ndarray, limits: np.ndarray, above: np.ndarray) -> float:
    """Full StatsForecast AutoETS refit + forecast of every row of ``window``; seconds."""
    import pandas as pd
    from scipy.special import ndtr, ndtri
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    t0 = time.perf_counter()
    n, length = window.shape
    df = pd.DataFrame(
        {
            "unique_id": np.repeat(np.arange(n), length),
            "ds": np.tile(np.arange(length), n),
            "y": window.ravel(),
        }
    )
    sf = StatsForecast(models=[AutoETS(model="AZN", damped=None)], freq=1, n_jobs=2)
    fc = sf.forecast(df=df, h=HORIZON, level=[int(lv) for lv in LEVELS])
    # The naive probability: per-step tails from the 95 % band, max over the horizon.
    mean = fc["AutoETS"].to_numpy().reshape(n, HORIZON)
    sd = (fc["AutoETS-hi-95"].to_numpy().reshape(n, HORIZON) - mean) / ndtri(0.975)
    sign = np.where(above, 1.0, -1.0)[:, None]
    _ = ndtr(sign * (mean - limits[:, None]) / sd).max(axis=1)
    return time.perf_counter() - t0


def run_one(
    components: int, refreshes: int, budget: int, naive_max: int, naive_runs: int,
    refresh_interval: float, refit_after: float,
) -> dict:
    from preshift.score import Forecaster, SeriesBatch
    from preshift.score.ets_fit import ets_module

    ets_module()  # load statsforecast's ETS before the clock starts, as the fit worker does

    rss_import, _ = rss_mib()
    n = 2 * components
    synth = Synth(n)
    window = synth.history(POINTS)
    keys = [(("cpu", "mem_free")[i % 2], f"c{i // 2}") for i in range(n)]
    above = np.arange(n) % 2 == 0  # signal 0 breaches above its limit, signal 1 below
    gap = synth.rng.uniform(2, 10, n) * synth.noise
    limits = np.where(above, window[:, -1] + gap, window[:, -1] - gap)
    indptr = np.arange(n + 1, dtype=np.int64) * POINTS
    end = np.full(n, 1.7e9)
    rss_data, _ = rss_mib()

    fc = Forecaster(
        step=STEP, horizon_steps=HORIZON, levels=LEVELS, fit_budget_per_refresh=budget,
        refit_after=0.0,  # worst case: every refresh spends its whole budget
    )
    reset_peak()
    times, stats = [], []
    for r in range(refreshes + 1):
        if r:
            shift_in(window, synth.next())
            end = end + STEP
        batch = SeriesBatch(keys, window.reshape(-1), indptr, end)
        t0 = time.perf_counter()
        res = fc.update(batch, limits, above)
        times.append(time.perf_counter() - t0)
        stats.append(res.stats)
    _, rss_peak = rss_mib()
    steady = stats[1:]
    fits = sum(s.fitted for s in steady)
    fit_ms = 1000 * sum(s.seconds_fit for s in steady) / fits if fits else math.nan
    update_forecast = statistics.median(s.seconds_update + s.seconds_forecast for s in steady)
    steady_fits = min(budget, n * refresh_interval / refit_after)
    out = {
        "components": components,
        "series": n,
        "refreshes": refreshes,
        "budget": budget,
        "first_s": times[0],
        "median_s": statistics.median(times[1:]),
        "max_s": max(times[1:]),
        "median_update_forecast_s": update_forecast,
        "fits_per_refresh": fits / len(steady),
        "fit_ms_per_series": fit_ms,
        "steady_fits_per_refresh": steady_fits,
        "steady_s": update_forecast + steady_fits * fit_ms / 1000,
        "refreshes_to_fit_all": math.ceil(n / budget) if budget else None,
        "rss_after_import_mib": rss_import,
        "rss_after_data_mib": rss_data,
        "rss_peak_refresh_mib": rss_peak,
        "p_breach_mean": float(np.nanmean(res.p_breach)),
    }

    subset = min(n, naive_max)
    reset_peak()
    naive = [naive_refresh(window[:subset], limits[:subset], above[:subset])
             for _ in range(naive_runs)]
    _, rss_naive = rss_mib()
    out.update(
        naive_series=subset,
        naive_measured_s=statistics.median(naive),
        naive_s=statistics.median(naive) * n / subset,
        naive_extrapolated=subset < n,
        rss_peak_naive_parent_mib=rss_naive,
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    out["speedup"] = out["naive_s"] / out["median_s"]
    out["speedup_steady"] = out["naive_s"] / out["steady_s"]
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| components | series | first refresh (s) | fits per refresh | median refresh, "
        "budget spent (s) | update+forecast only (s) | fit (ms/series) | steady refresh, "
        "derived (s) | peak RSS (MiB) | naive refit every refresh (s) | speed-up: worst / steady |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        naive = f"{r['naive_s']:.1f}"
        if r["naive_extrapolated"]:
            naive += (f" (extrapolated from {r['naive_series']:,} series: "
                      f"{r['naive_measured_s']:.1f} s)")
        lines.append(
            f"| {r['components']:,} | {r['series']:,} | {r['first_s']:.2f} "
            f"| {r['fits_per_refresh']:.0f} | {r['median_s']:.2f} "
            f"| {r['median_update_forecast_s']:.3f} | {r['fit_ms_per_series']:.1f} "
            f"| {r['steady_s']:.2f} ({r['steady_fits_per_refresh']:.0f} fits) "
            f"| {r['rss_peak_refresh_mib']:.0f} | {naive} "
            f"| {r['speedup']:.0f}x / {r['speedup_steady']:.0f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--components", default="100,1000,10000", help="comma-separated sizes")
    ap.add_argument("--refreshes", type=int, default=7, help="timed refreshes after the first")
    ap.add_argument("--budget", type=int, default=400, help="fit budget per refresh")
    ap.add_argument("--naive-max-series", type=int, default=2000)
    ap.add_argument("--naive-runs", type=int, default=1)
    ap.add_argument("--refresh-interval", type=float, default=15.0, help="seconds, for steady")
    ap.add_argument("--refit-after", type=float, default=3600.0, help="seconds, for steady")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = ap.parse_args()
    if args.one is not None:
        row = run_one(args.one, args.refreshes, args.budget, args.naive_max_series,
                      args.naive_runs, args.refresh_interval, args.refit_after)
        print(json.dumps(row))
        return
    rows = []
    for comp in (int(c) for c in args.components.split(",")):
        cmd = [sys.executable, __file__, "--one", str(comp), "--refreshes", str(args.refreshes),
               "--budget", str(args.budget), "--naive-max-series", str(args.naive_max_series),
               "--naive-runs", str(args.naive_runs), "--refresh-interval",
               str(args.refresh_interval), "--refit-after", str(args.refit_after)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{comp:,} components done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(table(rows))
    for r in rows:
        print(f"\n{r['components']:,} components: RSS after imports {r['rss_after_import_mib']:.0f}"
              f" MiB, after data {r['rss_after_data_mib']:.0f} MiB, peak in refreshes "
              f"{r['rss_peak_refresh_mib']:.0f} MiB, peak during the naive refit (parent only) "
              f"{r['rss_peak_naive_parent_mib']:.0f} MiB; worst refresh {r['max_s']:.2f} s; "
              f"from a cold start all series are fitted after {r['refreshes_to_fit_all']} "
              f"refreshes; "
              f"mean P(breach) {r['p_breach_mean']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
