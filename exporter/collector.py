"""A prometheus_client collector that serves families built elsewhere (habits 1-2).

The refresh loop calls `update(snapshot)`, which builds the families once and swaps one
reference. `collect()` hands that list back: no lock, no maths, no I/O on a scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric

from .metrics import empty_families, families_from, initial_families
from .snapshot import Snapshot


class SnapshotCollector:
    """Serves the families of the latest snapshot."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        # One attribute, replaced whole: a scrape sees either the old list or the new one.
        self._families: list[Metric] = initial_families(interval)

    def update(self, snapshot: Snapshot) -> None:
        """Build the families of `snapshot` (in the caller's thread) and publish them."""
        self._families = families_from(snapshot)

    def collect(self) -> Iterable[Metric]:
        return self._families

    def describe(self) -> Iterable[Metric]:
        """Every family of the metric table, without samples (so registration never collects)."""
        return empty_families(self._interval)


def build_registry(collector: SnapshotCollector, *, runtime: bool = True) -> CollectorRegistry:
    """A fresh registry (never the global one) with our collector and, when `runtime`, the
    client library's process and Python platform collectors."""
    registry = CollectorRegistry()
    registry.register(collector)
    if runtime:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry
