"""Faults at every migration state (issue 7), on one real plain-Docker testbed: web-n1 and
web-n2 behind a real HAProxy under a bounded load, the real executor and adapters moving
web-n2 to n3 (harness: faults.py). In every phase of the move (and of the two ways back,
reached by a canary that fails its health check), one of:

- kill -9 of the executor process (a child SIGKILLs itself after the phase's first side
  effect, or on its first call in a phase without one); a fresh executor resumes → the
  move succeeds, a way back ends rolled back;
- the target engine stopped (dockerd of n3; its containers stop with it) and started again
  once the migration has given traffic back → rolled back, no canary left on n3;
- the source engine stopped (dockerd of n2, the original's: the risky node failing) and
  started again once only the original's removal is left, or the move is terminal → planned
  or starting before the clone: cancelled; after the clone and from health_check on: the
  canary takes over, and the original (restarted by its restart policy with its engine,
  unless already on standby) is removed once its engine answers → succeeded;
- HAProxy's admin socket unreachable (HAProxy keeps serving) for a few failed calls → holds,
  then resumes; for longer than the progress deadline while shifting → rolled back;
- Prometheus stopped (SIGSTOP by PID) with an analysis query → the step holds for lack of
  data, then resumes; stopped past the progress deadline while shifting → rolled back.

After each: the expected terminal phase, no canary container anywhere (or exactly the one
on n3 after success), the original running (or decommissioned after success), HAProxy's
servers and weights as the journal says, no step left open, and 0 failed requests. The
HAProxy runs with `retries 0`, except in the engine cases (target and source): an engine
that stops kills its container with requests in flight, which only production-like retries
(`retry=True`) hide — bench/bench_faults.py measures the engine cases with `retries 0` too.

The exporter down: intake keeps the notification for later (no decision without a plan)
while a running migration finishes unaffected. Uses a closed port, not a stopped exporter
process.

Own names: prefix rf, subnet 198.18.18, ports 127.0.0.1:20420-20449.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from preshift.act.factory import make_plan_source
from preshift.act.journal import Journal
from preshift.act.phases import Phase
from preshift.act.records import Notification
from preshift.testbed import Testbed

from .faults import (
    COMPONENT,
    FORWARD,
    SPEC,
    UP_TO_SHIFT,
    Bed,
    Case,
    check,
    check_source,
    drive,
    loaded,
    run_case,
)
from .faults import cases as all_cases

pytestmark = pytest.mark.integration

P = Phase
CASES = all_cases()


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    tb = Testbed(SPEC)
    tb.up()
    try:
        b = Bed(tb, tmp_path_factory.mktemp("faults"))
        for node in ("n1", "n2"):
            b.run_app(node)
        yield b
    finally:
        tb.down()  # raises if anything of the prefix is left


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_converges(bed: Bed, case: Case) -> None:
    r = run_case(bed, case)
    print(r.line())
    check(bed, r.config, r.migration, case.expected)
    assert r.load.total > 20, r.load
    assert r.load.failures == 0, r.load.statuses
    if case.fault == "engine":
        # the canary's removal waited for the engine: the obligation was kept
        assert r.run.held > 0
    if case.fault == "source":
        check_source(r.run, case)
    # the fault lasted through every phase it claims to cover
    assert {str(p) for p in case.covers} <= r.run.during, (case.covers, r.run.during)
    if case.fault == "prometheus" and case.phase in UP_TO_SHIFT and not case.long:
        # no data is a hold, never a pass: the step waited for Prometheus
        assert r.run.seen, r.line()


def test_exporter_down_intake_waits_and_migration_is_unaffected(bed: Bed) -> None:
    bed.reset()
    _, config, m = bed.new_case("exporter-down", progress_deadline="60s")
    with Journal(config.webhook.journal) as j:
        j.record_notifications([Notification(
            "firing", "PreshiftFootprintDiscrepancy", COMPONENT, "fault-exporter",
            "2026-11-28T10:00:00Z", {"component": COMPONENT})])
    plans = Counting(make_plan_source(config))  # nothing listens at its exporter_url
    with loaded(bed) as load:
        run = drive(config, m.id, [], plans=plans)
        load.stop()
    summary = load.summary()
    print(f"exporter down: {run.migration.phase} in {run.duration:.1f}s; plan fetches "
          f"{plans.calls}, failed {plans.failures}; load {summary.total} requests, "
          f"{summary.failures} failed")
    check(bed, config, run.migration, P.SUCCEEDED)
    assert summary.failures == 0, summary.statuses
    with Journal(config.webhook.journal) as j:
        assert [n.id for n in j.unhandled_notifications()] == [1]  # kept for later
        assert [x.id for x in j.migrations()] == [m.id]  # intake decided nothing
    assert plans.calls >= 2 and plans.failures == plans.calls  # retried, with a backoff


class Counting:
    """A plan source that counts its fetches and their failures."""

    def __init__(self, inner: object) -> None:
        self.inner, self.calls, self.failures = inner, 0, 0

    def fetch(self) -> object:
        self.calls += 1
        try:
            return self.inner.fetch()  # type: ignore[attr-defined]
        except Exception:
            self.failures += 1
            raise


def test_cases_cover_every_fault_in_every_phase() -> None:
    """The matrix itself: each fault in each phase a move and its ways back pass."""
    phases = {str(p) for p in P} - {"succeeded", "rolled_back", "cancelled", "dry_run",
                                     "failed", "awaiting_approval"}
    for fault in ("kill", "engine", "haproxy", "prometheus"):
        assert {str(p) for c in CASES if c.fault == fault for p in c.covers} == phases, fault
    # the original's engine: every phase of the move (the ways back need a canary failure)
    assert {str(p) for c in CASES if c.fault == "source" for p in c.covers} == \
        {str(p) for p in FORWARD}
