"""Intake: journaled notifications become migrations (or a reason why not).

A firing alert for component C (label `component`, else `service`):
1. if a migration for this alert (fingerprint + startsAt) exists and has not succeeded:
   "duplicate" — the handling is idempotent, also after a crash between creating the
   migration and marking the notification handled. When one succeeds, the executor reopens
   the alert (if it has not resolved), so a component that needs several moves gets them one
   after another, each from the then current plan; the component's other alerts refused
   while it was busy are reopened too (also when it is cancelled by its alert resolving);
2. read the plan (`PlanSource`), take C's entries highest priority first;
3. check each against the live state (the replica to move still runs on from_node; a
   scale-up has a running replica to copy): otherwise the plan is stale and the entry skipped;
4. admit it through `safety.admit`; the first admitted entry becomes a PLANNED migration
   (a component gets one migration at a time, so the others would be refused anyway).

A resolved alert cancels that alert's migrations still PLANNED. The returned text is the
notification's outcome in the journal.

Fail-safe: no decision from data that cannot be trusted. The plan must be there, fresh
(`plan.stale` false) and assessed at most `migration.max_plan_age` ago by this webhook's
clock; the source replica of a move must be readable. Otherwise intake withholds the decision:
it tells the observer why (`on_withheld`, one of events.WITHHELD_REASONS) and raises the
SourceError, which the executor retries at a later tick (until its progress deadline) when
it is retriable. An entry whose source cannot be read is passed over for the next one; the
error propagates only when no entry became a migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..config import Config
from ..errors import SourceError
from . import safety
from .events import NoObserver, Observer
from .journal import Journal
from .phases import Phase
from .plan_source import PlanError, PlanSource
from .ports import Instance, Runtime
from .records import Migration, Notification, PlanItem, new_migration_id

log = logging.getLogger(__name__)


def component_of(n: Notification) -> str:
    """The component an alert is about: label `component`, else `service`, else the journaled
    column (the webhook fills it from the same labels)."""
    return n.labels.get("component") or n.labels.get("service") or n.component or ""


def _plan_reason(exc: SourceError) -> str:
    """The withheld reason of an error from reading the plan."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    return "plan_unavailable" if exc.retriable else "plan_invalid"


def _describe(item: PlanItem) -> str:
    where = f"{item.replica}@{item.from_node}" if item.replica else "a new replica"
    return f"{item.action} {where} → {item.to_node}"


