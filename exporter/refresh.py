"""The background refresh loop: read the world, look ahead, build a frozen Snapshot, publish it.

Stages run one after the other and are isolated: a stage that raises keeps its last good
data (marked stale), counts one error and is logged once (again only when the message changes
or it recovers). The snapshot is published after every refresh, whatever failed. All state
below is touched by the refresh thread only, so no lock is needed (and none is held across I/O).

The assess stage (forecasts, scores, plan) runs only on fresh inputs: when Docker or
Prometheus cannot be read, the signal data is too old, or the failure history is not back yet
after a restart, it keeps the last good assessment, marked stale, rather than plan moves from
data that does not describe the world (docs/assess.md).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from preshift.assess import Assessment, Assessor
from preshift.config import Config
from preshift.errors import SourceError
from preshift.model import FailureEvent, Footprint
from preshift.sense.ports import FailureCounts, FailureSource, Inventory, SignalSource, SignalStats

from .snapshot import (
    ASSESS_PARTS,
    EMPTY_FAILURES,
    EMPTY_SIGNAL_STATS,
    STAGES,
    Snapshot,
    StageOutcome,
    Status,
    placeholder_footprint,
)

log = logging.getLogger(__name__)


class ReachabilitySink(Protocol):
    """Told when the inventory sees a node's reachability change (events.FailureWatcher: it
    counts one "unreachable" failure per outage and re-opens the node's event stream)."""

    def mark_unreachable(self, node: str, detail: str = "") -> None: ...

    def mark_reachable(self, node: str) -> None: ...


#: Loads failure events in [since, until] from before this process (raises while it cannot).
HistoryLoader = Callable[[float, float], Sequence[FailureEvent]]


