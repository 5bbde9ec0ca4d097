"""FailureSource: a thread-safe ledger of failure counters that survive exporter restarts.

The exporter exports these counters; Prometheus keeps them. After a restart, `restore()`
reads the last exported values back and makes them the baseline, so the counters stay
monotonic (no spurious counter reset for `rate()` and `increase()`).

Ordering rules, so that nothing is lost and nothing counts twice:

* Events recorded *before* a (late) restore are kept aside. At restore, those newer than the
  restored last-event timestamp are added on top of the baseline; older ones were already
  counted by the previous process (they are in the baseline) and are dropped.
* After restore, an event not newer than the restored last-event timestamp is a replay of
  something the baseline already holds (the watcher replays Docker events from that time)
  and is ignored.
* Recording the very same event twice (same time, reason, node, component, replica) counts
  once: reconnecting event streams may deliver the boundary event again.

Limit: the restored last-event timestamp is one value for all nodes, so an event from an
engine whose clock lags the others by more than the gap may be taken for a replay.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from types import MappingProxyType

from ..model import FailureEvent
from .ports import FailureCounts, MetricsSource

COMPONENT_COUNTER = "preshift_component_failures_total"
NODE_COUNTER = "preshift_node_failures_total"
LAST_EVENT_GAUGE = "preshift_failures_last_event_timestamp_seconds"

_EventId = tuple[float, str, str, str, str]


def _event_id(ev: FailureEvent) -> _EventId:
    return (ev.ts, ev.reason, ev.node, ev.component, ev.replica)


class FailureLedger:
    """Cumulative failure counts plus the `history_recent` newest events."""

    def __init__(self, history_recent: int = 1000, dedupe_window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._by_component: dict[tuple[str, str, str], float] = {}
        self._by_node: dict[tuple[str, str], float] = {}
        self._last_event_ts = 0.0
        self._recent: deque[FailureEvent] = deque(maxlen=history_recent)
        self._seen: set[_EventId] = set()
        self._seen_order: deque[_EventId] = deque()
        self._dedupe_window = dedupe_window
        self._restored = False
        self._restored_last_ts = 0.0
        # recorded before restore, for reconciliation; bounded in case restore never succeeds
        self._pending: deque[FailureEvent] = deque(maxlen=100_000)

    @property
    def restored(self) -> bool:
        """True once restore() succeeded: before that, counts start from zero."""
        with self._lock:
            return self._restored

    def record(self, event: FailureEvent) -> bool:
        """Count `event`; returns False when it was ignored as a duplicate or replay."""
        eid = _event_id(event)
        with self._lock:
            if eid in self._seen:
                return False
            if self._restored and event.ts <= self._restored_last_ts:
                return False  # the restored baseline already holds it
            self._remember(eid)
            if not self._restored:
                self._pending.append(event)
            self._count(event)
            return True

    def counts(self) -> FailureCounts:
        """A consistent copy of the counters (taken under a short lock)."""
        with self._lock:
            by_component = dict(self._by_component)
            by_node = dict(self._by_node)
            last = self._last_event_ts
            recent = tuple(self._recent)
        return FailureCounts(
            by_component=MappingProxyType(by_component),
            by_node=MappingProxyType(by_node),
            last_event_ts=last,
            recent=recent,
        )

    def restore(self, source: MetricsSource, lookback: float) -> float:
        """Read the counters last exported (within `lookback` seconds) back from Prometheus
        and make them the baseline. Returns the last event timestamp (0.0 if none), from
        which the watcher should replay Docker events. Raises SourceError when Prometheus
        cannot answer; the caller retries later. A second call returns the first result."""
        with self._lock:
            if self._restored:
                return self._restored_last_ts
        window = f"{max(1, math.ceil(lookback))}s"
        # all I/O first, without the lock: a partial answer changes nothing
        comp = source.query(
            f"max by (component, node, reason) (last_over_time({COMPONENT_COUNTER}[{window}]))"
        )
        node = source.query(f"max by (node, reason) (last_over_time({NODE_COUNTER}[{window}]))")
        last = source.query(f"max(last_over_time({LAST_EVENT_GAUGE}[{window}]))")
        base_comp: dict[tuple[str, str, str], float] = {}
        for s in comp:
            key = (s.labels.get("component", ""), s.labels.get("node", ""),
                   s.labels.get("reason", ""))
            if all(key) and _usable(s.value):
                base_comp[key] = s.value
        base_node: dict[tuple[str, str], float] = {}
        for s in node:
            key2 = (s.labels.get("node", ""), s.labels.get("reason", ""))
            if all(key2) and _usable(s.value):
                base_node[key2] = s.value
        last_ts = max((s.value for s in last if _usable(s.value)), default=0.0)

        with self._lock:
            if self._restored:  # another thread won the race
                return self._restored_last_ts
            pending, self._pending = list(self._pending), deque(maxlen=self._pending.maxlen)
            counted_before = {_event_id(ev) for ev in pending if ev.ts <= last_ts}
            self._by_component, self._by_node = base_comp, base_node
            self._last_event_ts = last_ts
            self._restored = True
            self._restored_last_ts = last_ts
            for ev in pending:
                if ev.ts > last_ts:
                    self._count(ev, remember_recent=False)
            if counted_before:  # they are in the baseline: drop them from `recent` too
                self._recent = deque(
                    (e for e in self._recent if _event_id(e) not in counted_before),
                    maxlen=self._recent.maxlen,
                )
            return last_ts

    # -- under the lock -------------------------------------------------------------------

    def _count(self, ev: FailureEvent, *, remember_recent: bool = True) -> None:
        if ev.component:
            k = (ev.component, ev.node, ev.reason)
            self._by_component[k] = self._by_component.get(k, 0.0) + 1
        else:  # node-level only: component failures are summed by node in PromQL if wanted
            kn = (ev.node, ev.reason)
            self._by_node[kn] = self._by_node.get(kn, 0.0) + 1
        self._last_event_ts = max(self._last_event_ts, ev.ts)
        if remember_recent:
            self._recent.append(ev)

    def _remember(self, eid: _EventId) -> None:
        self._seen.add(eid)
        self._seen_order.append(eid)
        while len(self._seen_order) > self._dedupe_window:
            self._seen.discard(self._seen_order.popleft())


def _usable(v: float) -> bool:
    return math.isfinite(v) and v >= 0
