"""EngineInventory and FailureWatcher against real Docker engines (the testbed: three dockerd
in network namespaces, prefix "ts", subnet 198.18.11, so other suites can run alongside)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from preshift.config import NodeConfig
from preshift.config import NodeLabels as CfgLabels
from preshift.sense.docker_engine import EngineInventory
from preshift.sense.events import FailureWatcher
from preshift.sense.failures import FailureLedger
from preshift.testbed import IMAGE, Testbed, TestbedSpec

from .stack import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    # this module needs no Prometheus; the port is still ours alone
    tb = Testbed(TestbedSpec(prefix="ts", subnet="198.18.11", prometheus_port=19290,
                             prometheus=False))
    tb.up()
    try:
        yield tb
    finally:
        tb.down()


@pytest.fixture
def tb(testbed: Testbed) -> Testbed:
    testbed.reset()  # engines up, no containers
    return testbed


def node_configs(tb: Testbed) -> list[NodeConfig]:
    return [NodeConfig(name=n.name, url=n.socket_url) for n in tb.nodes]


def run(tb: Testbed, node: str, name: str, script: str, service: str | None,
        **kw: Any) -> Any:
    labels = {"preshift.service": service} if service else {}
    return tb.client(node).containers.run(IMAGE, ["sh", "-c", script], detach=True, init=True,
                                          name=name, labels=labels, **kw)


# -- inventory ------------------------------------------------------------------------------

def test_inventory_finds_labelled_containers_and_survives_an_engine_outage(tb: Testbed) -> None:
    run(tb, "n1", "web-1", "sleep 600", "web",
        healthcheck={"test": ["CMD", "true"], "interval": 200_000_000})
    run(tb, "n2", "web-2", "sleep 600", "web")
    run(tb, "n2", "db-1", "exit 3", "db")
    run(tb, "n3", "unmanaged", "sleep 600", None)
    nodes = node_configs(tb)
    nodes[0] = NodeConfig(name="n1", url=nodes[0].url, labels=CfgLabels(rack="cfg-rack"))
    inv = EngineInventory(nodes, timeout=3)
    try:
        def healthy() -> Any:
            res = inv.read()
            web1 = [r for r in res.footprint.replicas if r.name == "web-1"]
            db1 = [r for r in res.footprint.replicas if r.name == "db-1"]
            return res if web1 and web1[0].health == "healthy" and db1 and \
                db1[0].state == "exited" else None

        res = wait_for(healthy, 20, "web-1 healthy and db-1 exited")
        fp = res.footprint
        assert not res.errors and fp.stale_nodes == frozenset()
        placed = {(r.name, r.component, r.node, r.state) for r in fp.replicas}
        assert placed == {("web-1", "web", "n1", "running"), ("web-2", "web", "n2", "running"),
                          ("db-1", "db", "n2", "exited")}  # the unlabelled one is not ours
        n1, n2, n3 = fp.nodes
        assert (n1.labels.host, n1.labels.rack, n1.labels.site) == ("n1", "cfg-rack", "dc1")
        assert (n2.labels.rack, n2.labels.site) == ("r2", "dc1")  # from the engine labels
        assert (n3.labels.rack, n3.labels.site) == ("r3", "dc2")
        assert all(n.reachable and n.engine_id for n in fp.nodes)
        assert n1.hostname == "n1"
        assert fp.running_counts()[("web", "n1")] == 1

        tb.stop_engine("n2")
        t0 = time.monotonic()
        res = inv.read()
        assert time.monotonic() - t0 < 3  # a missing socket fails fast
        fp = res.footprint
        assert set(res.errors) == {"n2"}
        assert "socket not found" in res.errors["n2"] or "refused" in res.errors["n2"]
        down = fp.node("n2")
        assert down is not None and not down.reachable and down.error == res.errors["n2"]
        assert down.labels.rack == "r2"  # as last seen
        assert fp.stale_nodes == {"n2"}
        assert {r.name for r in fp.replicas if r.node == "n2"} == {"web-2", "db-1"}  # kept
        assert fp.node("n1").reachable and fp.node("n3").reachable  # type: ignore[union-attr]

        tb.start_engine("n2")
        def readable() -> Any:
            r = inv.read()
            return None if r.errors else r

        res = wait_for(readable, 30, "n2 readable again")
        assert res.footprint.stale_nodes == frozenset()
        assert {r.name for r in res.footprint.replicas if r.node == "n2"} == {"web-2", "db-1"}
    finally:
        inv.close()


# -- failure watcher ------------------------------------------------------------------------

def failures(ledger: FailureLedger, component: str, reason: str) -> float:
    return sum(v for (c, _, r), v in ledger.counts().by_component.items()
               if c == component and r == reason)


@pytest.fixture
def watched(tb: Testbed) -> Iterator[tuple[Testbed, FailureLedger, FailureWatcher]]:
    ledger = FailureLedger()
    watcher = FailureWatcher(node_configs(tb), ledger, timeout=3, min_backoff=0.2,
                             max_backoff=1.0)
    watcher.start()
    try:
        wait_for(lambda: all(watcher.reachable().values()), 15, "every stream to open")
        yield tb, ledger, watcher
    finally:
        t0 = time.monotonic()
        watcher.stop()
        assert time.monotonic() - t0 < 5 and not watcher.alive()


def test_exit_code_3_counts_once(watched: tuple[Testbed, FailureLedger, FailureWatcher]
                                 ) -> None:
    tb, ledger, _ = watched
    run(tb, "n1", "crashy-1", "sleep 0.5; exit 3", "crashy")
    wait_for(lambda: failures(ledger, "crashy", "exit_nonzero") == 1, 15, "the crash")
    (event,) = [e for e in ledger.counts().recent if e.component == "crashy"]
    assert (event.node, event.replica, event.detail) == ("n1", "crashy-1", "exit code 3")
    assert abs(event.ts - time.time()) < 30
    time.sleep(1)
    assert failures(ledger, "crashy", "exit_nonzero") == 1


def test_docker_stop_is_not_a_failure(watched: tuple[Testbed, FailureLedger, FailureWatcher]
                                      ) -> None:
    tb, ledger, _ = watched
    c = run(tb, "n2", "stopper-1", "sleep 600", "stopper")
    wait_for(lambda: tb.client("n2").containers.get(c.id).status == "running", 10, "running")
    c.stop(timeout=5)
    c.reload()
    assert c.attrs["State"]["ExitCode"] != 0  # SIGTERM: a non-zero exit, yet requested
    # the stream is ordered: once a later crash on n2 is counted, the stop was handled
    run(tb, "n2", "sentinel-1", "exit 5", "sentinel")
    wait_for(lambda: failures(ledger, "sentinel", "exit_nonzero") == 1, 15, "the sentinel")
    assert failures(ledger, "stopper", "exit_nonzero") == 0
    assert not [e for e in ledger.counts().recent if e.component == "stopper"]


def test_restart_policy_loop_is_a_restart_loop(
    watched: tuple[Testbed, FailureLedger, FailureWatcher]
) -> None:
    tb, ledger, _ = watched
    run(tb, "n3", "looper-1", "exit 2", "looper",
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 4})
    wait_for(lambda: failures(ledger, "looper", "restart_loop") == 1, 30, "a restart loop")
    assert failures(ledger, "looper", "exit_nonzero") >= 3
    wait_for(lambda: failures(ledger, "looper", "exit_nonzero") == 5, 30, "all 5 runs")
    time.sleep(0.5)
    assert failures(ledger, "looper", "restart_loop") == 1  # once per loop window
    loops = [e for e in ledger.counts().recent if e.reason == "restart_loop"]
    assert loops[0].node == "n3" and loops[0].replica == "looper-1"


def test_oom_and_unhealthy(watched: tuple[Testbed, FailureLedger, FailureWatcher]) -> None:
    tb, ledger, _ = watched
    # tail holds its whole (newline-free) input in memory: killed at the 16 MiB limit;
    # dockerd reports a burst of `oom` events and then `die` 137, all one failure
    run(tb, "n1", "hog-1", "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        "hog", mem_limit="16m", memswap_limit="16m")
    run(tb, "n2", "sick-1", "sleep 600", "sick",
        healthcheck={"test": ["CMD", "false"], "interval": 200_000_000, "retries": 1})
    # generous: on a loaded 2-core machine filling 16 MiB through a pipe can take a while
    deadline = time.monotonic() + 60
    while failures(ledger, "hog", "oom") != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert failures(ledger, "hog", "oom") == 1, (
        ledger.counts().recent[-10:], tb.client("n1").containers.get("hog-1").attrs["State"]
    )
    wait_for(lambda: failures(ledger, "sick", "unhealthy") == 1, 20, "the failing check")
    wait_for(lambda: tb.client("n1").containers.get("hog-1").status == "exited", 10, "hog-1")
    run(tb, "n1", "sentinel-1", "exit 5", "sentinel")  # ordered stream: all of hog-1 is seen
    wait_for(lambda: failures(ledger, "sentinel", "exit_nonzero") == 1, 15, "the sentinel")
    assert failures(ledger, "hog", "oom") == 1
    assert failures(ledger, "hog", "exit_nonzero") == 0
    assert failures(ledger, "hog", "restart_loop") == 0
    assert failures(ledger, "sick", "unhealthy") == 1  # reported on the change only


def test_reconnect_resumes_without_loss_or_double_count(
    watched: tuple[Testbed, FailureLedger, FailureWatcher]
) -> None:
    tb, ledger, watcher = watched
    run(tb, "n1", "early-1", "exit 7", "early")
    wait_for(lambda: failures(ledger, "early", "exit_nonzero") == 1, 15, "the first crash")
    # the refresh loop reports n1 down: one outage, and the stream is re-opened from the
    # last event seen; a crash right now must arrive exactly once, the old one not again
    watcher.mark_unreachable("n1", "refresh loop: timeout")
    run(tb, "n1", "late-1", "exit 8", "late")
    wait_for(lambda: failures(ledger, "late", "exit_nonzero") == 1, 15, "the later crash")
    wait_for(lambda: watcher.reachable()["n1"] is True, 15, "the stream to reopen")
    time.sleep(0.5)
    assert failures(ledger, "early", "exit_nonzero") == 1
    assert ledger.counts().by_node == {("n1", "unreachable"): 1}


def test_engine_outage_is_one_unreachable_failure(
    watched: tuple[Testbed, FailureLedger, FailureWatcher]
) -> None:
    tb, ledger, watcher = watched
    tb.stop_engine("n3")
    wait_for(lambda: ledger.counts().by_node.get(("n3", "unreachable")) == 1, 15,
             "the outage to be seen")
    time.sleep(2)  # several failed reconnects
    assert ledger.counts().by_node.get(("n3", "unreachable")) == 1
    tb.start_engine("n3")
    wait_for(lambda: watcher.reachable()["n3"] is True, 30, "n3 to be followed again")
    run(tb, "n3", "after-1", "exit 4", "after")
    wait_for(lambda: failures(ledger, "after", "exit_nonzero") == 1, 15, "a crash after it")
    assert ledger.counts().by_node == {("n3", "unreachable"): 1}


def test_replay_from_since_with_a_restored_ledger(tb: Testbed) -> None:
    """An exporter restart: the new watcher replays the engine's events from `since`; the
    ledger counts only those after the restored last-event time."""
    before = time.time()
    run(tb, "n2", "old-1", "exit 3", "old")
    wait_for(lambda: tb.client("n2").containers.get("old-1").status == "exited", 10, "old-1")
    time.sleep(0.2)
    run(tb, "n2", "new-1", "exit 3", "new")
    wait_for(lambda: tb.client("n2").containers.get("new-1").status == "exited", 10, "new-1")
    old_die = next(e for e in tb.client("n2").events(
        since=int(before) - 1, until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "die", "container": "old-1"}))
    restored_last = old_die["timeNano"] / 1e9

    class Prom:  # what the previous exporter exported: old-1's crash and nothing after
        def query(self, promql: str, at: float | None = None) -> list[Any]:
            from preshift.sense.ports import Sample
            if "component_failures" in promql:
                return [Sample({"component": "old", "node": "n2", "reason": "exit_nonzero"}, 1)]
            if "last_event" in promql:
                return [Sample({}, restored_last)]
            return []

    ledger = FailureLedger()
    since = ledger.restore(Prom(), 3600)  # type: ignore[arg-type]
    watcher = FailureWatcher(node_configs(tb), ledger, since=since, timeout=3)
    watcher.start()
    try:
        wait_for(lambda: failures(ledger, "new", "exit_nonzero") == 1, 15, "the replay")
        time.sleep(0.5)
        assert failures(ledger, "old", "exit_nonzero") == 1  # restored, not counted again
    finally:
        watcher.stop()
