"""Hypothesis drives the executor with random ticks, faults, crashes and operator requests.

Invariants: no transition outside TRANSITIONS; a terminal phase is final; the executor never
takes the component below min_available nor leaves HAProxy without a routable server; once
rolled back or cancelled, no canary container or server is left (checked after healing).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from preshift.act.phases import TERMINAL, Phase, allowed
from preshift.act.records import ReplicaRef
from preshift.errors import ActionError, InputError

from .act_fakes import Crash, Harness, move_item

P = Phase
METHODS = ["clone", "add_server", "set_weight", "drain", "standby", "remove_server",
           "remove", "start", "ready"]


class MigrationMachine(RuleBasedStateMachine):
    @initialize(approval=st.booleans(), traffic=st.sampled_from(["haproxy", "none"]),
                action=st.sampled_from(["move", "scale_up"]))
    def setup(self, approval: bool, traffic: str, action: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        item = move_item(action=action,
                         replicas=(ReplicaRef("n1", "web-1"), ReplicaRef("n1", "web-2")))
        self.h = Harness(Path(self.dir.name) / "j.sqlite3", items=[item], replicas=2,
                         require_approval=approval, traffic=traffic)
        self.h.fire()
        self.terminal: dict[str, str] = {}
        self.last_phase: dict[str, Phase] = {}

    def teardown(self) -> None:
        h = getattr(self, "h", None)
        if h is None:
            return
        try:
            self.heal_and_finish()
        finally:
            h.journal.close()
            self.dir.cleanup()

    def heal_and_finish(self) -> None:
        h = self.h
        h.world.fail.clear()
        h.world.fail_always.clear()
        h.world.crash.clear()
        for b in h.world.boxes.values():
            if b.component == "web" and b.name.startswith("web-") and len(b.name) > 6:
                b.fail_ratio = 0.0
        for _ in range(300):
            active = h.journal.migrations(active=True)
            if not active:
                break
            for m in active:
                if m.phase == P.AWAITING_APPROVAL and m.request is None:
                    h.journal.request(m.id, "approve")
            h.tick(2.0)
        assert not h.journal.migrations(active=True), h.journal.migrations()
        for m in h.journal.migrations():
            if m.phase in (P.ROLLED_BACK, P.CANCELLED, P.DRY_RUN):
                assert h.world.box_named(m.canary_name) is None, m
                assert m.canary_name not in h.world.backends.get("be_web", {}), m
        self.last_phase.clear()  # many ticks ran: the recorder checked each transition
        self.check()

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 5.0, 15.0]))
    def tick(self, dt: float) -> None:
        try:
            self.h.tick(dt)
        except Crash:
            self.h.restart()

    @rule(method=st.sampled_from(METHODS), retriable=st.booleans())
    def fail_next(self, method: str, retriable: bool) -> None:
        self.h.world.fail[method] = ActionError(f"injected {method}", retriable=retriable)

    @rule(method=st.sampled_from(METHODS), when=st.sampled_from(["before", "after"]))
    def crash_at(self, method: str, when: str) -> None:
        self.h.world.crash[method] = when

    @rule(what=st.sampled_from(["unhealthy", "exited", "errors"]))
    def canary_fault(self, what: str) -> None:
        for m in self.h.journal.migrations(active=True):
            b = self.h.world.box_named(m.canary_name)
            if b is None:
                continue
            if what == "unhealthy":
                b.health = "unhealthy"
            elif what == "exited":
                b.state = "exited"
            else:
                b.fail_ratio = 0.5

    @rule(what=st.sampled_from(["approve", "abort", "rollback"]))
    def request(self, what: str) -> None:
        for m in self.h.journal.migrations(active=True):
            with contextlib.suppress(InputError):
                self.h.journal.request(m.id, what)

    @rule()
    def resolve(self) -> None:
        self.h.fire(status="resolved")

    @invariant()
    def check(self) -> None:
        if not hasattr(self, "h"):
            return
        h = self.h
        assert not h.events.bad, h.events.bad
        assert not h.world.violations, h.world.violations
        for m in h.journal.migrations():
            old = self.last_phase.get(m.id)
            if old is not None:
                assert allowed(old, m.phase), (old, m.phase)
            self.last_phase[m.id] = m.phase
            if m.id in self.terminal:
                assert str(m.phase) == self.terminal[m.id], "terminal phase changed"
            elif m.phase in TERMINAL:
                self.terminal[m.id] = str(m.phase)


MigrationMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMigrationMachine = MigrationMachine.TestCase
