"""Wire the exporter's parts together: refresh loop → collector → registry → WSGI app.

One function for the real service (`exporter.cli`), the tests and benchmarks (`exporter.testing`
builds it in-process over fake sources); it starts nothing: call `service.loop.refresh_once()`
or `service.loop.start()`, and serve `service.app` with `ExporterServer` or call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from preshift.assess import Assessor
from preshift.config import Config
from preshift.sense.ports import FailureSource, Inventory, SignalSource

from .collector import SnapshotCollector, build_registries
from .refresh import HistoryLoader, ReachabilitySink, RefreshLoop
from .server import WSGIApp, make_app


@dataclass(frozen=True, slots=True)
class Service:
    """The exporter's parts, wired but not started."""

    loop: RefreshLoop
    collector: SnapshotCollector
    registry: CollectorRegistry
    app: WSGIApp


def build_service(
    config: Config,
    inventory: Inventory,
    signals: SignalSource,
    failures: FailureSource,
    *,
    assessor: Assessor | None = None,
    watcher: ReachabilitySink | None = None,
    restore: Callable[[], Any] | None = None,
    history: HistoryLoader | None = None,
    clock: Callable[[], float] = time.time,
    runtime: bool = True,
) -> Service:
    """The exporter over the given sources. `runtime` adds the process and Python metrics."""
    collector = SnapshotCollector(config.refresh_interval)
    loop = RefreshLoop(
        config, inventory, signals, failures, clock=clock, on_snapshot=collector.update,
        watcher=watcher, restore=restore, assessor=assessor, history=history,
    )
    registry, alone = build_registries(collector, runtime=runtime)
    return Service(loop, collector, registry, make_app(registry, loop.current, collector, alone))
