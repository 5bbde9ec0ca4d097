"""`preshift exporter`: the entry point that builds the real adapters and runs the service.

This is the only module of the exporter that reads the environment, installs signal
handlers or configures logging; everything below receives its sources as arguments.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import click
from pydantic import ValidationError

from preshift import __version__
from preshift.assess import Assessor
from preshift.config import Config, ExporterConfig, load_config, read_secret
from preshift.model import FailureEvent

from .fitworker import ProcessFitter
from .refresh import RefreshLoop
from .server import ExporterServer
from .service import build_service

log = logging.getLogger("exporter")

TOKEN_ENV = "PRESHIFT_PROMETHEUS_BEARER_TOKEN"


@dataclass
class Adapters:
    """The real sources, built from the configuration."""

    prometheus: Any  # sense.prometheus.PrometheusClient
    signals: Any  # sense.signals.SignalHistory
    inventory: Any  # sense.docker_engine.EngineInventory (sense.swarm_inventory in mode swarm)
    ledger: Any  # sense.failures.FailureLedger
    watcher: Any  # sense.events.FailureWatcher
    fitter: ProcessFitter  # ETS fits in a child process (see exporter/fitworker.py)

    def restore(self, config: Config) -> float:
        """Failure counters back from Prometheus (raises SourceError while it is down)."""
        return float(self.ledger.restore(self.prometheus, config.prometheus.history))

    def history(self, config: Config, since: float, until: float) -> list[FailureEvent]:
        """Failure events of [since, until] rebuilt from the counters Prometheus kept."""
        from preshift.sense.failure_history import load_failure_history

        return load_failure_history(self.prometheus, since, until, config.prometheus.step)

    def assessor(self, config: Config) -> Assessor:
        return Assessor(config, fitter=self.fitter)

    def close(self) -> None:
        for closable in (self.inventory, self.prometheus, self.fitter):
            try:
                closable.close()
            except Exception:  # closing is best effort at shutdown
                log.debug("closing %r failed", closable, exc_info=True)


def make_inventory(config: Config, client_factory: Any = None) -> Any:
    """Mode docker: every node's engine. Mode swarm: the same, plus one read of the swarm
    manager per refresh (failure domains from swarm node labels, spec replicas as the
    intended counts; see preshift/sense/swarm_inventory.py)."""
    prefix, timeout = config.docker.label_prefix, config.docker.timeout
    if config.mode == "swarm":
        from preshift.sense.swarm_inventory import SwarmInventory

        assert config.swarm.manager is not None  # Config checks it
        return SwarmInventory(config.nodes, config.swarm.manager, prefix, timeout=timeout,
                              client_factory=client_factory)
    from preshift.sense.docker_engine import EngineInventory

    return EngineInventory(config.nodes, prefix, timeout=timeout, client_factory=client_factory)


def build_adapters(config: Config, environ: Mapping[str, str], now: float) -> Adapters:
    """Connect nothing yet: every adapter connects lazily and bounds its calls by a timeout."""
    # Imported here: docker-py and requests are only needed by the command that runs.
    from preshift.sense.events import FailureWatcher
    from preshift.sense.failures import FailureLedger
    from preshift.sense.prometheus import PrometheusClient
    from preshift.sense.signals import SignalHistory

    token = read_secret(environ, TOKEN_ENV, config.prometheus.bearer_token_file)
    prometheus = PrometheusClient(config.prometheus.url, config.prometheus.timeout, token)
    signals = SignalHistory(
        config.signals, prometheus, config.prometheus.step, config.prometheus.history
    )
    inventory = make_inventory(config)
    ledger = FailureLedger()
    # Replay the engines' recent events: the ledger drops those the restored counters
    # already hold, whether the restore comes first or (Prometheus down) later.
    watcher = FailureWatcher(
        config.nodes, ledger, config.docker.label_prefix,
        since=now - config.prometheus.history, timeout=config.docker.timeout,
    )
    return Adapters(prometheus, signals, inventory, ledger, watcher, ProcessFitter())


def _listen_address(value: str) -> tuple[str, int]:
    try:
        listen = ExporterConfig(listen=value).listen
    except ValidationError:
        raise click.BadParameter(
            f"{value!r}: must be HOST:PORT, e.g. 127.0.0.1:9731", param_hint="--listen"
        ) from None
    host, _, port = listen.rpartition(":")
    return host, int(port)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.command("exporter")
@click.option("--config", "config_path", required=True, envvar="PRESHIFT_CONFIG",
              type=click.Path(dir_okay=False), help="configuration file (or $PRESHIFT_CONFIG)")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="address to serve on; default: exporter.listen of the configuration")
@click.option("--once", is_flag=True, help="refresh once, print the footprint JSON and exit")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def exporter_command(config_path: str, listen: str | None, once: bool, log_level: str) -> None:
    """Serve /metrics and /api/v1/footprint from a background refresh loop."""
    config = load_config(config_path)  # a ConfigError ends here, before anything starts
    host, port = _listen_address(listen or config.exporter.listen)
    _setup_logging(log_level)
    adapters = build_adapters(config, os.environ, time.time())
    try:
        if once:
            _run_once(config, adapters)
        else:
            _serve(config, adapters, host, port)
    finally:
        adapters.close()


def _run_once(config: Config, adapters: Adapters) -> None:
    loop = RefreshLoop(
        config, adapters.inventory, adapters.signals, adapters.ledger,
        restore=lambda: adapters.restore(config),
        history=lambda since, until: adapters.history(config, since, until),
        assessor=adapters.assessor(config),
    )
    snapshot = loop.refresh_once()
    click.echo(json.dumps(json.loads(snapshot.footprint_json), indent=2))


def _serve(config: Config, adapters: Adapters, host: str, port: int) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    # The refresh thread runs long stretches of Python; with the default 5 ms switch interval
    # each GIL hand-off a request needs (one per system call; the server keeps them to a
    # handful, see exporter/server.py) may wait that long (p99 of /metrics was ~130 ms during
    # a refresh at 10,000 components with ~40 hand-offs a request, ~75 ms with 1 ms).
    sys.setswitchinterval(0.001)
    service = build_service(
        config, adapters.inventory, adapters.signals, adapters.ledger,
        assessor=adapters.assessor(config), watcher=adapters.watcher,
        restore=lambda: adapters.restore(config),
        history=lambda since, until: adapters.history(config, since, until),
    )
    loop = service.loop
    try:
        server = ExporterServer(service.app, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server.start()
    bound_host, bound_port = server.address
    log.info(
        "preshift exporter %s listening on http://%s:%d/ (metrics at /metrics); "
        "%d nodes, refresh every %g s",
        __version__, bound_host, bound_port, len(config.nodes), config.refresh_interval,
    )
    adapters.watcher.start()
    loop.start()
    try:
        while not stop.wait(1.0):  # until SIGTERM or SIGINT
            pass
    finally:
        adapters.watcher.stop(timeout=2.0)
        if not loop.stop(timeout=2.0):
            log.warning("a refresh is still waiting on a source; not waiting for it")
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("stopped")
