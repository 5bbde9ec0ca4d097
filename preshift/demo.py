"""`preshift demo`: the whole loop on this machine, from a degrading node to a migration.

Brings up 3 private Docker engines (nodes n1-n3 labelled with host, rack and site), a private
Prometheus loading rules/, Alertmanager routed to the webhook with a bearer token, HAProxy in
front of the demo service, the telemetry simulator (test equipment) heating node n2, the
exporter and the webhook under gunicorn, and a steady bounded load through HAProxy. A live
line every few seconds shows scores, discrepancy, the alert, the migration's phase, step and
weight, and the requests; at the end (Ctrl-C or --duration) a summary: warning lead time,
migration time, failed requests. Everything is torn down, also on errors.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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
WEBHOOK = "127.0.0.1:9733"
ALERTMANAGER_PORT = 19093
HAPROXY_STATS = "127.0.0.1:18404"
LIMIT = 85.0  # the default temperature signal's limit (preshift/config.py)
MAX_SECONDS = 3600.0  # the demo's load and run are bounded even without --duration
TOKEN_BYTES = 24
#: component -> (published port on each node, HAProxy frontend)
FRONTENDS = {"web": (8080, "127.0.0.1:18080"), "api": (8081, "127.0.0.1:18081")}
HEALTHCHECK = {"test": ["CMD", "true"], "interval": 1_000_000_000, "retries": 1}
# (node, component, container name, command, restart policy)
DEMO_REPLICAS: list[tuple[str, str, str, list[str] | None, dict[str, Any] | None]] = [
    ("n1", "web", "web-1", None, None),
    ("n2", "web", "web-2", None, None),
    ("n1", "api", "api-1", None, None),
    ("n3", "api", "api-3", None, None),
    # a flaky worker: crashes every 40 s and is restarted by Docker → failure history; it is
    # declared stateful, so the plan holds it instead of moving it
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


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None,
           ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})})


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


def _config(tb: Any, logs: Path, token_file: Path) -> dict[str, Any]:
    """One configuration for the exporter and the webhook."""
    spec = tb.spec
    cfg = tb.exporter_config()
    # A short step and horizon so the demo's few minutes hold enough points to forecast.
    cfg.update(
        refresh_interval="5s", horizon="5m",
        services={"web": {"min_available": 1}, "api": {"depends_on": ["web"]},
                  "worker": {"stateful": True}},
        webhook={"listen": WEBHOOK, "journal": str(logs / "journal.sqlite3"),
                 "exporter_url": f"http://{spec.exporter_address}", "token_file": str(token_file),
                 "tick": "0.25s"},
        traffic={"kind": "haproxy", "socket": str(spec.haproxy_socket),
                 "backends": {c: f"be_{c}" for c in FRONTENDS}},
        migration={"step_weights": [10, 25, 50, 75, 100], "step_interval": "2s",
                   "standby_ttl": "30s", "cooldown": "5m",
                   "analysis": {"min_requests": 1, "max_error_ratio": 0.01,
                                "failed_checks": 2}},
    )
    cfg["prometheus"].update(step="5s", history="1h")
    return cfg


class _Webhook:
    """The webhook's API, read with the demo's token."""

    def __init__(self, token: str) -> None:
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def latest(self, component: str) -> dict[str, Any] | None:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            r = self.session.get(f"http://{WEBHOOK}/api/v1/migrations", timeout=2,
                                 params={"component": component, "limit": 1})
            ms = r.json()["migrations"]
            return ms[0] if ms else None
        return None

    def steps(self, mid: str) -> list[dict[str, Any]]:
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            return self.session.get(f"http://{WEBHOOK}/api/v1/migrations/{mid}",
                                    timeout=2).json()["steps"]
        return []


def _migration_text(m: dict[str, Any] | None, steps: int) -> str:
    if m is None:
        return "migration: none"
    where = f"{m['source_node'] or '-'}→{m['target_node']}"
    text = f"migration {m['id']} {m['component']} {where}: {m['phase']}"
    if m["phase"] == "shifting":
        text += f" step {m['step'] + 1}/{steps} weight {m['weight']}%"
    return text


class _Timeline:
    """When things were first seen (monotonic seconds), for the summary."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.seen: dict[str, float] = {}

    def mark(self, what: str, happened: bool) -> None:
        if happened and what not in self.seen:
            self.seen[what] = time.monotonic() - self.t0


