"""Factories: configuration → adapters and a ready executor (habit 11: an unknown kind is a
configuration error, never a silent default). Adapters are imported lazily, so the core can
be used without docker-py for dry-runs and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Config
from ..errors import ConfigError, SourceError
from .events import Observer
from .executor import Executor, Query
from .journal import Journal
from .nop import NoTraffic
from .plan_source import ExporterPlanSource, PlanSource
from .ports import Runtime, Traffic


def make_traffic(config: Config) -> Traffic:
    """HAProxy's runtime API for kind "haproxy", the no-op layer for "none"."""
    kind = config.traffic.kind
    if kind == "none":
        return NoTraffic()
    if kind == "haproxy":
        from .haproxy import HAProxy

        assert config.traffic.socket is not None  # TrafficConfig checks it
        return HAProxy(config.traffic.socket, timeout=config.traffic.timeout)
    raise ConfigError(f"traffic.kind: unknown kind {kind!r}; use haproxy or none")


def make_runtime(config: Config) -> Runtime:
    """The plain-Docker-engines runtime over the configured nodes (mode docker), or the
    Swarm services runtime through swarm.manager (mode swarm)."""
    if config.mode == "swarm":
        from .swarm_runtime import SwarmRuntime

        assert config.swarm.manager is not None  # Config checks it
        return SwarmRuntime(config.nodes, config.swarm.manager,
                            label_prefix=config.docker.label_prefix,
                            timeout=config.docker.timeout,
                            health_path=config.migration.health_path,
                            wait=config.swarm.wait)
    if config.mode != "docker":
        raise ConfigError(f"mode: unknown mode {config.mode!r}; use docker or swarm")
    from .docker_runtime import DockerRuntime

    return DockerRuntime(config.nodes, label_prefix=config.docker.label_prefix,
                         timeout=config.docker.timeout,
                         health_path=config.migration.health_path)


def make_plan_source(config: Config) -> PlanSource:
    """The exporter's /api/v1/footprint at webhook.exporter_url."""
    return ExporterPlanSource(config.webhook.exporter_url,
                              timeout=config.prometheus.timeout)


def make_query(config: Config) -> Query | None:
    """`migration.analysis.query` → a function returning its one value (None: no data), via
    the configured Prometheus; None when no query is configured."""
    if not config.migration.analysis.query:
        return None
    import os

    from ..config import read_secret
    from ..sense.prometheus import PrometheusClient

    token = read_secret(os.environ, "PRESHIFT_PROMETHEUS_BEARER_TOKEN",
                        config.prometheus.bearer_token_file)
    client = PrometheusClient(config.prometheus.url, config.prometheus.timeout, token)

    def query(promql: str) -> float | None:
        samples = client.query(promql)
        if len(samples) > 1:
            raise SourceError("prometheus", f"the analysis query returned {len(samples)} "
                              f"series, it must return one number: {promql}", retriable=False)
        return samples[0].value if samples else None

    return query


def make_executor(
    config: Config,
    journal: Journal,
    *,
    runtime: Runtime | None = None,
    traffic: Traffic | None = None,
    plans: PlanSource | None = None,
    clock: Callable[[], float] = time.time,
    observer: Observer | None = None,
    query: Query | None = None,
) -> Executor:
    """An executor with the configured adapters for whatever is not given."""
    return Executor(
        config, journal,
        runtime if runtime is not None else make_runtime(config),
        traffic if traffic is not None else make_traffic(config),
        plans if plans is not None else make_plan_source(config),
        clock=clock, observer=observer, query=query,
    )
