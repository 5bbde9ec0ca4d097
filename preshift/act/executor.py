"""The executor: one `tick()` takes new notifications in and moves every active migration
by at most one step. Where the pure machine (`machine.decide`) meets the ports.

Per migration and tick: reload the row → re-observe the world (the canary and the source
through the Runtime, the backend's servers through the Traffic layer) → decide → journal the
step's intent (`begin_step`) → take the one effect → journal its outcome (`end_step`) →
write the row (compare-and-set). A crash anywhere in between is harmless: the next tick
re-observes and repeats the idempotent effect or sees it done. Errors follow `errors.py`:
`.retriable` ones leave the phase (attempt + 1; the progress deadline bounds the retries),
the others send the migration back (`machine.on_error`).

The executor is single-threaded and expects to be the only one acting on the journal (the
webhook's worker holds `leader.LeaderLock`); a concurrent writer only costs a retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import Config
from ..errors import PreshiftError
from . import safety
from .analysis import render_query
from .events import NoObserver, Observer
from .intake import Intake
from .journal import Journal
from .machine import PROBED, Decision, Observation, Settings, decide, on_error, wants_query
from .phases import Phase, allowed
from .plan_source import PlanSource
from .ports import Instance, Runtime, Traffic
from .records import Migration

log = logging.getLogger(__name__)

Query = Callable[[str], float | None]
#: Phases before the canary has a server in HAProxy: no need to read the backend.
_NO_SERVERS = frozenset({Phase.PLANNED, Phase.STARTING, Phase.HEALTH_CHECK,
                         Phase.AWAITING_APPROVAL})
#: How long intake waits after the plan or the runtime could not be read.
INTAKE_BACKOFF = 2.0
#: The outcome given, on start, to a step an earlier process began but never finished.
INTERRUPTED = "interrupted: the process stopped before journaling the outcome"
#: How many of the latest migrations the start-up check looks at for such steps.
RECENT_ON_START = 200


@dataclass(frozen=True, slots=True)
class TickResult:
    notifications: int = 0  # notifications handled (marked) this tick
    steps: int = 0  # migrations whose row changed this tick
    errors: int = 0  # failed observations or effects


def _retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


class Executor:
    """Drives migrations through the journal; call `tick()` every `webhook.tick` seconds."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        runtime: Runtime,
        traffic: Traffic,
        plans: PlanSource,
        *,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
        query: Query | None = None,
        notifications_per_tick: int = 50,
    ) -> None:
        self.config = config
        self.settings = replace(Settings.from_config(config), resumed_at=clock())
        self.journal = journal
        self.runtime = runtime
        self.traffic = traffic
        self.clock = clock
        self.observer: Observer = observer or NoObserver()
        self.query = query
        self.notifications_per_tick = notifications_per_tick
        self.intake = Intake(config, journal, runtime, plans, clock=clock,
                             observer=self.observer)
        self._intake_after = 0.0
        self._closed_interrupted = False

    # the tick -----------------------------------------------------------------------

    def tick(self) -> TickResult:
        """Handle new notifications, then advance each active migration by one step."""
        if not self._closed_interrupted:
            self.close_interrupted()
        handled = self.take_notifications()
        steps = errors = 0
        # Oldest first: PLANNED migrations get free slots in the order they were planned.
        for m in reversed(self.journal.migrations(active=True, limit=10_000)):
            before = m
            after, failed = self.advance(m.id)
            steps += after is not None and after.updated_at != before.updated_at
            errors += failed
        return TickResult(handled, steps, errors)

    def close_interrupted(self) -> int:
        """Give steps left open by an earlier process (killed between a step's intent and
        its outcome) the outcome INTERRUPTED, so the journal has no open step and says what
        happened. Safe only for the one executor acting on the journal (the leader); the
        re-observation of the next tick finds out what the interrupted effect did."""
        closed = 0
        for m in self.journal.migrations(limit=RECENT_ON_START):
            for step in self.journal.open_steps(m.id):
                self.journal.end_step(step.id, INTERRUPTED)
                closed += 1
        self._closed_interrupted = True
        return closed

    def take_notifications(self) -> int:
        """Turn unhandled notifications into migrations; returns how many were handled."""
        now = self.clock()
        if now < self._intake_after:
            return 0
        self.intake.forget_plan()
        handled = 0
        for n in self.journal.unhandled_notifications(self.notifications_per_tick):
            try:
                outcome = self.intake.handle(n)
            except PreshiftError as exc:
                if _retriable(exc) and now - n.received_at < self.settings.progress_deadline:
                    log.warning("notification %s: will retry: %s", n.id, exc)
                    self._intake_after = now + INTAKE_BACKOFF
                    break  # keep the order: later ones wait for this one
                outcome = f"error: {exc}"
            except Exception as exc:  # a bug must not block the queue behind it
                log.exception("notification %s: intake failed", n.id)
                outcome = f"error: internal: {exc.__class__.__name__}: {exc}"
            self.journal.mark_handled(n.id, outcome)
            handled += 1
        return handled

    def advance(self, migration_id: str) -> tuple[Migration | None, bool]:
        """One step of one migration: (the row as written, whether something failed)."""
        m = self.journal.get(migration_id)
        if m is None or m.terminal:
            return m, False
        now = self.clock()
        try:
            obs = self.observe(m, now)
        except Exception as exc:
            if not isinstance(exc, PreshiftError):
                log.exception("migration %s: observing failed", m.id)
            retry = _retriable(exc) or not isinstance(exc, PreshiftError)
            self._apply(m, on_error(m, f"observing: {exc}", retry, now), now)
            return self.journal.get(m.id), True
        decision = decide(m, obs, self.settings, now)
        return self._apply(m, decision, now)

    # observing ----------------------------------------------------------------------

    def observe(self, m: Migration, now: float) -> Observation:
        """Everything `decide` needs for `m` now. Dry-run migrations are never observed."""
        if m.dry_run:
            return Observation()
        if m.phase == Phase.PLANNED:
            blocked = self._blocked(m, now)
            if blocked:
                # Waiting for a limit: no engine call. In an alert storm ~100 waiting
                # migrations inspected every tick slowed the running ones' steps 10-50x.
                return Observation(blocked=blocked)
        rt = self.runtime
        # An engine that does not answer is an observation, not an error: the machine decides
        # per phase (the source's: the risky node failing, the canary carries on; the
        # target's: a rollback must still restore traffic without it).
        src, src_unreachable = (self._inspect(m.source_node, m.source_name)
                                if m.source_node and m.source_name else (None, None))
        if m.action != "move" and m.phase in (Phase.PLANNED, Phase.STARTING) \
                and not (src and src.running):
            src = self._copy_candidate(m)
        canary, unreachable = (self._inspect(m.target_node, m.canary_name)
                               if m.phase != Phase.PLANNED else (None, None))
        probe = (canary is not None and canary.running and m.phase in PROBED
                 and not m.data.get("decommission"))
        return Observation(
            source=src,
            source_health=rt.probe(src) if m.phase == Phase.RESTORING and src else None,
            canary=canary,
            canary_health=rt.probe(canary) if probe and canary else None,
            servers=(self.traffic.servers(m.backend)
                     if m.backend and m.phase not in _NO_SERVERS else {}),
            query_value=self._query(m) if wants_query(m, self.settings, now) else None,
            canary_unreachable=unreachable,
            source_unreachable=src_unreachable,
        )

    def _inspect(self, node: str, name: str) -> tuple[Instance | None, str | None]:
        """(the container or None, why its engine is unreachable or None); a permanent
        error propagates."""
        try:
            return self.runtime.inspect(node, name), None
        except PreshiftError as exc:
            if not _retriable(exc):
                raise
            return None, str(exc)

    def _copy_candidate(self, m: Migration) -> Instance | None:
        """A running replica of the component to copy (scale-up, new instance)."""
        for node, name in m.data.get("copy_from", ()):
            try:
                i = self.runtime.inspect(node, name)
            except PreshiftError:
                continue  # that node is unreachable: try the next replica
            if i is not None and i.running and i.component == m.component:
                return i
        return None

    def _blocked(self, m: Migration, now: float) -> str | None:
        mc = self.config.migration
        recent = self.journal.migrations(since=now - safety.window(mc), limit=10_000)
        return safety.may_start(m, cfg=mc, migrations=recent, now=now)

    def _query(self, m: Migration) -> float | None:
        a = self.settings.analysis
        if self.query is None or not a.query:
            return None
        try:
            return self.query(render_query(a.query, m.component, m.canary_name))
        except PreshiftError as exc:
            log.warning("migration %s: analysis query failed: %s", m.id, exc)
            return None  # no data: the step holds

    # acting -------------------------------------------------------------------------

    def _apply(self, m: Migration, d: Decision, now: float) -> tuple[Migration | None, bool]:
        if d.idle:
            return m, False
        new_phase = Phase(d.changes.get("phase", m.phase))
        if not allowed(m.phase, new_phase):  # a bug in the machine: never write it
            log.error("migration %s: refused %s → %s (%s)", m.id, m.phase, new_phase, d.note)
            return m, True
        phase_step = None
        if d.effect is not None:
            step = self.journal.begin_step(m, d.effect.action,
                                           d.effect.detail + (f" ({d.note})" if d.note else ""))
            try:
                d.effect.apply(self.runtime, self.traffic)
            except Exception as exc:
                known = isinstance(exc, PreshiftError)
                if not known:
                    log.exception("migration %s: %s failed", m.id, d.effect.action)
                self.journal.end_step(step, f"error: {exc}")
                self._step(m, d.effect.action, "error")
                err = on_error(m, f"{d.effect.action}: {exc}", _retriable(exc) or not known, now)
                self._apply(m, err, now)
                return self.journal.get(m.id), True
            self.journal.end_step(step, "ok")
            self._step(m, d.effect.action, "ok")
        elif new_phase != m.phase:
            phase_step = self.journal.begin_step(m, "phase", f"{m.phase} → {new_phase}"
                                                 + (f": {d.note}" if d.note else ""))
        try:
            new = self.journal.update(m, **d.changes)
        except PreshiftError as exc:
            # Compare-and-set lost (an operator's request landed meanwhile): the next tick
            # re-reads the row and re-observes; the effect, if any, is idempotent.
            log.info("migration %s: %s", m.id, exc)
            if phase_step is not None:
                self.journal.end_step(phase_step, f"not written: {exc}")
            return m, _retriable(exc) is False
        if phase_step is not None:
            self.journal.end_step(phase_step, "ok")
            self._step(new, "phase", "ok")
        if new.phase == Phase.SUCCEEDED and new.alert_key:
            # A component may need more than one move: its alert, if still firing, is handed
            # to intake again, which takes the next entry of the then current plan (after
            # the cooldown). Alertmanager's repeats are duplicates and would never do it.
            self.journal.reopen_firing(new.alert_key, f"reopened after migration {new.id}")
        if new.phase == Phase.SUCCEEDED:
            self.journal.reopen_refused(new.id, f"reopened after migration {new.id}")
        if new.phase != m.phase:
            try:
                self.observer.on_phase(m, new)
            except Exception:
                log.exception("observer.on_phase failed")
        return new, False

    def _step(self, m: Migration, action: str, outcome: str) -> None:
        try:
            self.observer.on_step(m, action, outcome)
        except Exception:  # metrics never stop a migration
            log.exception("observer.on_step failed")
