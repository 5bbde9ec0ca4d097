"""The simulator's state as an immutable value, and the pure steps that make the next one.

Writers build a new State and swap one reference; readers take the reference and never lock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from .scenario import NON_NEGATIVE, Scenario, Signal, SignalSpec
from .shapes import Segment, Timeline, timeline_mean, timeline_value, trim

LOAD5_SECONDS = 300.0
LOAD15_SECONDS = 900.0
HISTORY_SECONDS = LOAD15_SECONDS  # the longest look back of any reading

SeriesKey = tuple[str, Signal]


class Container(NamedTuple):
    """A container on a node; `limit_bytes` None means "use the scenario's default limit"."""

    name: str
    limit_bytes: int | None = None


class ContainerReading(NamedTuple):
    name: str
    working_set_bytes: float
    limit_bytes: float


class NodeReadings(NamedTuple):
    """Every value one node exposes at one instant."""

    load1: float
    load5: float
    load15: float
    latency_seconds: float
    voltage_volts: float
    power_watts: float
    temperature_celsius: float
    containers: tuple[ContainerReading, ...]


@dataclass(frozen=True)
class State:
    """What the simulator serves: the scenario, its nodes, and each series' spec history."""

    scenario: Scenario
    nodes: tuple[str, ...]
    source: str  # "file" or "api": who loaded the scenario
    loaded_at: float  # epoch seconds; time 0 of every scenario spec
    digest: str  # short hash of the scenario, to tell versions apart in /metrics
    timelines: Mapping[SeriesKey, Timeline]
    overrides: Mapping[SeriesKey, SignalSpec] = field(default_factory=dict)


def scenario_digest(scenario: Scenario) -> str:
    canonical = json.dumps(scenario.to_document(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _extend(history: Timeline, segment: Segment, now: float) -> Timeline:
    return (*trim(history, now, HISTORY_SECONDS), segment) if history else (segment,)


def load_scenario_state(
    previous: State | None, scenario: Scenario, nodes: Sequence[str], *, source: str, now: float
) -> State:
    """State for a (new) scenario; runtime overrides are dropped, past history is kept."""
    old = previous.timelines if previous else {}
    timelines = {
        (node, signal): _extend(old.get((node, signal), ()), Segment(now, now, spec), now)
        for node in nodes
        for signal in Signal
        for spec in (scenario.spec_for(node, signal),)
    }
    return State(
        scenario=scenario,
        nodes=tuple(nodes),
        source=source,
        loaded_at=now,
        digest=scenario_digest(scenario),
        timelines=MappingProxyType(timelines),
    )


def with_override(
    state: State, node: str, signal: Signal, spec: SignalSpec | None, *, now: float
) -> State:
    """Override one series from `now` on, or (spec None) return it to the scenario.

    Returning to the scenario resumes it on the scenario's clock, so a ramp that was
    interrupted continues where it would have been.
    """
    key = (node, signal)
    if spec is None:
        segment = Segment(now, state.loaded_at, state.scenario.spec_for(node, signal))
    else:
        segment = Segment(now, now, spec)
    timelines = dict(state.timelines)
    timelines[key] = _extend(timelines[key], segment, now)
    overrides = {k: v for k, v in state.overrides.items() if k != key}
    if spec is not None:
        overrides[key] = spec
    return State(
        scenario=state.scenario,
        nodes=state.nodes,
        source=state.source,
        loaded_at=state.loaded_at,
        digest=state.digest,
        timelines=MappingProxyType(timelines),
        overrides=MappingProxyType(overrides),
    )


def signal_value(state: State, node: str, signal: Signal, now: float, suffix: str = "") -> float:
    """One series' value at `now`; `suffix` gives e.g. each container its own noise."""
    key = f"{node}/{signal.value}{suffix}"
    v = timeline_value(state.timelines[(node, signal)], now, seed=state.scenario.seed, key=key)
    return max(v, 0.0) if signal in NON_NEGATIVE else v


def node_readings(
    state: State, node: str, now: float, containers: Sequence[Container]
) -> NodeReadings:
    """All readings of `node` at `now`; raises KeyError for a node the state does not have."""
    if node not in state.nodes:
        raise KeyError(node)
    load = state.timelines[(node, Signal.LOAD)]
    default_limit = state.scenario.memory_limit_bytes
    readings = []
    for c in containers:
        limit = float(c.limit_bytes or default_limit)
        ratio = signal_value(state, node, Signal.MEMORY_RATIO, now, suffix=f"/{c.name}")
        readings.append(ContainerReading(c.name, ratio * limit, limit))
    return NodeReadings(
        load1=signal_value(state, node, Signal.LOAD, now),
        load5=max(timeline_mean(load, now, LOAD5_SECONDS), 0.0),
        load15=max(timeline_mean(load, now, LOAD15_SECONDS), 0.0),
        latency_seconds=signal_value(state, node, Signal.LATENCY_SECONDS, now),
        voltage_volts=signal_value(state, node, Signal.VOLTAGE_VOLTS, now),
        power_watts=signal_value(state, node, Signal.POWER_WATTS, now),
        temperature_celsius=signal_value(state, node, Signal.TEMPERATURE_CELSIUS, now),
        containers=tuple(readings),
    )


@dataclass(frozen=True)
class SelfStats:
    """Counters and gauges the simulator keeps about itself, as plain data."""

    state: State
    reloads: Mapping[str, int]
    reload_errors: Mapping[str, int]
    scrapes: Mapping[str, int]
    docker_up: Mapping[str, bool]
    containers: Mapping[str, int]
