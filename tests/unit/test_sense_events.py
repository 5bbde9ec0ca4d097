"""Failure classification (pure) and the watcher's resume logic (with an in-memory engine)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from preshift.config import NodeConfig
from preshift.sense.events import FailureClassifier, FailureWatcher, classify, event_time
from preshift.sense.failures import FailureLedger

T0 = 1_700_000_000


def dev(action: str, t: float, cid: str = "c1", name: str = "web-1", service: str | None = "web",
        **attrs: str) -> dict[str, Any]:
    """A decoded Docker container event as docker-py yields it."""
    a = {"name": name, "image": "preshift-box:latest", **attrs}
    if service is not None:
        a["preshift.service"] = service
    nano = round(t * 1e9)
    return {"status": action, "id": cid, "from": "preshift-box:latest", "Type": "container",
            "Action": action, "Actor": {"ID": cid, "Attributes": a}, "scope": "local",
            "time": nano // 10**9, "timeNano": nano}


def reasons(events: list[dict[str, Any]], **kw: Any) -> list[str]:
    return [f.reason for f in classify(events, "n1", **kw)]


def test_nonzero_exit_is_a_failure_with_its_details() -> None:
    (f,) = classify([dev("die", T0 + 0.123456789, exitCode="3")], "n1")
    assert (f.reason, f.node, f.component, f.replica, f.detail) == (
        "exit_nonzero", "n1", "web", "web-1", "exit code 3")
    assert f.ts == pytest.approx(T0 + 0.123456789, abs=1e-6)


def test_clean_exit_and_other_actions_are_not_failures() -> None:
    assert reasons([dev("create", T0), dev("start", T0), dev("die", T0 + 1, exitCode="0"),
                    dev("health_status: healthy", T0 + 2), dev("stop", T0 + 3)]) == []


def test_requested_stop_is_not_a_failure() -> None:
    # docker stop: kill (SIGTERM) -> die 143 -> stop; after the grace period kill (SIGKILL) too
    events = [dev("kill", T0, signal="15"), dev("kill", T0 + 10, signal="9"),
              dev("die", T0 + 10.01, exitCode="137"), dev("stop", T0 + 10.02)]
    assert reasons(events) == []


def test_an_old_or_consumed_kill_does_not_hide_a_later_failure() -> None:
    assert reasons([dev("kill", T0), dev("die", T0 + 61, exitCode="1")]) == ["exit_nonzero"]
    assert reasons([dev("kill", T0), dev("die", T0 + 1, exitCode="143"),
                    dev("start", T0 + 2), dev("die", T0 + 3, exitCode="1")]) == ["exit_nonzero"]
    assert reasons([dev("kill", T0), dev("start", T0 + 1),
                    dev("die", T0 + 2, exitCode="1")]) == ["exit_nonzero"]
    # a kill on another container does not matter
    assert reasons([dev("kill", T0, cid="other"), dev("die", T0 + 1, exitCode="2")]) == [
        "exit_nonzero"]


def test_oom_counts_once() -> None:
    assert reasons([dev("oom", T0), dev("die", T0 + 0.01, exitCode="137")]) == ["oom"]
    # one incident as the testbed's dockerd reports it: a burst of oom events, then die
    burst = [dev("oom", T0 + i * 0.006) for i in range(25)]
    assert reasons([*burst, dev("die", T0 + 0.17, exitCode="137")]) == ["oom"]
    # a later incident of the same container after a restart is a new failure
    again = [dev("start", T0 + 1), dev("oom", T0 + 2), dev("die", T0 + 2.1, exitCode="137")]
    assert reasons([*burst, dev("die", T0 + 0.17, exitCode="137"), *again]) == ["oom", "oom"]


def test_unhealthy() -> None:
    assert reasons([dev("health_status: unhealthy", T0)]) == ["unhealthy"]
    assert reasons([dev("kill", T0), dev("health_status: unhealthy", T0 + 1)]) == []


def test_restart_loop_once_per_window() -> None:
    fails = [dev("die", T0 + i * 20, exitCode="3") for i in range(6)]
    assert reasons(fails) == ["exit_nonzero"] * 3 + ["restart_loop"] + ["exit_nonzero"] * 3
    (loop,) = [f for f in classify(fails, "n1") if f.reason == "restart_loop"]
    assert loop.ts == fails[2]["timeNano"] / 1e9 and "3 failures" in loop.detail
    later = [*fails, *(dev("die", T0 + 400 + i, exitCode="3") for i in range(3))]
    assert reasons(later).count("restart_loop") == 2  # a new window, a new loop


def test_failures_spread_out_or_on_different_containers_are_no_loop() -> None:
    spread = [dev("die", T0 + i * 200, exitCode="3") for i in range(5)]
    assert "restart_loop" not in reasons(spread)
    several = [dev("die", T0 + i, cid=f"c{i}", exitCode="3") for i in range(5)]
    assert "restart_loop" not in reasons(several)


def test_loop_counts_every_kind_of_failure() -> None:
    events = [dev("health_status: unhealthy", T0), dev("oom", T0 + 5),
              dev("die", T0 + 5.1, exitCode="137"), dev("die", T0 + 9, exitCode="1")]
    assert reasons(events) == ["unhealthy", "oom", "exit_nonzero", "restart_loop"]


def test_foreign_events_are_ignored() -> None:
    assert reasons([dev("die", T0, service=None, exitCode="1")]) == []
    image_event = {**dev("die", T0, exitCode="1"), "Type": "image"}
    assert reasons([image_event]) == []


def test_destroy_forgets_the_container() -> None:
    c = FailureClassifier("n1")
    c.feed(dev("kill", T0))
    c.feed(dev("destroy", T0 + 1))
    assert [f.reason for f in c.feed(dev("die", T0 + 2, exitCode="1"))] == ["exit_nonzero"]


def test_label_prefix_and_event_time() -> None:
    e = dev("die", T0, service=None, exitCode="1", **{"acme.service": "api"})
    assert [f.component for f in classify([e], "n1", label_prefix="acme")] == ["api"]
    assert event_time({"time": T0}) == T0


# -- the watcher, against an in-memory engine -----------------------------------------------

_END = object()


class FakeStream:
    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> Any:
        item = self.q.get(timeout=10)
        if item is _END:
            raise StopIteration
        return item

    def close(self) -> None:
        self.q.put(_END)


class FakeEngine:
    """Keeps every event like dockerd's buffer and serves `since` replays."""

    def __init__(self) -> None:
        self.up = True
        self.log: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self.since: list[str] = []
        self.lock = threading.Lock()

    def factory(self, url: str, timeout: float) -> Any:
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        engine = self

        class Client:
            def events(self, decode: bool, since: str, filters: dict[str, str]) -> FakeStream:
                assert decode and filters == {"type": "container", "label": "preshift.service"}
                s, _, n = since.partition(".")
                since_nano = int(s) * 10**9 + int(n)
                stream = FakeStream()
                with engine.lock:
                    engine.since.append(since)
                    for e in engine.log:
                        if e["timeNano"] >= since_nano:  # inclusive, like dockerd
                            stream.q.put(e)
                    engine.streams.append(stream)
                return stream

            def close(self) -> None:
                pass

        return Client()

    def emit(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(event)
            streams = list(self.streams) if self.up else []
        for s in streams:
            s.q.put(event)

    def stop(self) -> None:
        with self.lock:
            self.up = False
            streams, self.streams = self.streams, []
        for s in streams:
            s.close()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def count(led: FailureLedger, reason: str, node: str = "n1") -> float:
    c = led.counts()
    if reason == "unreachable":
        return c.by_node.get((node, reason), 0)
    return sum(v for (_, n, r), v in c.by_component.items() if r == reason and n == node)


def test_watcher_resumes_after_an_outage_without_loss_or_double_count() -> None:
    engine, led = FakeEngine(), FailureLedger()
    now = time.time()
    w = FailureWatcher([NodeConfig(name="n1", url="unix:///fake.sock")], led,
                       client_factory=engine.factory, since=now - 5, min_backoff=0.05,
                       max_backoff=0.1)
    w.start()
    try:
        wait_for(lambda: w.reachable()["n1"] is True)
        engine.emit(dev("die", now + 1, cid="a", exitCode="3"))
        wait_for(lambda: count(led, "exit_nonzero") == 1)
        engine.stop()  # the stream ends, reconnecting fails: one outage
        wait_for(lambda: count(led, "unreachable") == 1)
        engine.log.append(dev("die", now + 2, cid="b", exitCode="4"))  # while we were away
        time.sleep(0.3)  # several failed reconnects: still one outage
        assert count(led, "unreachable") == 1
        engine.up = True
        wait_for(lambda: count(led, "exit_nonzero") == 2)
        assert w.reachable()["n1"] is True
        nano = round((now + 1) * 1e9) - 10**9  # resumed from a second before the last event
        assert engine.since[-1] == f"{nano // 10**9}.{nano % 10**9:09d}"
        time.sleep(0.1)
        assert count(led, "exit_nonzero") == 2  # the boundary event was not counted again
        engine.stop()
        wait_for(lambda: count(led, "unreachable") == 2)  # a second outage counts again
    finally:
        t0 = time.monotonic()
        w.stop()
        assert time.monotonic() - t0 < 3 and not w.alive()


def test_mark_unreachable_counts_once_per_outage_and_engine_down_at_start_does_not() -> None:
    engine, led = FakeEngine(), FailureLedger()
    engine.up = False
    w = FailureWatcher([NodeConfig(name="n1", url="unix:///fake.sock")], led,
                       client_factory=engine.factory, min_backoff=0.05, max_backoff=0.1)
    w.start()
    try:
        wait_for(lambda: w.reachable()["n1"] is False)
        w.mark_unreachable("n1", "timeout")
        assert count(led, "unreachable") == 0  # never seen reachable: not an outage of ours
        w.mark_reachable("n1")
        w.mark_unreachable("n1", "timeout")
        w.mark_unreachable("n1", "timeout")
        assert count(led, "unreachable") == 1
        (event,) = led.counts().recent
        assert event.detail == "timeout" and event.component == ""
        w.mark_unreachable("unknown-node")  # ignored
    finally:
        w.stop()
    assert not w.alive()


def test_events_stamped_out_of_order_are_all_counted() -> None:
    engine, led = FakeEngine(), FailureLedger()
    now = time.time()
    w = FailureWatcher([NodeConfig(name="n1", url="unix:///fake.sock")], led,
                       client_factory=engine.factory, since=now - 5, min_backoff=0.05)
    w.start()
    try:
        wait_for(lambda: w.reachable()["n1"] is True)
        engine.emit(dev("die", now + 1.0, cid="a", exitCode="3"))
        engine.emit(dev("die", now + 0.9999, cid="b", exitCode="3"))  # stamped earlier
        wait_for(lambda: count(led, "exit_nonzero") == 2)
        w.mark_unreachable("n1")  # reconnect: both are replayed, neither counts again
        wait_for(lambda: len(engine.since) == 2)
        time.sleep(0.2)
        assert count(led, "exit_nonzero") == 2
    finally:
        w.stop()
