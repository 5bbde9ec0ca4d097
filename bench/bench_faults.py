"""Benchmark of faults during a migration: the larger matrix behind tests/integration/
test_faults.py, with figures.

Brings up the fault testbed (prefix "rf", 3 Docker engines on 198.18.18.0/24, Prometheus on
127.0.0.1:20420, HAProxy frontend 127.0.0.1:20424; harness: tests/integration/faults.py):
web-n1 and web-n2 behind HAProxy under a bounded load (≤ 40 requests/s, a new connection
each), and the real executor moving web-n2 to n3.

Matrices (each case reset, then run under load to a terminal phase; checked like the test):
- kill: the executor (a child process) SIGKILLs itself before and after EVERY side effect
  call of the move (k = 1, 2, ... until a run finishes without reaching k), and of the two
  ways back (canary unhealthy while shifting → rolling back; while on standby → restoring);
  a fresh executor then finishes. `--repeat N` repeats the whole kill matrix;
- engine: the target engine stopped in each phase, with HAProxy's `retries 0` and with
  production-like retries (`retry=True`): the failed requests of both, side by side;
- source: the original's engine (n2, the risky node) stopped in each forward phase (planned
  and starting before the clone → cancelled; starting after the clone and later →
  succeeded, the original removed once its engine is back), both HAProxy variants;
- the fault-free move, timed, as the baseline of the durations (ratio = case / baseline).

    sudo .venv/bin/python bench/bench_faults.py                  # every matrix
    sudo .venv/bin/python bench/bench_faults.py --only kill --repeat 3
    sudo .venv/bin/python bench/bench_faults.py --only kill-back    # the ways back only
    sudo .venv/bin/python bench/bench_faults.py --only engine --json /tmp/faults.json
    sudo .venv/bin/python bench/bench_faults.py --only source

Prints one line per case and Markdown tables; exit status 1 if any case did not converge
to its expected phase or left something behind. Everything is torn down at the end, also
after an error; processes are stopped by their PID only. Traffic goes only to 127.0.0.1
and the testbed's own addresses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preshift.act.phases import Phase  # noqa: E402
from preshift.testbed import Testbed  # noqa: E402
from tests.integration.faults import (  # noqa: E402
    BACK,
    FORWARD,
    SABOTAGE_IN,
    SPEC,
    Bed,
    Case,
    Result,
    check,
    check_source,
    run_case,
    source_cases,
)

P = Phase


def run_kills(bed: Bed, way: Phase | None, repeat: int, out: list[dict[str, Any]]) -> None:
    """Kill before/after the k-th side effect, k = 1.. until the move ends before it."""
    expected = P.ROLLED_BACK if way else P.SUCCEEDED
    for rep in range(repeat):
        for when in ("before", "after"):
            k = 1
            while True:
                case = Case("kill", way or P.PLANNED, expected, when, nth=k,
                            sabotage=SABOTAGE_IN.get(way) if way else None)
                r = run_case(bed, case)
                done = record(bed, r, out, rep)
                if not r.fired or not done:
                    break  # the run finished without a k-th side effect (or failed)
                k += 1


def record(bed: Bed, r: Result, out: list[dict[str, Any]], rep: int = 0) -> bool:
    problem = ""
    try:
        check(bed, r.config, r.migration, r.case.expected)
        if r.case.fault == "source":
            check_source(r.run, r.case)
    except AssertionError as exc:
        problem = str(exc)[:300]
    row = {"case": r.case.id, "rep": rep, "phase": str(r.migration.phase),
           "expected": str(r.case.expected), "ok": not problem, "problem": problem,
           "duration": round(r.duration, 2), "requests": r.load.total,
           "failed": r.load.failures, "statuses": r.load.statuses, "fired": r.fired,
           "held": round(r.run.held, 2)}
    out.append(row)
    print(("ok   " if not problem else "FAIL ") + r.line() + (f" — {problem}" if problem
                                                          else ""), flush=True)
    return not problem


def table(rows: list[dict[str, Any]], baseline: float) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = r["case"].split("#")[0]
        groups[key].append(r)
    lines = ["| cases | runs | converged | requests | failed | median s | × baseline |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, rs in groups.items():
        med = statistics.median(r["duration"] for r in rs)
        lines.append(f"| {key} | {len(rs)} | {sum(r['ok'] for r in rs)} | "
                     f"{sum(r['requests'] for r in rs)} | {sum(r['failed'] for r in rs)} | "
                     f"{med:.1f} | {med / baseline:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("kill", "kill-back", "engine", "source"), default=None,
                    help="kill-back: only the kills on the two ways back")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the kill matrix N times")
    ap.add_argument("--json", type=Path, default=None, help="write every case's row there")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    tb = Testbed(SPEC)
    tb.up()
    try:
        bed = Bed(tb, Path(tempfile.mkdtemp(prefix="bench-faults-")))
        for node in ("n1", "n2"):
            bed.run_app(node)
        base = []
        for _ in range(2):  # each checked before the next case resets the testbed
            base.append(run_case(bed, Case("none", P.PLANNED, P.SUCCEEDED)))
            record(bed, base[-1], rows)
        baseline = statistics.median(r.duration for r in base)
        print(f"baseline (no fault): {baseline:.1f}s per move")
        t0 = time.monotonic()
        if args.only in (None, "kill", "kill-back"):
            for way in (None, *BACK) if args.only != "kill-back" else BACK:
                run_kills(bed, way, args.repeat, rows)
        if args.only in (None, "engine"):
            for retry in (False, True):
                for phase in (*FORWARD, *BACK):
                    when, kind = ("after", "effect") if phase == P.STARTING else \
                        ("before", "any")
                    record(bed, run_case(bed, Case("engine", phase, P.ROLLED_BACK, when,
                                                   kind, retry=retry)), rows)
        if args.only in (None, "source"):
            for retry in (False, True):
                for case in source_cases(retry, every_phase=True):
                    record(bed, run_case(bed, case), rows)
        print(f"\n{len(rows)} cases in {time.monotonic() - t0:.0f}s "
              f"(baseline move {baseline:.1f}s)\n")
        print(table(rows, baseline))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    finally:
        tb.down()
    bad = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} cases converged as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