def _observe(tl: _Timeline, exporter_url: str, prom_url: str) -> None:
    with contextlib.suppress(requests.RequestException, ValueError, KeyError, IndexError):
        fp = requests.get(f"{exporter_url}/api/v1/footprint", timeout=2).json()
        tl.mark("plan moves web off n2", any(
            e["component"] == "web" and e["from_node"] == "n2"
            for e in fp["plan"]["entries"]))
    with contextlib.suppress(requests.RequestException, ValueError, KeyError, IndexError):
        r = requests.get(f"{prom_url}/api/v1/query", timeout=2, params={
            "query": 'max(node_hwmon_temp_celsius{node="n2"})'}).json()["data"]["result"]
        tl.mark("n2 crosses its temperature limit", bool(r) and float(r[0]["value"][1]) > LIMIT)


@click.command("demo")
@click.option("--scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=ROOT / "scenarios" / "degrade-n2.yaml", show_default=True,
              help="simulator scenario driving the nodes' environment signals")
@click.option("--duration", type=float, default=0.0,
              help="seconds to run before tearing down (0 = until Ctrl-C, at most 1 h)")
@click.option("--every", type=float, default=5.0, show_default=True,
              help="seconds between live status lines")
def demo_command(scenario: Path, duration: float, every: float) -> None:
    """Run the whole loop locally: testbed, Prometheus, Alertmanager, exporter, webhook,
    HAProxy and a steady load; node n2 degrades and its replica moves. Ctrl-C tears it down."""
    from .testbed import Testbed, TestbedSpec
    from .testbed.haproxy import Backend
    from .testbed.load import Load

    spec = TestbedSpec(prefix="ps", rule_files=tuple(sorted((ROOT / "rules").glob("*.yml"))),
                       alertmanager_port=ALERTMANAGER_PORT)
    tb = Testbed(spec)
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set())  # type: ignore[misc]
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    procs: list[subprocess.Popen[bytes]] = []
    load: Load | None = None
    tl = _Timeline()
    hook: _Webhook | None = None
    click.echo("bringing up the testbed: 3 Docker engines in network namespaces, Prometheus, "
               "Alertmanager, HAProxy …")
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
            port = FRONTENDS.get(comp, (None, None))[0]
            tb.client(node).containers.run(
                IMAGE, cmd or HTTPD, name=name, detach=True, init=True,
                labels={"preshift.service": comp}, restart_policy=restart,
                ports={"80/tcp": (tb.address(node), port)} if port else None,
                healthcheck=HEALTHCHECK if port else None,
            )
        tb.start_haproxy([
            Backend(f"be_{comp}", fe, tuple(
                (name, tb.address(node), port, 100)
                for node, c, name, _, _ in DEMO_REPLICAS if c == comp))
            for comp, (port, fe) in FRONTENDS.items()
        ], stats=HAPROXY_STATS)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        token_file = logs / "webhook.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        cfg_path = logs / "preshift.yaml"
        cfg_path.write_text(yaml.safe_dump(_config(tb, logs, token_file), sort_keys=False))
        exp = _spawn(
            [sys.executable, "-m", "preshift.cli", "exporter", "--config", str(cfg_path)],
            logs / "exporter.log",
        )
        procs.append(exp)
        _wait_http(f"{exporter_url}/-/ready", exp, logs / "exporter.log", 60)
        wh = _spawn([sys.executable, "-m", "preshift.cli", "webhook", "serve", "--config",
                     str(cfg_path)], logs / "webhook.log")
        procs.append(wh)
        _wait_http(f"http://{WEBHOOK}/-/ready", wh, logs / "webhook.log", 30)
        hook = _Webhook(token)
        tb.start_alertmanager(f"http://{WEBHOOK}/api/v1/alerts", token_file)
        host, port = FRONTENDS["web"][1].split(":")
        # ~20 requests/s through HAProxy, bounded in count and time like every load here
        limit = duration if duration > 0 else MAX_SECONDS
        load = Load(host, int(port), "/cgi-bin/app", total=int(limit * 25), threads=2,
                    deadline=limit, interval=0.1).start()
        _print_where_to_look(tb, exporter_url, sim_url, logs, scenario)
        deadline = time.monotonic() + limit
        steps = len(_config(tb, logs, token_file)["migration"]["step_weights"])
        while not stop.wait(every):
            _observe(tl, exporter_url, tb.prometheus_url)
            m = hook.latest("web")
            if m is not None:
                tl.mark("migration created", True)
                tl.mark("promoted", m["phase"] in ("promoted", "draining", "standby",
                                                   "succeeded"))
            summ = load.summary()
            click.echo(f"{_status_line(exporter_url, tb.prometheus_url)} | "
                       f"{_migration_text(m, steps)} | requests {summ.total - summ.failures} "
                       f"ok, {summ.failures} failed")
            if time.monotonic() >= deadline:
                break
            for p in procs:
                if p.poll() is not None:
                    raise TestbedError(f"{p.args[3]} exited (code {p.returncode}); see {logs}")
    finally:
        if load is not None:
            load.stop()
            _print_summary(tl, load.summary(), hook)
        click.echo("tearing down …")
        for p in reversed(procs):
            _stop(p)
        tb.down()
        for s, h in previous.items():
            signal.signal(s, h)
        click.echo("done: nothing left behind")


