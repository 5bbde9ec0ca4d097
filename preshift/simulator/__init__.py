"""Telemetry simulator: TEST EQUIPMENT, not part of a production deployment.

Serves node_exporter-, blackbox-, ipmi- and cAdvisor-style metrics per simulated node, driven by
a scenario file that can change while running, so a real Prometheus can scrape a testbed whose
hardware never overheats. See docs/simulator.md.

    scenario.py      scenario file → frozen, validated models (pydantic)
    trace.py         CSV traces for the replay shape
    shapes.py        pure maths: spec + time → value
    state.py         immutable state and node readings (pure)
    simulator.py     Simulator: applies changes, watches the file, lists Docker containers
    docker_source.py containers labelled preshift.service, per engine, in a background thread
    metrics.py       metric families (names, HELP, labels) in one table
    httpapi.py       the HTTP server
    cli.py           `preshift simulate`
"""

from __future__ import annotations

from .scenario import Scenario, Signal, SignalSpec, load_scenario, parse_scenario
from .simulator import DEFAULT_HOST, DEFAULT_PORT, Simulator

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Scenario",
    "Signal",
    "SignalSpec",
    "Simulator",
    "load_scenario",
    "parse_scenario",
]
