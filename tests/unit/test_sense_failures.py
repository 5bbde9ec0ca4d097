"""FailureLedger: counting, restore ordering, monotonic counters, no double counting."""

from __future__ import annotations

import threading

import pytest

from preshift.errors import SourceError
from preshift.model import FailureEvent
from preshift.sense.failures import FailureLedger
from preshift.sense.ports import RangeSeries, Sample


class PromStub:
    """Answers the three restore queries with what the previous exporter exported."""

    def __init__(self, comp: dict, node: dict, last: float | None, down: bool = False) -> None:
        self.comp, self.node, self.last, self.down = comp, node, last, down
        self.queries: list[str] = []

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        self.queries.append(promql)
        if self.down:
            raise SourceError("prometheus", "http://127.0.0.1:9: connection refused")
        if "preshift_component_failures_total" in promql:
            return [Sample({"component": c, "node": n, "reason": r}, v)
                    for (c, n, r), v in self.comp.items()]
        if "preshift_node_failures_total" in promql:
            return [Sample({"node": n, "reason": r}, v) for (n, r), v in self.node.items()]
        return [] if self.last is None else [Sample({}, self.last)]

    def query_range(self, promql: str, start: float, end: float, step: float
                    ) -> list[RangeSeries]:
        raise NotImplementedError

    def is_online(self) -> bool:
        return not self.down


def ev(ts: float, reason: str = "exit_nonzero", node: str = "n1", component: str = "web",
       replica: str = "web-1") -> FailureEvent:
    return FailureEvent(ts=ts, reason=reason, node=node, component=component,  # type: ignore[arg-type]
                        replica=replica)


def test_record_and_counts() -> None:
    led = FailureLedger(history_recent=2)
    assert led.record(ev(10))
    assert led.record(ev(11, "oom"))
    assert led.record(ev(12, "unreachable", node="n2", component="", replica=""))
    c = led.counts()
    assert c.by_component == {("web", "n1", "exit_nonzero"): 1, ("web", "n1", "oom"): 1}
    assert c.by_node == {("n2", "unreachable"): 1}
    assert c.last_event_ts == 12
    assert [e.ts for e in c.recent] == [11, 12]  # bounded, newest last
    with pytest.raises(TypeError):
        c.by_component[("x", "y", "z")] = 5  # type: ignore[index]


def test_same_event_twice_counts_once() -> None:
    led = FailureLedger()
    assert led.record(ev(10)) and not led.record(ev(10))
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 1


def test_restore_queries_and_baseline() -> None:
    prom = PromStub({("web", "n1", "exit_nonzero"): 7, ("db", "n2", "oom"): 2},
                    {("n3", "unreachable"): 4}, last=1000.5)
    led = FailureLedger()
    assert led.restore(prom, lookback=3600) == 1000.5
    assert prom.queries == [
        "max by (component, node, reason) "
        "(last_over_time(preshift_component_failures_total[3600s]))",
        "max by (node, reason) (last_over_time(preshift_node_failures_total[3600s]))",
        "max(last_over_time(preshift_failures_last_event_timestamp_seconds[3600s]))",
    ]
    c = led.counts()
    assert c.by_component == {("web", "n1", "exit_nonzero"): 7, ("db", "n2", "oom"): 2}
    assert c.by_node == {("n3", "unreachable"): 4}
    assert c.last_event_ts == 1000.5 and led.restored
    led.record(ev(1001))
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 8  # on top: monotonic


def test_replayed_events_after_restore_do_not_count_twice() -> None:
    led = FailureLedger()
    led.restore(PromStub({("web", "n1", "exit_nonzero"): 3}, {}, last=1000.0), 600)
    assert not led.record(ev(990))  # replayed from Docker: already in the baseline
    assert not led.record(ev(1000.0))
    assert led.record(ev(1000.001))
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 4


def test_late_restore_adds_new_events_on_top_and_drops_old_ones() -> None:
    led = FailureLedger()
    prom = PromStub({("web", "n1", "exit_nonzero"): 5}, {("n2", "unreachable"): 1}, last=1000.0)
    prom.down = True
    with pytest.raises(SourceError, match="connection refused"):
        led.restore(prom, 600)
    assert not led.restored
    led.record(ev(995))  # before the old process died: in the baseline already
    led.record(ev(1005))  # new since the restart
    led.record(ev(1006, "unreachable", node="n2", component="", replica=""))
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 2  # not restored yet
    prom.down = False
    assert led.restore(prom, 600) == 1000.0
    c = led.counts()
    assert c.by_component == {("web", "n1", "exit_nonzero"): 5 + 1}
    assert c.by_node == {("n2", "unreachable"): 1 + 1}
    assert c.last_event_ts == 1006
    assert [e.ts for e in c.recent] == [1005, 1006]  # the baseline event is not listed twice
    assert not led.record(ev(1005))  # the watcher replays it again: still once
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 6


def test_restore_once_and_without_data() -> None:
    led = FailureLedger()
    prom = PromStub({}, {}, last=None)
    assert led.restore(prom, 60) == 0.0
    led.record(ev(5))
    prom.comp = {("web", "n1", "exit_nonzero"): 100}
    assert led.restore(prom, 60) == 0.0  # a second call changes nothing
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 1
    assert len(prom.queries) == 3


def test_restore_ignores_unusable_values() -> None:
    prom = PromStub({("web", "n1", "oom"): float("nan"), ("", "n1", "oom"): 3}, {},
                    last=float("nan"))
    led = FailureLedger()
    assert led.restore(prom, 60) == 0.0
    assert led.counts().by_component == {}


def test_concurrent_records_are_all_counted() -> None:
    led = FailureLedger()

    def work(k: int) -> None:
        for i in range(500):
            led.record(ev(k * 10_000 + i, replica=f"r{k}"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert led.counts().by_component[("web", "n1", "exit_nonzero")] == 2000