def _print_summary(tl: _Timeline, summary: Any, hook: _Webhook | None) -> None:
    click.echo("")
    click.echo("Summary")
    seen = tl.seen
    plan, limit = seen.get("plan moves web off n2"), seen.get("n2 crosses its temperature limit")
    if plan is None:
        click.echo("  warning: the plan never moved web off n2 (run longer: the default scenario "
                   "heats n2 from the first minute)")
    elif limit is None:
        click.echo(f"  warning: the plan moved web off n2 {plan:.0f} s into the demo; n2 had not "
                   f"crossed its {LIMIT:g} °C limit when the demo ended")
    else:
        click.echo(f"  warning lead time: the plan moved web off n2 {limit - plan:.0f} s before "
                   f"n2 crossed its {LIMIT:g} °C limit")
    m = hook.latest("web") if hook else None
    if m is not None and hook is not None:
        promoted = next((s["at"] for s in hook.steps(m["id"])
                         if s["action"] == "phase" and "→ promoted" in s["detail"]), None)
        took = f"{promoted - m['created_at']:.1f} s from planned to promoted" if promoted else \
            "not promoted (yet)"
        click.echo(f"  migration {m['id']}: {m['source_name']} {m['source_node']}→"
                   f"{m['target_node']}, {m['phase']}; {took}")
    else:
        click.echo("  migration: none started")
    click.echo(f"  requests through HAProxy: {summary.total} sent, {summary.failures} failed "
               f"{dict(summary.statuses)}")


def _print_where_to_look(tb: Any, exporter_url: str, sim_url: str, logs: Path,
                         scenario: Path) -> None:
    prom = tb.prometheus_url
    click.echo("")
    click.echo("Preshift demo is running. Where to look:")
    click.echo(f"  Prometheus          {prom}/graph   (alerts: {prom}/alerts)")
    click.echo(f"  Alertmanager        {tb.spec.alertmanager_url}")
    click.echo(f"  exporter metrics    {exporter_url}/metrics")
    click.echo(f"  current footprint   {exporter_url}/api/v1/footprint")
    click.echo(f"  webhook             http://{WEBHOOK}/metrics   (API: token in "
               f"{logs}/webhook.token; PRESHIFT_WEBHOOK_TOKEN=$(cat {logs}/webhook.token) "
               f"preshift migrations list --url http://{WEBHOOK})")
    click.echo(f"  HAProxy stats       http://{HAPROXY_STATS}/metrics   (web: "
               f"http://{FRONTENDS['web'][1]}/cgi-bin/app)")
    click.echo(f"  simulator (test equipment, scenario {scenario.name})  {sim_url}/metrics/n2")
    for n in tb.nodes:
        click.echo(f"  node {n.name}  rack {n.rack} site {n.site}  docker -H {n.socket_url} ps")
    click.echo(f"  logs                {logs}/")
    click.echo("Try these PromQL queries:")
    for title, q in QUERIES:
        click.echo(f"  {title:<28} {q}")
    click.echo("Ctrl-C tears everything down.\n")
