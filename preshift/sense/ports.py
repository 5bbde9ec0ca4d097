"""What the refresh loop needs from the world, as small protocols (ports).

Adapters: `docker_engine.EngineInventory` (Inventory), `events.FailureWatcher` feeding a
`failures.FailureLedger` (FailureSource), `prometheus.PrometheusClient` (MetricsSource) and
`signals.SignalHistory` (SignalSource). The exporter's refresh loop is the only place where
they meet the pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..model import FailureEvent, Footprint


@dataclass(frozen=True, slots=True)
class InventoryResult:
    """A footprint plus what went wrong while reading it (per node, for metrics)."""

    footprint: Footprint
    errors: Mapping[str, str] = field(default_factory=dict)  # node -> message
    #: sources other than a node that could not be read this time (e.g. "swarm" -> message);
    #: what they give is kept from their last good read
    source_errors: Mapping[str, str] = field(default_factory=dict)
    #: component -> intended replica count when the inventory knows it (Swarm: the services'
    #: spec replicas, scale-up spares left out); None: the assessor counts running replicas
    intended: Mapping[str, int] | None = None


class Inventory(Protocol):
    def read(self) -> InventoryResult:
        """Read every node concurrently; an unreachable node never raises, it is reported."""
        ...


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class RangeSeries:
    labels: Mapping[str, str]
    timestamps: np.ndarray  # float64 seconds, increasing
    values: np.ndarray  # float64


class MetricsSource(Protocol):
    def query(self, promql: str, at: float | None = None) -> list[Sample]: ...

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[RangeSeries]: ...

    def is_online(self) -> bool: ...


SeriesKey = tuple[str, str]  # (signal name, entity: node name or container name)


@dataclass(frozen=True, slots=True)
class SignalStats:
    """What one signal refresh did, for metrics."""

    series: int
    points: int  # points held after the refresh
    fetched: int  # points fetched by this refresh
    errors: Mapping[str, str] = field(default_factory=dict)  # signal -> message


class SignalSource(Protocol):
    def refresh(self, now: float) -> SignalStats:
        """Fetch only the points newer than what is held; never refetch."""
        ...

    def series(self) -> Mapping[SeriesKey, tuple[np.ndarray, np.ndarray]]:
        """Read-only view of (timestamps, values) per key."""
        ...


@dataclass(frozen=True, slots=True)
class FailureCounts:
    """Cumulative failure counters, as exported (monotonic across exporter restarts)."""

    by_component: Mapping[tuple[str, str, str], float]  # (component, node, reason) -> count
    by_node: Mapping[tuple[str, str], float]  # (node, reason) -> count
    last_event_ts: float  # 0.0 when none seen
    recent: Sequence[FailureEvent] = ()  # bounded, newest last


class FailureSource(Protocol):
    def counts(self) -> FailureCounts: ...
