"""`preshift testbed up|status|down`: the same Testbed class the pytest fixtures use."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .spec import TestbedSpec
from .testbed import Testbed

_DEFAULT = TestbedSpec()


@click.group("testbed")
def testbed_group() -> None:
    """Local testbed: Docker engines in network namespaces, Swarm, Prometheus (needs root)."""


@testbed_group.command("up")
@click.option("--nodes", type=click.IntRange(1, 50), default=_DEFAULT.nodes, show_default=True)
@click.option("--swarm", is_flag=True, help="Form a swarm (n1 manager, the rest workers).")
@click.option("--prefix", default=_DEFAULT.prefix, show_default=True,
              help="Names of everything created; two prefixes can run side by side.")
@click.option("--subnet", default=_DEFAULT.subnet, show_default=True,
              help="First three octets of the node /24 (node i gets .10+i).")
@click.option("--no-prometheus", is_flag=True, help="Do not start Prometheus.")
@click.option("--prometheus-port", type=int, default=_DEFAULT.prometheus_port,
              show_default=True)
@click.option("--exporter-address", default=_DEFAULT.exporter_address, show_default=True,
              help="Where Prometheus scrapes the Preshift exporter.")
@click.option("--simulator-address", default=_DEFAULT.simulator_address, show_default=True,
              help="Where Prometheus scrapes the telemetry simulator.")
@click.option("--rule-file", "rule_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Prometheus rule file (repeatable).")
@click.option("--exporter-config", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a Preshift config for the exporter to this path.")
def up_command(nodes: int, swarm: bool, prefix: str, subnet: str, no_prometheus: bool,
               prometheus_port: int, exporter_address: str, simulator_address: str,
               rule_files: tuple[Path, ...], exporter_config: Path | None) -> None:
    """Bring the testbed up (clearing what an earlier run of PREFIX left)."""
    spec = TestbedSpec(
        prefix=prefix, nodes=nodes, subnet=subnet, swarm=swarm, prometheus=not no_prometheus,
        prometheus_port=prometheus_port, exporter_address=exporter_address,
        simulator_address=simulator_address, rule_files=rule_files,
    )
    tb = Testbed(spec).up()
    click.echo(f"testbed {prefix!r} up in {tb.timings['total']:.1f} s "
               f"({', '.join(f'{k} {v:.2f}' for k, v in tb.timings.items() if k != 'total')})")
    for n in tb.nodes:
        click.echo(f"  {n.name}: /usr/bin/docker -H {n.socket_url}  address {n.address}  "
                   f"netns {n.netns}  rack {n.rack} site {n.site}")
    if spec.prometheus:
        click.echo(f"  prometheus: {spec.prometheus_url}  (config {spec.prometheus_config})")
    if spec.swarm:
        click.echo(f"  swarm: manager {tb.nodes[0].name}, {len(tb.nodes)} nodes")
    if exporter_config:
        click.echo(f"  exporter config: {tb.write_exporter_config(exporter_config)}")
    click.echo(f"  image: preshift-box:latest; state {spec.state_file}")
    click.echo(f"  tear down with: preshift testbed down --prefix {prefix}")


@testbed_group.command("status")
@click.option("--prefix", default=_DEFAULT.prefix, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status_command(prefix: str, as_json: bool) -> None:
    """Show engines, Prometheus and swarm of the testbed PREFIX."""
    st = Testbed.attach(prefix).status()
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    if st["state_file"] is None:
        click.echo(f"testbed {prefix!r}: no state file (not up)")
    for name, n in st["nodes"].items():
        mark = "up" if n["reachable"] else "DOWN"
        click.echo(f"{name}: {mark:4} pid {n['pid']}  {n['socket']}  {n['address']}  "
                   f"link {'up' if n['link_up'] else 'down'}  containers {n['containers']}")
    prom = st["prometheus"]
    if prom["url"]:
        click.echo(f"prometheus: {'up' if prom['up'] else 'DOWN'}  {prom['url']}")
    if st["swarm"]:
        click.echo(f"swarm: {st['swarm']['state']}, nodes "
                   f"{len(st['swarm'].get('nodes', {}))}")


@testbed_group.command("down")
@click.option("--prefix", default=_DEFAULT.prefix, show_default=True)
def down_command(prefix: str) -> None:
    """Remove everything the testbed PREFIX created (also after a crash)."""
    tb = Testbed.attach(prefix)
    tb.down()
    click.echo(f"testbed {prefix!r} down in {tb.timings['down']:.1f} s; nothing left behind")
