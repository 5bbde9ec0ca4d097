"""`preshift demo`: the local testbed with the telemetry simulator and the exporter against it.

Brings up 3 private Docker engines (nodes n1-n3 labelled with host, rack and site) and a
private Prometheus loading rules/, starts the simulator (test equipment) and the exporter as
child processes, places a few demo services, prints where to look, then shows a live line
every few seconds until Ctrl-C (or --duration), and tears everything down.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import requests
import yaml

from .errors import TestbedError

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "preshift-box:latest"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
# (node, component, container name, command, restart policy)
DEMO_REPLICAS: list[tuple[str, str, str, list[str] | None, dict[str, Any] | None]] = [
    ("n1", "web", "web-1", None, None),
    ("n2", "web", "web-2", None, None),
    ("n3", "web", "web-3", None, None),
    ("n1", "api", "api-1", None, None),
    ("n2", "api", "api-2", None, None),
    # a flaky worker: crashes every 40 s and is restarted by Docker → failure history
    ("n2", "worker", "worker-1", ["sh", "-c", "sleep 40; exit 1"],
     {"Name": "on-failure", "MaximumRetryCount": 0}),
]
QUERIES = [
    ("replicas per node", "preshift_replicas"),
    ("replicas per rack and site",
     "sum by (component, rack, site) (preshift_replicas * on (node) group_left (rack, site) "
     "preshift_node_info)"),
    ("node temperatures (simulated)", "max by (node) (node_hwmon_temp_celsius)"),
    ("lowest score per component", "component:preshift_health_projection_score:min"),
    ("score factors of n2's replicas", 'preshift_failure_probability_ratio{node="n2"}'),
    ("discrepancy past threshold", "component:preshift_discrepancy_excess:ratio"),
    ("failure history", "preshift_component_failures_total"),
    ("exporter health", "preshift_source_up"),
]


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(f"{proc.args[3]} exited early; see {log}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.3)
    raise TestbedError(f"{url} did not answer within {timeout:g} s; see {log}")


def _status_line(exporter_url: str, prom_url: str) -> str:
    try:
        fp = requests.get(f"{exporter_url}/api/v1/footprint", timeout=2).json()
    except (requests.RequestException, ValueError):
        return "exporter: no answer"
    scores = (fp.get("scores") or {}).get("nodes") or {}
    plan = fp.get("plan") or {}
    hps = " ".join(
        f"{n}={v['hps']:.0f}" for n, v in sorted(scores.items()) if v.get("hps") is not None
    ) or "(no evidence yet)"
    disc = " ".join(
        f"{c}={v:.2f}/{plan.get('threshold', {}).get(c, 0):.2f}"
        for c, v in sorted((plan.get("discrepancy") or {}).items())
    )
    moves = "; ".join(
        f"{e['action']} {e['replica'] or e['component']} {e['from_node'] or '-'}→{e['to_node']}"
        for e in plan.get("entries", [])[:3]
    ) or "none"
    try:
        r = requests.get(
            f"{prom_url}/api/v1/query", timeout=2,
            params={"query": "max by (node) (node_hwmon_temp_celsius)"},
        ).json()["data"]["result"]
        temps = " ".join(
            f"{s['metric']['node']}={float(s['value'][1]):.0f}°C"
            for s in sorted(r, key=lambda s: s["metric"]["node"])
        )
        al = requests.get(f"{prom_url}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
        alert = ",".join(
            f"{a['labels']['alertname']}[{a['labels'].get('component', '')}]={a['state']}"
            for a in al if a["labels"].get("alertname", "").startswith("PreshiftFootprint")
        ) or "none"
    except (requests.RequestException, ValueError, KeyError):
        temps, alert = "prometheus: no answer", "?"
    unreachable = [n["name"] for n in fp.get("nodes", []) if not n.get("reachable")]
    return (
        f"{time.strftime('%H:%M:%S')}  temp {temps} | node HPS {hps} | discrepancy/threshold "
        f"{disc or '-'} | plan: {moves} | alert: {alert}"
        + (f" | UNREACHABLE {','.join(unreachable)}" if unreachable else "")
        + (" | (stale)" if fp.get("stale") else "")
    )


@click.command("demo")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=ROOT / "scenarios" / "degrade-n2.yaml", show_default=True,
              help="simulator scenario driving the nodes' environment signals")
@click.option("--duration", type=float, default=0.0,
              help="seconds to run before tearing down (0 = until Ctrl-C)")
@click.option("--every", type=float, default=5.0, show_default=True,
              help="seconds between live status lines")
def demo_command(scenario: Path, duration: float, every: float) -> None:
    """Run the local testbed with the simulator and the exporter; Ctrl-C tears it down."""
    from .testbed import Testbed, TestbedSpec

    spec = TestbedSpec(prefix="ps", rule_files=tuple(sorted((ROOT / "rules").glob("*.yml"))))
    tb = Testbed(spec)
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set())  # type: ignore[misc]
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    procs: list[subprocess.Popen[bytes]] = []
    click.echo("bringing up the testbed: 3 Docker engines in network namespaces + Prometheus …")
    try:
        tb.up()
        logs = spec.run
        sim_url = f"http://{spec.simulator_address}"
        exporter_url = f"http://{spec.exporter_address}"
        sim = _spawn(
            [sys.executable, "-m", "preshift.cli", "simulate", "--scenario", str(scenario),
             "--listen", spec.simulator_address, "--nodes", ",".join(n.name for n in tb.nodes),
             *[a for n in tb.nodes for a in ("--docker", f"{n.name}={n.socket_url}")]],
            logs / "simulator.log",
        )
        procs.append(sim)
        _wait_http(f"{sim_url}/metrics", sim, logs / "simulator.log", 20)
        for node, comp, name, cmd, restart in DEMO_REPLICAS:
            tb.client(node).containers.run(
                IMAGE, cmd or HTTPD, name=name, detach=True, init=True,
                labels={"preshift.service": comp}, restart_policy=restart,
            )
        cfg = tb.exporter_config()
        # A short step and horizon so the demo's few minutes hold enough points to forecast.
        cfg.update(refresh_interval="5s", horizon="5m")
        cfg["prometheus"].update(step="5s", history="1h")
        cfg_path = logs / "exporter.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        exp = _spawn(
            [sys.executable, "-m", "preshift.cli", "exporter", "--config", str(cfg_path)],
            logs / "exporter.log",
        )
        procs.append(exp)
        _wait_http(f"{exporter_url}/-/ready", exp, logs / "exporter.log", 60)
        _print_where_to_look(tb, exporter_url, sim_url, logs, scenario)
        deadline = time.monotonic() + duration if duration > 0 else None
        while not stop.wait(every):
            click.echo(_status_line(exporter_url, tb.prometheus_url))
            if deadline and time.monotonic() >= deadline:
                break
            for p in procs:
                if p.poll() is not None:
                    raise TestbedError(f"{p.args[3]} exited (code {p.returncode}); see {logs}")
    finally:
        click.echo("tearing down …")
        for p in reversed(procs):
            _stop(p)
        tb.down()
        for s, h in previous.items():
            signal.signal(s, h)
        click.echo("done: nothing left behind")


def _print_where_to_look(tb: Any, exporter_url: str, sim_url: str, logs: Path,
                         scenario: Path) -> None:
    prom = tb.prometheus_url
    click.echo("")
    click.echo("Preshift demo is running. Where to look:")
    click.echo(f"  Prometheus          {prom}/graph   (alerts: {prom}/alerts)")
    click.echo(f"  exporter metrics    {exporter_url}/metrics")
    click.echo(f"  current footprint   {exporter_url}/api/v1/footprint")
    click.echo(f"  simulator (test equipment, scenario {scenario.name})  {sim_url}/metrics/n2")
    for n in tb.nodes:
        click.echo(f"  node {n.name}  rack {n.rack} site {n.site}  docker -H {n.socket_url} ps")
    click.echo(f"  logs                {logs}/")
    click.echo("Try these PromQL queries:")
    for title, q in QUERIES:
        click.echo(f"  {title:<28} {q}")
    click.echo("Ctrl-C tears everything down.\n")
