"""In-memory stand-ins for the sense ports, and a realistic sample world, for tests and demos.

They do no I/O. Each fake answers from what the test put in it; a queued exception is raised
instead of answering, so a test can make any stage fail on any refresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from preshift.assess import Assessor
from preshift.config import Config, parse_config
from preshift.model import FailureEvent, Footprint, Node, NodeLabels, Replica
from preshift.sense.ports import FailureCounts, InventoryResult, SeriesKey, SignalStats

from .snapshot import Snapshot

SAMPLE_NODES = (("n1", "r1", "dc1"), ("n2", "r2", "dc1"), ("n3", "r3", "dc2"))


def sample_config(**overrides: Any) -> Config:
    """Three nodes on two sites, two declared services, the default signals."""
    raw: dict[str, Any] = {
        "nodes": [
            {"name": n, "url": f"unix:///nonexistent/{n}.sock",
             "labels": {"host": f"h-{n}", "rack": rack, "site": site}}
            for n, rack, site in SAMPLE_NODES
        ],
        "services": {"web": {"min_available": 2}, "db": {"stateful": True}},
        "refresh_interval": 15,
    }
    raw.update(overrides)
    return parse_config(raw, source="sample")


def sample_inventory(now: float, down: Iterable[str] = ()) -> InventoryResult:
    """web ×3 (n1, n2, an exited one on n3), db ×1 on n3, cache ×1 on n1; `down` unreachable."""
    down = set(down)
    nodes = tuple(
        Node(
            name=n, url=f"unix:///nonexistent/{n}.sock", labels=NodeLabels(f"h-{n}", rack, site),
            reachable=n not in down, engine_id=f"ENGINE-{n.upper()}", hostname=f"h-{n}",
            error="cannot connect to the Docker engine: connection refused" if n in down else None,
        )
        for n, rack, site in SAMPLE_NODES
    )
    specs = [
        ("web-1", "web", "n1", "running", "healthy"),
        ("web-2", "web", "n2", "running", "healthy"),
        ("web-3", "web", "n3", "exited", None),
        ("db-1", "db", "n3", "running", None),
        ("cache-1", "cache", "n1", "running", "starting"),
    ]
    replicas = tuple(
        Replica(
            container_id=f"{i:064x}", name=name, component=comp, node=node, state=state,
            image="hpsbox:latest", health=health,
            labels=MappingProxyType({"preshift.service": comp}),
        )
        for i, (name, comp, node, state, health) in enumerate(specs, start=1)
    )
    footprint = Footprint(now, nodes, replicas, stale_nodes=frozenset(down))
    errors = {n.name: n.error for n in nodes if n.error}
    return InventoryResult(footprint=footprint, errors=errors)


def sample_failures(now: float) -> FailureCounts:
    event = FailureEvent(ts=now - 60, reason="oom", node="n2", component="web", replica="web-2")
    return FailureCounts(
        by_component={("web", "n2", "oom"): 2.0, ("web", "n3", "exit_nonzero"): 1.0},
        by_node={("n2", "unreachable"): 1.0},
        last_event_ts=event.ts,
        recent=(event,),
    )


class _Scripted:
    """Answers with the last value given; an exception queued with fail() is raised once."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0
        self._failures: deque[BaseException] = deque()

    def fail(self, *excs: BaseException) -> None:
        self._failures.extend(excs)

    def _answer(self) -> Any:
        self.calls += 1
        if self._failures:
            raise self._failures.popleft()
        return self.value


class FakeInventory(_Scripted):
    def read(self) -> InventoryResult:
        return self._answer()


class FakeSignals(_Scripted):
    """`value` is the SignalStats to return; `held` the series() mapping."""

    def __init__(
        self, value: SignalStats, held: Mapping[SeriesKey, tuple[np.ndarray, np.ndarray]]
    ) -> None:
        super().__init__(value)
        self.held = held

    def refresh(self, now: float) -> SignalStats:
        return self._answer()

    def series(self) -> Mapping[SeriesKey, tuple[np.ndarray, np.ndarray]]:
        return self.held


class FakeFailures(_Scripted):
    def counts(self) -> FailureCounts:
        return self._answer()


class FakeWatcher:
    """Records reachability reports."""

    def __init__(self) -> None:
        self.marked: list[str] = []  # unreachable
        self.back: list[str] = []  # reachable

    def mark_unreachable(self, node: str, detail: str = "") -> None:
        self.marked.append(node)

    def mark_reachable(self, node: str) -> None:
        self.back.append(node)


def sample_signals(now: float, points: int = 30) -> FakeSignals:
    """node_load and temperature on every node, memory_pressure of two containers, `points`
    points each, a minute apart. n1's temperature climbs toward its limit (85 °C): it is the
    risky node, so its replicas score lower and the plan moves them."""
    ts = np.arange(points, dtype=float) * 60 + (now - points * 60)
    held: dict[SeriesKey, tuple[np.ndarray, np.ndarray]] = {
        ("node_load", n): (ts, np.full(points, 0.5)) for n, _, _ in SAMPLE_NODES
    }
    wobble = 0.3 * np.sin(np.arange(points))
    for n, _, _ in SAMPLE_NODES:
        held[("temperature", n)] = (ts, 50.0 + wobble)
    held[("temperature", "n1")] = (ts, 84.0 - 0.8 * np.arange(points)[::-1] + wobble)
    held[("memory_pressure", "web-1")] = (ts, np.full(points, 0.4))
    held[("memory_pressure", "db-1")] = (ts, np.full(points, 0.7))
    stats = SignalStats(series=len(held), points=len(held) * points, fetched=len(held))
    return FakeSignals(stats, held)


def sample_snapshot(now: float, down: Iterable[str] = ("n3",)) -> Snapshot:
    """The second refresh of the sample world (so counters have moved), `down` unreachable."""
    from .refresh import RefreshLoop

    loop = RefreshLoop(
        sample_config(),
        FakeInventory(sample_inventory(now, down=down)),
        sample_signals(now),
        FakeFailures(sample_failures(now)),
        clock=lambda: now,
        assessor=sample_assessor(sample_config()),
    )
    loop.refresh_once()
    return loop.refresh_once()


def sample_assessor(config: Config, **options: Any) -> Assessor:
    """An Assessor that never imports statsforecast: every series keeps the fallback model
    (fit budget 0), which is what every series has until its first fit anyway."""
    return Assessor(config, **{"fit_budget_per_refresh": 0, **options})
