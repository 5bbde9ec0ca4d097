"""Intake: journaled notifications become migrations (or a reason why not).

A firing alert for component C (label `component`, else `service`):
1. if a migration for this alert (fingerprint + startsAt) exists and has not succeeded:
   "duplicate" — the handling is idempotent, also after a crash between creating the
   migration and marking the notification handled. When one succeeds, the executor reopens
   the alert (if it has not resolved), so a component that needs several moves gets them one
   after another, each from the then current plan;
2. read the plan (`PlanSource`), take C's entries highest priority first;
3. check each against the live state (the replica to move still runs on from_node; a
   scale-up has a running replica to copy): otherwise the plan is stale and the entry skipped;
4. admit it through `safety.admit`; the first admitted entry becomes a PLANNED migration
   (a component gets one migration at a time, so the others would be refused anyway).

A resolved alert cancels that alert's migrations still PLANNED. The returned text is the
notification's outcome in the journal. SourceError from the plan or the runtime propagates:
the executor retries the notification at a later tick.
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
from .plan_source import PlanSource
from .ports import Instance, Runtime
from .records import Migration, Notification, PlanItem, new_migration_id

log = logging.getLogger(__name__)


def component_of(n: Notification) -> str:
    """The component an alert is about: label `component`, else `service`, else the journaled
    column (the webhook fills it from the same labels)."""
    return n.labels.get("component") or n.labels.get("service") or n.component or ""


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
        if cancelled:
            return f"resolved: cancelled {', '.join(cancelled)}"
        return "resolved: nothing planned to cancel"

    def _firing(self, n: Notification, comp: str) -> str:
        existing = self.journal.migrations(alert_key=n.alert_key, limit=1)
        if existing and existing[0].phase != Phase.SUCCEEDED:
            # active: it is being handled; ended otherwise (rolled back, failed, cancelled,
            # dry run): not retried for the same alert instance — a new one retries
            return f"duplicate: migration {existing[0].id} exists for this alert"
        if self._plan is None:
            self._plan = self.plans.fetch()
        items = sorted((i for i in self._plan if i.component == comp),
                       key=lambda i: -i.priority)
        if not items:
            return f"nothing to do: the plan has no entry for {comp}"
        now = self.clock()
        mc = self.config.migration
        recent = self.journal.migrations(since=now - safety.window(mc), limit=10_000)
        notes: list[str] = []
        for k, item in enumerate(items):
            source, copy_from, running, stale = self._live(item)
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
        return "no migration: " + "; ".join(notes)

    def _inspect(self, node: str, name: str) -> Instance | None:
        try:
            return self.runtime.inspect(node, name)
        except SourceError as exc:
            log.info("intake: cannot inspect %s on %s: %s", name, node, exc)
            return None

    def _live(
        self, item: PlanItem
    ) -> tuple[Instance | None, list[list[str]], int, str | None]:
        """(source, copy candidates, running replicas now, why stale or None)."""
        seen: dict[tuple[str, str], Instance | None] = {}
        for r in item.replicas:
            seen[(r.node, r.name)] = self._inspect(r.node, r.name)
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
