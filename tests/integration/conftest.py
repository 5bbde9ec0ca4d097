"""Session fixtures for end-to-end tests: one testbed (3 private Docker engines in network
namespaces + a real Prometheus loading rules/), the telemetry simulator, and the exporter as
a real process. Names, ports and subnet differ from the demo's, so a running demo is safe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from preshift.testbed import Testbed, TestbedSpec

from .stack import ROOT, Exporter, Process, preshift_argv, wait_for, write_yaml

PREFIX = "pi"
SUBNET = "198.18.8"
PROM_PORT = 19390
EXPORTER = "127.0.0.1:19731"
SIMULATOR = "127.0.0.1:19732"


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    spec = TestbedSpec(
        prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT,
        exporter_address=EXPORTER, simulator_address=SIMULATOR,
        rule_files=tuple(sorted((ROOT / "rules").glob("*.yml"))),
    )
    tb = Testbed(spec)
    tb.up()
    try:
        yield tb
    finally:
        tb.down()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def simulator(testbed: Testbed, artifacts: Path) -> Iterator[Process]:
    argv = preshift_argv(
        "simulate", "--scenario", str(ROOT / "scenarios" / "steady.yaml"),
        "--listen", SIMULATOR, "--nodes", ",".join(n.name for n in testbed.nodes),
        *[a for n in testbed.nodes for a in ("--docker", f"{n.name}={n.socket_url}")],
    )
    proc = Process(argv, artifacts / "simulator.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def exporter_config(testbed: Testbed) -> dict[str, Any]:
    """The testbed's own exporter configuration, made fast for tests."""
    cfg = testbed.exporter_config()
    cfg.update(
        refresh_interval="1s",
        horizon="60s",  # with 1 s steps: 60 forecast steps, as the benchmark's horizon
        services={"web": {"min_available": 2}, "api": {"depends_on": ["web"]}},
        docker={"timeout": "3s"},
        exporter={"listen": EXPORTER},
    )
    cfg["prometheus"].update(step="1s", history="15m", timeout="3s")
    return cfg


@pytest.fixture(scope="session")
def exporter(testbed: Testbed, simulator: Process, artifacts: Path) -> Iterator[Exporter]:
    path = write_yaml(artifacts / "exporter.yaml", exporter_config(testbed))
    exp = Exporter(path, EXPORTER, artifacts / "exporter.log").start()
    try:
        exp.wait_ready()
        # Prometheus scrapes it every second; wait until it has.
        wait_for(
            lambda: _up(testbed), 30, "Prometheus to scrape the exporter"
        )
        yield exp
    finally:
        exp.stop()


def _up(testbed: Testbed) -> bool:
    from .stack import promql

    return any(s["value"] == 1 for s in promql(testbed.prometheus_url, 'up{job="preshift"}'))
