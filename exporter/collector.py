"""A prometheus_client collector over the latest snapshot, and its pre-rendered exposition.

The refresh loop calls `update(snapshot)`: it renders the snapshot once to the text format,
gzip-compressed, and swaps one reference. The HTTP server sends those bytes as they are (or
decompresses them on the way for a client that does not accept gzip), so a Prometheus scrape
does no maths, no formatting, no I/O and takes no lock (habits 1-2). Only the compressed text
is kept: at 10,000 components it is about 1.3 MB instead of 15 MB. The families have a few
100,000 samples there; as prometheus_client objects they would cost about a second and
100 MiB per refresh, so `collect()` builds them only when someone asks (an OpenMetrics-only
client, a `name[]` filter, tests), once per snapshot.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .exposition import render_gzip
from .metrics import empty_families, families_from, initial_families
from .snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Exposition:
    """Our families in the text format (version 0.0.4), rendered once per snapshot."""

    gzipped: bytes  # one gzip member; the server appends the runtime metrics as a second one
    size: int  # bytes once decompressed

    @property
    def text(self) -> bytes:
        return gzip.decompress(self.gzipped)


class _Fixed:
    """A registry-like view of a fixed list of families (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Published:
    """What one update published; `families` is filled on first use."""

    __slots__ = ("exposition", "families", "snapshot")

    def __init__(self, snapshot: Snapshot | None, exposition: Exposition,
                 families: list[Metric] | None) -> None:
        self.snapshot, self.exposition, self.families = snapshot, exposition, families


class SnapshotCollector:
    """Serves the latest snapshot: its exposition bytes, and its families on demand."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        families = initial_families(interval)
        text = generate_latest(_Fixed(families))  # type: ignore[arg-type]
        first = Exposition(gzip.compress(text, compresslevel=1, mtime=0), len(text))
        # One attribute, replaced whole: a reader sees the old snapshot or the new one.
        self._published = _Published(None, first, families)

    def update(self, snapshot: Snapshot) -> None:
        """Render `snapshot` (in the caller's thread) and publish it."""
        self._published = _Published(snapshot, Exposition(*render_gzip(snapshot)), None)

    def exposition(self) -> Exposition:
        """The pre-rendered text of the latest snapshot."""
        return self._published.exposition

    def collect(self) -> Iterable[Metric]:
        pub = self._published
        if pub.families is None:
            assert pub.snapshot is not None
            # Two first readers may both build them: the same content, so either list wins.
            pub.families = families_from(pub.snapshot)
        return pub.families

    def describe(self) -> Iterable[Metric]:
        """Every family of the metric table, without samples (so registration never collects)."""
        return empty_families(self._interval)


def runtime_collectors() -> list[Collector]:
    """The client library's process and Python platform collectors, unregistered."""
    return [ProcessCollector(registry=None), PlatformCollector(registry=None)]


def build_registries(
    collector: SnapshotCollector, *, runtime: bool = True
) -> tuple[CollectorRegistry, CollectorRegistry]:
    """Two fresh registries (never the global one): everything (our collector and, when
    `runtime`, the process and platform collectors), and the runtime collectors alone, which
    the server renders on each scrape after our pre-rendered text."""
    full, alone = CollectorRegistry(), CollectorRegistry()
    full.register(collector)
    if runtime:
        for c in runtime_collectors():
            full.register(c)
            alone.register(c)
    return full, alone


def build_registry(collector: SnapshotCollector, *, runtime: bool = True) -> CollectorRegistry:
    """A fresh registry with our collector and, when `runtime`, the runtime collectors."""
    return build_registries(collector, runtime=runtime)[0]
