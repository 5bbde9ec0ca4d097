"""Every metric family the simulator exposes, declared once, and their prometheus_client form.

Node families carry the names and labels of the real exporters they imitate, and no `node`
label: Prometheus adds `node=<name>` as a target label. docs/simulator.md lists the same table
(a unit test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from .state import NodeReadings, SelfStats


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]
    imitates: str  # the real exporter, for the docs


NODE_FAMILIES: tuple[Family, ...] = (
    Family("node_load1", "1m load average.", (), "node_exporter"),
    Family("node_load5", "5m load average.", (), "node_exporter"),
    Family("node_load15", "15m load average.", (), "node_exporter"),
    Family(
        "probe_icmp_duration_seconds",
        "Duration of icmp request by phase",
        ("phase",),
        "blackbox_exporter (icmp module)",
    ),
    Family(
        "probe_success", "Displays whether or not the probe was a success", (), "blackbox_exporter"
    ),
    Family("ipmi_voltage_volts", "Voltage reading from a sensor.", ("name",), "ipmi_exporter"),
    Family("ipmi_power_watts", "Power reading from a sensor.", ("name",), "ipmi_exporter"),
    Family(
        "ipmi_temperature_celsius",
        "Temperature reading from a sensor.",
        ("name",),
        "ipmi_exporter",
    ),
    Family(
        "node_hwmon_temp_celsius",
        "Hardware monitor for temperature (input)",
        ("chip", "sensor"),
        "node_exporter (hwmon collector)",
    ),
    Family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        ("name",),
        "cAdvisor",
    ),
    Family(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container in bytes.",
        ("name",),
        "cAdvisor",
    ),
)

VOLTAGE_SENSOR = "12V"
POWER_SENSOR = "Pwr Consumption"
IPMI_TEMP_SENSOR = "CPU Temp"
HWMON_CHIP, HWMON_SENSOR = "platform_coretemp_0", "temp1"

# Simulator's own families, on /metrics (gauges unless the name ends in _total).
SELF_FAMILIES: tuple[Family, ...] = (
    Family(
        "preshift_simulator_scenario_info",
        "Scenario being served: who loaded it (file or api), its seed and a digest of its content.",
        ("source", "seed", "digest"),
        "",
    ),
    Family(
        "preshift_simulator_scenario_loaded_timestamp_seconds",
        "When the scenario being served was loaded (time 0 of its shapes), in Unix seconds.",
        (),
        "",
    ),
    Family(
        "preshift_simulator_reloads_total",
        "Scenarios accepted since start, by source (file = the watched file changed, api = PUT).",
        ("source",),
        "",
    ),
    Family(
        "preshift_simulator_reload_errors_total",
        "Scenarios rejected since start, by source; the served scenario did not change.",
        ("source",),
        "",
    ),
    Family("preshift_simulator_nodes", "Nodes the simulator serves.", (), ""),
    Family(
        "preshift_simulator_overrides",
        "Signals currently overridden through PUT /api/v1/nodes/<node>/<signal>.",
        (),
        "",
    ),
    Family(
        "preshift_simulator_node_scrapes_total",
        "Requests of /metrics/<node> answered, by node.",
        ("node",),
        "",
    ),
    Family(
        "preshift_simulator_docker_up",
        "1 if the last container listing of the node's Docker engine succeeded (every 2 s).",
        ("node",),
        "",
    ),
    Family(
        "preshift_simulator_containers",
        "Containers whose memory the node exposes.",
        ("node",),
        "",
    ),
)

_NODE = {f.name: f for f in NODE_FAMILIES}
_SELF = {f.name: f for f in SELF_FAMILIES}


def _gauge(table: Mapping[str, Family], name: str) -> GaugeMetricFamily:
    f = table[name]
    return GaugeMetricFamily(f.name, f.help, labels=f.labels)


def _counter(table: Mapping[str, Family], name: str) -> CounterMetricFamily:
    f = table[name]
    return CounterMetricFamily(f.name, f.help, labels=f.labels)


def node_families(r: NodeReadings) -> list[Metric]:
    """The families of one node, built from readings already computed."""
    families: dict[str, GaugeMetricFamily] = {f.name: _gauge(_NODE, f.name) for f in NODE_FAMILIES}
    families["node_load1"].add_metric([], r.load1)
    families["node_load5"].add_metric([], r.load5)
    families["node_load15"].add_metric([], r.load15)
    families["probe_icmp_duration_seconds"].add_metric(["rtt"], r.latency_seconds)
    families["probe_success"].add_metric([], 1.0)
    families["ipmi_voltage_volts"].add_metric([VOLTAGE_SENSOR], r.voltage_volts)
    families["ipmi_power_watts"].add_metric([POWER_SENSOR], r.power_watts)
    families["ipmi_temperature_celsius"].add_metric([IPMI_TEMP_SENSOR], r.temperature_celsius)
    families["node_hwmon_temp_celsius"].add_metric(
        [HWMON_CHIP, HWMON_SENSOR], r.temperature_celsius
    )
    for c in r.containers:
        families["container_memory_working_set_bytes"].add_metric([c.name], c.working_set_bytes)
        families["container_spec_memory_limit_bytes"].add_metric([c.name], c.limit_bytes)
    return list(families.values())


class NodeCollector:
    """A one-shot collector over families already built (generate_latest takes any collect())."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def self_families(s: SelfStats) -> list[Metric]:
    """Families for /metrics."""
    info_family = _SELF["preshift_simulator_scenario_info"]
    info = InfoMetricFamily(
        info_family.name.removesuffix("_info"), info_family.help, labels=info_family.labels
    )
    info.add_metric([s.state.source, str(s.state.scenario.seed), s.state.digest], {})
    loaded = _gauge(_SELF, "preshift_simulator_scenario_loaded_timestamp_seconds")
    loaded.add_metric([], s.state.loaded_at)
    reloads = _counter(_SELF, "preshift_simulator_reloads_total")
    errors = _counter(_SELF, "preshift_simulator_reload_errors_total")
    for source in ("file", "api"):  # export 0 rather than a missing series
        reloads.add_metric([source], s.reloads.get(source, 0))
        errors.add_metric([source], s.reload_errors.get(source, 0))
    nodes = _gauge(_SELF, "preshift_simulator_nodes")
    nodes.add_metric([], len(s.state.nodes))
    overrides = _gauge(_SELF, "preshift_simulator_overrides")
    overrides.add_metric([], len(s.state.overrides))
    scrapes = _counter(_SELF, "preshift_simulator_node_scrapes_total")
    containers = _gauge(_SELF, "preshift_simulator_containers")
    for node in s.state.nodes:
        scrapes.add_metric([node], s.scrapes.get(node, 0))
        containers.add_metric([node], s.containers.get(node, 0))
    docker_up = _gauge(_SELF, "preshift_simulator_docker_up")
    for node, up in sorted(s.docker_up.items()):
        docker_up.add_metric([node], 1.0 if up else 0.0)
    return [info, loaded, reloads, errors, nodes, overrides, scrapes, docker_up, containers]
