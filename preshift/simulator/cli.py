"""`preshift simulate`: run the telemetry simulator in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from preshift.errors import ConfigError

from .simulator import DEFAULT_HOST, DEFAULT_PORT, Simulator


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r}: use HOST:PORT, e.g. {DEFAULT_HOST}:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def _nodes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _docker(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for item in values:
        node, sep, url = item.partition("=")
        if not sep or not node or not url:
            raise click.BadParameter(f"{item!r}: use NODE=URL, e.g. n1=unix:///run/n1.sock")
        urls[node] = url
    return urls


@click.command("simulate")
@click.option(
    "--scenario",
    "scenario_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Scenario YAML file; reloaded when it changes.",
)
@click.option(
    "--listen",
    default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
    show_default=True,
    callback=_listen,
    help="HOST:PORT to serve on.",
)
@click.option(
    "--nodes",
    default="",
    callback=_nodes,
    help="Comma-separated node names, used when the scenario lists none (e.g. n1,n2,n3).",
)
@click.option(
    "--docker",
    "docker_urls",
    multiple=True,
    callback=_docker,
    help="NODE=URL of a node's Docker engine (repeatable); its containers labelled "
    "preshift.service get memory series.",
)
def simulate_command(
    scenario_path: Path,
    listen: tuple[str, int],
    nodes: tuple[str, ...],
    docker_urls: dict[str, str],
) -> None:
    """Serve simulated node telemetry (TEST EQUIPMENT) for Prometheus to scrape."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = Simulator.from_file(scenario_path, nodes, docker_urls)
    host, port = listen
    try:
        server = sim.serve(host, port)
    except OSError as exc:
        raise ConfigError(
            f"--listen {host}:{port}: cannot listen ({exc.strerror or exc}); choose another "
            "address or port"
        ) from None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    click.echo(
        f"preshift simulator (test equipment) on {server.url}/metrics/<node> for "
        f"{', '.join(sim.nodes)}; scenario {scenario_path}",
        err=True,
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo("preshift simulator stopped", err=True)
