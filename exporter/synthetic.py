"""A large synthetic world for benchmarks: the whole exporter in-process over fake sources.

    world = synthetic_world(components=10_000, nodes=20)
    fitter = ProcessFitter()                    # as `preshift exporter` does (fitworker.py)
    service = world.service(fitter=fitter)      # refresh loop + collector + registry + WSGI app
    snap = service.loop.refresh_once(); world.clock.now += 60   # one step per refresh
    ...                                         # serve service.app, or call it directly
    fitter.close()

The signals go through the real `SignalHistory` (incremental fetch, trimming) over
`SyntheticPrometheus`, which answers `query_range` from a deterministic formula, so every
refresh after the first fetches one new point per series, as in production. One replica per
component, spread round-robin over the nodes; two component-scoped signals per replica and one
node-scoped one per node. `hot_nodes` get a temperature ramping toward its limit, so their
replicas are risky and the plan has entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from preshift.assess import Assessor
from preshift.config import Config, parse_config
from preshift.model import Footprint, Node, NodeLabels, Replica
from preshift.score.forecast import Fitter
from preshift.sense.ports import FailureCounts, InventoryResult, RangeSeries, Sample
from preshift.sense.signals import SignalHistory

from .service import Service, build_service
from .testing import FakeFailures, FakeInventory

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SIGNALS = (
    {"name": "memory_pressure", "scope": "component", "query": "synthetic_memory",
     "limit": 0.9, "weight": 0.4},
    {"name": "cpu_pressure", "scope": "component", "query": "synthetic_cpu",
     "limit": 0.9, "weight": 0.3},
    {"name": "temperature", "scope": "node", "query": "synthetic_temperature",
     "limit": 85.0, "weight": 0.5},
)


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def _noise(t_index: np.ndarray, entity: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [-0.5, 0.5) per (time, entity)."""
    x = np.sin(t_index[None, :] * 12.9898 + entity[:, None] * 78.233) * 43758.5453
    return x - np.floor(x) - 0.5


class SyntheticPrometheus:
    """MetricsSource answering the SIGNALS' queries for the given nodes and containers."""

    def __init__(self, nodes: list[str], containers: list[str], hot_nodes: set[str],
                 step: float) -> None:
        self.nodes, self.containers, self.step = nodes, containers, step
        self.hot = np.array([n in hot_nodes for n in nodes])
        self.calls = 0

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        return []

    def is_online(self) -> bool:
        return True

    def query_range(self, promql: str, start: float, end: float, step: float
                    ) -> list[RangeSeries]:
        self.calls += 1
        ts = np.arange(np.ceil(start / step - 1e-9), np.floor(end / step + 1e-9) + 1) * step
        k = np.rint(ts / step)
        if promql == "synthetic_temperature":
            e = np.arange(len(self.nodes), dtype=float)
            vals = 50.0 + 2.0 * _noise(k, e)
            # Hot nodes climb 0.1 °C per step and reach 84 °C at T0: 85 is 10 steps ahead.
            ramp = 84.0 + 0.1 * (ts - T0) / step
            vals[self.hot] = ramp[None, :] + _noise(k, e[self.hot])
            return [RangeSeries({"node": n}, ts, v) for n, v in zip(self.nodes, vals, strict=True)]
        e = np.arange(len(self.containers), dtype=float)
        base = 0.3 + 0.3 * ((e * 0.618) % 1.0)
        offset = 0.0 if promql == "synthetic_memory" else 1000.0
        vals = base[:, None] + 0.05 * np.sin(ts / 3600.0)[None, :] + 0.02 * _noise(k, e + offset)
        return [RangeSeries({"name": c}, ts, v) for c, v in zip(self.containers, vals,
                                                                 strict=True)]


@dataclass
class World:
    config: Config
    clock: Clock
    inventory: FakeInventory
    signals: SignalHistory
    failures: FakeFailures
    prometheus: SyntheticPrometheus

    def service(self, fitter: Fitter | None = None, assessor: Assessor | None = None,
                runtime: bool = True) -> Service:
        """The exporter over this world; fits in this process unless `fitter` says otherwise."""
        if assessor is None:
            assessor = Assessor(self.config, fitter=fitter)
        return build_service(self.config, self.inventory, self.signals, self.failures,
                             assessor=assessor, clock=self.clock, runtime=runtime)


def synthetic_world(
    components: int = 10_000,
    nodes: int = 20,
    points: int = 288,
    step: float = 60.0,
    hot_nodes: int = 1,
    refresh_interval: float = 15.0,
) -> World:
    """`components` components with one replica each on `nodes` nodes (racks of 5, two
    sites), `points` points of history per series at `step` seconds."""
    names = [f"n{i:03d}" for i in range(nodes)]
    config = parse_config({
        "nodes": [{"name": n, "url": f"unix:///nonexistent/{n}.sock",
                   "labels": {"host": n, "rack": f"r{i // 5}", "site": f"s{i % 2}"}}
                  for i, n in enumerate(names)],
        "signals": list(SIGNALS),
        "refresh_interval": refresh_interval,
        "prometheus": {"step": step, "history": step * (points - 1)},
    }, source="synthetic")
    node_objs = tuple(
        Node(n, f"unix:///nonexistent/{n}.sock", NodeLabels(n, f"r{i // 5}", f"s{i % 2}"),
             reachable=True, engine_id=f"E{i}")
        for i, n in enumerate(names)
    )
    label = MappingProxyType({})
    replicas = tuple(
        Replica(f"{c:064x}", f"c{c:05d}-1", f"c{c:05d}", names[c % nodes], "running", "img",
                labels=label)
        for c in range(components)
    )
    clock = Clock(T0)
    inventory = FakeInventory(InventoryResult(Footprint(T0, node_objs, replicas)))
    prom = SyntheticPrometheus(names, [r.name for r in replicas],
                               set(names[:hot_nodes]), step)
    signals = SignalHistory(config.signals, prom, step, config.prometheus.history)
    failures = FakeFailures(FailureCounts(by_component={}, by_node={}, last_event_ts=0.0))
    return World(config, clock, inventory, signals, failures, prom)