def _trimmer() -> Callable[[], object]:
    """glibc's malloc_trim(0), or a no-op elsewhere (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_release_free_memory = _trimmer()


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"


class RefreshLoop:
    """Refreshes every `config.refresh_interval` seconds in a background thread."""

    def __init__(
        self,
        config: Config,
        inventory: Inventory,
        signals: SignalSource,
        failures: FailureSource,
        *,
        clock: Callable[[], float] = time.time,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        watcher: ReachabilitySink | None = None,
        restore: Callable[[], Any] | None = None,
        timer: Callable[[], float] = time.perf_counter,
        assessor: Assessor | None = None,
        history: HistoryLoader | None = None,
        max_input_age: float | None = None,
    ) -> None:
        """`restore` (e.g. the failure ledger's restore from Prometheus) is retried at the start
        of the failures stage of every refresh until it returns without raising; then
        `history(since, until)` (failure events rebuilt from Prometheus) likewise, with
        `until` the moment the restore succeeded and `since` one history window before.
        The assess stage skips a refresh whose newest signal point is older than
        `max_input_age` (default: the larger of 3 steps, 2 refresh intervals and 60 s)."""
        self.config = config
        self._inventory, self._signals, self._failures = inventory, signals, failures
        self._clock, self._timer = clock, timer
        self._on_snapshot, self._watcher, self._restore = on_snapshot, watcher, restore
        self._enabled_signals = tuple(s.name for s in config.signals if s.enabled)
        # Last good data per stage (kept when a stage fails).
        self._footprint = placeholder_footprint(config)
        self._node_errors: Mapping[str, str] = {}
        self._signal_stats: SignalStats = EMPTY_SIGNAL_STATS
        self._signal_series: Mapping[str, int] = dict.fromkeys(self._enabled_signals, 0)
        self._signal_points: Mapping[str, int] = dict(self._signal_series)
        self._failure_counts: FailureCounts = EMPTY_FAILURES
        #: intended replicas per component, when the inventory knows them (mode swarm)
        self._intended: Mapping[str, int] | None = None
        # Bookkeeping across refreshes.
        self._stage_success: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._errors_total: Counter[str] = Counter({s: 0 for s in STAGES})
        self._refreshes = 0
        self._last_success = 0.0
        self._components: set[str] = set(config.services)
        self._pairs: set[tuple[str, str]] = set()
        self._unreachable: set[str] | None = None  # as of the last inventory read
        self._restore_pending = restore is not None
        self._restore_failed = False
        self._assessor = assessor if assessor is not None else Assessor(config)
        self._history = history
        self._history_pending = history is not None
        self._restored_at: float | None = None
        self._assessment: Assessment | None = None
        self._assess_timings: Mapping[str, float] = dict.fromkeys(ASSESS_PARTS, 0.0)
        step = config.prometheus.step
        self._max_input_age = max_input_age if max_input_age is not None else max(
            3 * step, 2 * config.refresh_interval, 60.0)
        self._logged: dict[str, str | None] = {}
        # Published state and thread control.
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public -------------------------------------------------------------------------
    def current(self) -> Snapshot | None:
        """The latest published snapshot (None before the first refresh)."""
        return self._snapshot

    def start(self) -> None:
        """Refresh now, then every interval, in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the refresh loop is already started")
        self._thread = threading.Thread(target=self._run, name="preshift-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the loop to stop; wait at most `timeout` s. True when the thread has ended.

        A refresh stuck in I/O is not waited for: the thread is a daemon and ends with the
        process, and every adapter bounds its own calls with a timeout."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def refresh_once(self) -> Snapshot:
        """Run every stage once, publish and return the snapshot. Not reentrant: call it from
        one thread at a time (the loop's, or a test's when the loop is not started)."""
        # A refresh allocates a few million short-lived objects (JSON, exposition lines,
        # arrays); with the collector on, that triggered ~5 full collections per refresh at
        # 10,000 components, 25-60 ms each with the GIL held, stalling scrapes. The objects it
        # keeps are acyclic (freed by reference counting), so collect cycles outside it.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._refresh()
        finally:
            if enabled:
                gc.enable()

    def _refresh(self) -> Snapshot:
        now = self._clock()
        started = self._timer()
        self._refreshes += 1
        outcomes = {
            "inventory": self._run_stage("inventory", now, self._read_inventory),
            "signals": self._run_stage("signals", now, lambda: self._read_signals(now)),
        }
        # The signal windows were just replaced: give their old heap back before the assess
        # stage allocates its batch, so that the two never add up.
        _release_free_memory()
        outcomes["failures"] = self._run_stage("failures", now, lambda: self._read_failures(now))
        outcomes["assess"] = self._run_stage("assess", now, lambda: self._assess(now, outcomes))
        if all(o.status is not Status.FAILED for o in outcomes.values()):
            self._last_success = now
        snapshot = Snapshot(
            taken_at=now,
            interval=self.config.refresh_interval,
            footprint=self._footprint,
            node_errors=self._node_errors,
            failures=self._failure_counts,
            signals=self._signal_stats,
            signal_series=self._signal_series,
            signal_points=self._signal_points,
            stages=outcomes,
            duration=self._timer() - started,
            refreshes=self._refreshes,
            errors_total=dict(self._errors_total),
            last_success=self._last_success,
            sources_up={
                "docker": outcomes["inventory"].status is not Status.FAILED,
                "prometheus": outcomes["signals"].status is not Status.FAILED
                and not self._restore_failed,
            },
            components=tuple(sorted(self._components)),
            seen_pairs=frozenset(self._pairs),
            failures_restored=not self._restore_pending,
            assessment=self._assessment,
            assess_timings=self._assess_timings,
            risk_tolerance=self._assessor.settings.tolerance,
        ).with_json()
        _release_free_memory()  # the JSON's building blocks, before the metrics are rendered
        if self._on_snapshot is not None:
            try:  # a bug in the consumer must not stop the loop; publish anyway
                self._on_snapshot(snapshot)
            except Exception:
                log.exception("publishing the snapshot failed")
        self._snapshot = snapshot
        # Each refresh frees tens of thousands of small arrays (the signal windows, the
        # forecasts) and a few large buffers; glibc keeps the freed heap, so RSS would settle
        # ~25 % above what is live (measured at 10,000 components). Trimming takes a few ms.
        _release_free_memory()
        return snapshot

    # -- stages -------------------------------------------------------------------------
    def _run_stage(
        self, name: str, now: float, read: Callable[[], tuple[Status, str | None]]
    ) -> StageOutcome:
        started = self._timer()
        unexpected: Exception | None = None
        try:
            status, error = read()
        except Exception as exc:
            # A SourceError is expected (a source is down) and its message says it all;
            # anything else is a bug or a surprise: log its traceback (once).
            unexpected = None if isinstance(exc, SourceError) else exc
            status, error = Status.FAILED, f"{_message(exc)} (keeping the last good data)"
        duration = self._timer() - started
        self._report(name, error, unexpected)
        if status is not Status.OK:
            self._errors_total[name] += 1
        if status is not Status.FAILED:
            self._stage_success[name] = now
        return StageOutcome(status, duration, self._stage_success[name], error)

    def _read_inventory(self) -> tuple[Status, str | None]:
        result = self._inventory.read()
        fp = result.footprint
        errors = dict(result.errors)
        down = {n.name for n in fp.nodes if not n.reachable}
        for n in fp.nodes:
            if not n.reachable and n.name not in errors:
                errors[n.name] = n.error or "unreachable"
        self._footprint, self._node_errors = fp, errors
        self._intended = result.intended
        for r in fp.replicas:
            self._components.add(r.component)
            self._pairs.add((r.component, r.node))
        before = self._unreachable
        for node in sorted(set(errors) | (before or set())):
            self._report(f"node {node}", errors.get(node))
        self._tell_watcher(fp, errors, before)
        self._unreachable = down
        if fp.nodes and len(down) == len(fp.nodes):
            return Status.FAILED, f"no Docker engine answered ({len(down)} nodes unreachable)"
        # another source of the inventory (the swarm manager) failing keeps its last good data
        problems = [f"{source}: {message}" for source, message in
                    sorted(result.source_errors.items())]
        if errors:
            problems.insert(0, f"{len(errors)} of {len(fp.nodes)} nodes not fully read: "
                            + ", ".join(sorted(errors)))
        if problems:
            return Status.PARTIAL, "; ".join(problems)
        return Status.OK, None

    def _tell_watcher(
        self, fp: Footprint, errors: Mapping[str, str], before: set[str] | None
    ) -> None:
        """Report reachability changes (all of it after the first read) to the watcher."""
        if self._watcher is None:
            return
        for n in fp.nodes:
            if before is not None and (n.name in before) == (not n.reachable):
                continue  # unchanged
            try:
                if n.reachable:
                    self._watcher.mark_reachable(n.name)
                else:
                    self._watcher.mark_unreachable(n.name, errors.get(n.name, ""))
            except Exception:  # recording a failure must not break the inventory stage
                log.exception("telling the failure watcher about node %s failed", n.name)

    def _read_signals(self, now: float) -> tuple[Status, str | None]:
        stats = self._signals.refresh(now)
        series: Counter[str] = Counter(dict.fromkeys(self._enabled_signals, 0))
        points: Counter[str] = Counter(series)
        for (signal, _entity), (_ts, values) in self._signals.series().items():
            series[signal] += 1
            points[signal] += len(values)
        self._signal_stats, self._signal_series, self._signal_points = (
            stats, dict(series), dict(points)
        )
        if not stats.errors:
            return Status.OK, None
        by_message: dict[str, list[str]] = {}
        for name in sorted(stats.errors):  # one line per distinct cause, not per signal
            by_message.setdefault(stats.errors[name], []).append(name)
        message = "; ".join(f"{m} ({', '.join(names)})" for m, names in by_message.items())
        if self._enabled_signals and set(self._enabled_signals) <= set(stats.errors):
            return Status.FAILED, f"no signal could be fetched: {message}"
        return Status.PARTIAL, message

    def _read_failures(self, now: float) -> tuple[Status, str | None]:
        restore_error = None
        self._restore_failed = False
        if self._restore_pending and self._restore is not None:
            try:
                self._restore()
            except Exception as exc:  # until it works, failures seen live are still counted
                self._restore_failed = True
                restore_error = (f"restoring failure counters from Prometheus: {_message(exc)}"
                                 "; retrying every refresh")
            else:
                self._restore_pending = False
                log.info("failure counters restored from Prometheus")
        if not self._restore_pending and self._restored_at is None:
            self._restored_at = now  # before this process exports a counter
        if self._history_pending and self._history is not None and self._restored_at is not None:
            restore_error = self._load_history(self._restored_at)
        self._failure_counts = self._failures.counts()
        return (Status.PARTIAL, restore_error) if restore_error else (Status.OK, None)

    def _load_history(self, until: float) -> str | None:
        """Failure events of the history window from before this process, for the score."""
        assert self._history is not None
        since = until - self.config.prometheus.history
        try:
            events = self._history(since, until)
        except Exception as exc:
            self._restore_failed = True
            return (f"loading the failure history from Prometheus: {_message(exc)}"
                    "; retrying every refresh")
        self._history_pending = False
        added = self._assessor.add_history(events, since)
        log.info("failure history loaded from Prometheus: %d events", added)
        return None

    def _assess(self, now: float, outcomes: Mapping[str, StageOutcome]
                ) -> tuple[Status, str | None]:
        self._assess_timings = dict.fromkeys(ASSESS_PARTS, 0.0)
        why = self._stale_inputs(now, outcomes)
        if why is not None:
            kept = (f"the last good one is from {self._assessment.taken_at:.0f}"
                    if self._assessment is not None else "none made yet")
            return Status.FAILED, f"not assessed: {why}; {kept}"
        assessment = self._assessor.assess(
            self._footprint, self._signals.series(), self._failure_counts.recent, now,
            intended=self._intended,
        )
        self._assessment = assessment
        self._assess_timings = {f"assess_{k}": v for k, v in assessment.timings.items()}
        return Status.OK, None

    def _stale_inputs(self, now: float, outcomes: Mapping[str, StageOutcome]) -> str | None:
        """Why the inputs cannot be trusted to plan from, or None when they can."""
        if outcomes["inventory"].status is Status.FAILED:
            return "no Docker engine could be read"
        if outcomes["signals"].status is Status.FAILED:
            return "no signal could be read from Prometheus"
        if self._restore_pending or self._history_pending:
            return "the failure history is not restored from Prometheus yet"
        newest = max((float(ts[-1]) for ts, _ in self._signals.series().values() if len(ts)),
                     default=None)
        if newest is not None and now - newest > self._max_input_age:
            return (f"the newest signal point is {now - newest:.0f} s old "
                    f"(more than {self._max_input_age:g} s)")
        return None

    # -- helpers ------------------------------------------------------------------------
    def _report(self, key: str, error: str | None, exc: Exception | None = None) -> None:
        """Log a problem when it starts or changes, and once when it clears; not every time."""
        previous = self._logged.get(key)
        if error == previous:
            return
        self._logged[key] = error
        if error is None:
            log.info("%s: recovered", key)
        else:
            log.warning("%s: %s", key, error, exc_info=exc)

    def _run(self) -> None:
        interval = self.config.refresh_interval
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # a bug: keep serving the last snapshot, try again next time
                log.exception("refresh failed unexpectedly")
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # overran: skip the missed ticks instead of bursting
                next_at = now
            if self._stop.wait(next_at - now):
                break