class Intake:
    """Turns notifications into migrations; `handle(n)` returns the outcome text."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        runtime: Runtime,
        plans: PlanSource,
        *,
        clock: Callable[[], float],
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.runtime = runtime
        self.plans = plans
        self.clock = clock
        self.observer = observer or NoObserver()
        self._plan: Sequence[PlanItem] | None = None

    def forget_plan(self) -> None:
        """Read the plan afresh at the next firing alert (the executor calls this per tick, so
        one tick's burst of notifications reads it once)."""
        self._plan = None

    def handle(self, n: Notification) -> str:
        comp = component_of(n)
        if not comp:
            return "ignored: no component label"
        if n.status == "resolved":
            return self._resolved(n)
        if n.status != "firing":
            return f"ignored: status {n.status!r}"
        return self._firing(n, comp)

    # ---------------------------------------------------------------------------------

    def _resolved(self, n: Notification) -> str:
        cancelled = []
        for m in self.journal.migrations(alert_key=n.alert_key, active=True):
            if m.phase == Phase.PLANNED:
                new = self.journal.update(m, phase=Phase.CANCELLED,
                                          reason="alert resolved before the migration started")
                self._notify(m, new)
                cancelled.append(m.id)
                # Its component's other alerts, refused while it was busy, get their turn.
                self.journal.reopen_refused(m.id, f"reopened: migration {m.id} was cancelled")
        if cancelled:
            return f"resolved: cancelled {', '.join(cancelled)}"
        return "resolved: nothing planned to cancel"

    def _firing(self, n: Notification, comp: str) -> str:
        existing = self.journal.migrations(alert_key=n.alert_key, limit=1)
        if existing and existing[0].phase != Phase.SUCCEEDED:
            # active: it is being handled; ended otherwise (rolled back, failed, cancelled,
            # dry run): not retried for the same alert instance — a new one retries
            return f"duplicate: migration {existing[0].id} exists for this alert"
        if self.journal.resolved(n.alert_key):
            # HA peers and retries reorder: this alert ended before its firing copy was handled
            return "ignored: this alert has already resolved"
        try:
            plan = self._read_plan()
        except SourceError as exc:
            self._withheld(_plan_reason(exc))
            raise
        items = sorted((i for i in plan if i.component == comp), key=lambda i: -i.priority)
        if not items:
            return f"nothing to do: the plan has no entry for {comp}"
        now = self.clock()
        mc = self.config.migration
        recent = self.journal.migrations(since=now - safety.window(mc), limit=10_000)
        notes: list[str] = []
        unread: SourceError | None = None
        for k, item in enumerate(items):
            try:
                source, copy_from, running, stale = self._live(item)
            except SourceError as exc:
                # Not known, so not decided; a lower-priority entry may still be checked.
                unread = unread or exc
                notes.append(f"not checked {_describe(item)}: {exc}")
                continue
            if stale:
                notes.append(f"skipped {_describe(item)}: {stale}")
                continue
            adm = safety.admit(item, running=running, service=self.config.service(comp),
                               cfg=mc, migrations=recent, now=now)
            if not adm.ok:
                notes.append(f"refused {_describe(item)}: {adm.reason}")
                continue
            m = self._create(n, item, source, copy_from, adm)
            head = f"migration {m.id} created: {_describe(item)}"
            if adm.wait:
                head += f" (waits: {adm.reason})"
            if m.dry_run:
                head += " [dry-run]"
            later = len(items) - k - 1
            if later:
                notes.append(f"{later} more entr{'y' if later == 1 else 'ies'} for {comp} "
                             "follow once this one succeeds (the alert is reopened)")
            return "; ".join([head, *notes])
        if unread is not None:
            self._withheld("runtime_unavailable")
            raise unread
        return "no migration: " + "; ".join(notes)

    def _read_plan(self) -> Sequence[PlanItem]:
        """The plan, read once per tick; its age is checked at every use (fail-safe: a plan
        the exporter claims fresh may come from a refresh thread that hangs, or a clock off)."""
        if self._plan is None:
            self._plan = self.plans.fetch()
            age = self._age(self._plan)
            if age is not None:
                self._tell("on_plan", age)
        age = self._age(self._plan)
        limit = self.config.plan_age_limit()
        if age is not None and abs(age) > limit:
            when = (f"{age:.0f} s ago" if age > 0
                    else f"{-age:.0f} s in the future (the clocks disagree)")
            raise PlanError(f"the exporter's plan was assessed {when}, more than "
                            f"migration.max_plan_age ({limit:g} s): its refresh may be stuck "
                            "or its clock off; no migration is decided from it",
                            reason="plan_too_old")
        return self._plan

    def _age(self, plan: Sequence[PlanItem]) -> float | None:
        assessed_at = getattr(plan, "assessed_at", None)  # a StaticPlanSource's has none
        return None if assessed_at is None else self.clock() - assessed_at

    def _withheld(self, reason: str) -> None:
        log.info("intake: decision withheld (%s)", reason)
        self._tell("on_withheld", reason)

    def _tell(self, hook: str, *args: object) -> None:
        """Call an optional observer hook (observers written before it may lack it)."""
        fn = getattr(self.observer, hook, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # metrics never stop a decision
            log.exception("observer.%s failed", hook)

    def _inspect(self, node: str, name: str, errors: list[SourceError]) -> Instance | None:
        """The instance, or None when it is gone or cannot be read (the error is kept)."""
        try:
            return self.runtime.inspect(node, name)
        except SourceError as exc:
            log.info("intake: cannot inspect %s on %s: %s", name, node, exc)
            errors.append(exc)
            return None

    def _live(
        self, item: PlanItem
    ) -> tuple[Instance | None, list[list[str]], int, str | None]:
        """(source, copy candidates, running replicas now, why stale or None). Raises
        SourceError when what decides (a move's source, or every copy candidate) is unread.
        An unreadable replica other than those counts as not running: fewer, never more."""
        seen: dict[tuple[str, str], Instance | None] = {}
        errors: list[SourceError] = []
        for r in item.replicas:
            seen[(r.node, r.name)] = self._inspect(r.node, r.name, errors)
        if item.action == "move":
            assert item.from_node is not None  # parse_footprint checks it
            # Read errors propagate here: without knowing, retrying beats guessing "stale".
            src = self.runtime.inspect(item.from_node, item.replica)
            seen[(item.from_node, item.replica)] = src
            running = sum(1 for i in seen.values() if i is not None and i.running)
            if src is None:
                return None, [], running, (f"plan is stale: {item.replica} is not on "
                                           f"{item.from_node} any more")
            if not src.running or src.component != item.component:
                return None, [], running, (f"plan is stale: {item.replica} on "
                                           f"{item.from_node} is {src.state}")
            return src, [[src.node, src.name]], running, None
        order = sorted(seen.items(), key=lambda kv: kv[0] != (item.from_node, item.replica))
        live = [i for _, i in order if i is not None and i.running
                and i.component == item.component]
        if not live and errors:
            raise errors[0]  # "nothing to copy" would be a guess
        if not live:
            return None, [], 0, f"no running replica of {item.component} to copy"
        return live[0], [[i.node, i.name] for i in live], len(live), None

    def _create(self, n: Notification, item: PlanItem, source: Instance | None,
                copy_from: list[list[str]], adm: safety.Admission) -> Migration:
        mid = new_migration_id()
        comp = item.component
        traffic = self.config.traffic
        backend = traffic.backends.get(comp) if traffic.kind == "haproxy" else None
        m = Migration(
            id=mid, component=comp, action=item.action, target_node=item.to_node,
            canary_name=f"{comp}-{mid}", alert_key=n.alert_key,
            source_node=source.node if source else None,
            source_name=source.name if source else None, backend=backend,
            dry_run=self.config.migration.dry_run, reason=item.reason,
            priority=item.priority,
            data={"plan": item.to_dict(), "copy_from": copy_from, "notification": n.id,
                  "waiting": adm.reason if adm.wait else None},
        )
        m = self.journal.create_migration(m, detail=f"from alert {n.alertname} ({n.id})")
        self._notify(None, m)
        return m

    def _notify(self, old: Migration | None, new: Migration) -> None:
        try:
            self.observer.on_phase(old, new)
        except Exception:  # metrics never stop a migration
            log.exception("observer.on_phase failed")
