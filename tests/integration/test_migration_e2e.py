"""Issue 4 end to end, every part real: 3 private Docker engines, the telemetry simulator
(test equipment), the exporter, Prometheus evaluating rules/, Alertmanager (the Debian binary)
routing to the webhook under gunicorn, HAProxy in front of the replicas with `retries 0`, and
a bounded load through HAProxy the whole time.

The simulator heats node n2. Two components run one replica on n1 and one on n2, each behind
its own HAProxy backend with a bounded load running from the start:
- web: a canary move n2 → n3; the webhook is killed with SIGKILL (master and workers at once)
  while the canary takes traffic, and restarted: the migration resumes from the journal and
  finishes; no request is lost; the original goes to standby and is decommissioned after
  standby_ttl; no orphan container; HAProxy agrees with the journal;
- api: its healthcheck needs a file only the original has, so the canary fails its health
  gate → rolled back, the original untouched and still serving, no request lost.
Both alerts fire about a minute after n2 heats up (the rule has `for: 1m`) and the webhook
runs one migration at a time, in either order. Then a dry-run webhook receives one
notification ten times at once: one dry-run migration, nothing changed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from preshift.act.haproxy import HAProxy
from preshift.testbed import Testbed, TestbedSpec
from preshift.testbed.haproxy import Backend
from preshift.testbed.load import Load

from .stack import ROOT, Exporter, Process, Webhook, preshift_argv, wait_for, write_yaml

pytestmark = pytest.mark.integration

PREFIX, SUBNET = "pw", "198.18.13"
PROM_PORT, AM_PORT = 19690, 19693
EXPORTER, SIMULATOR = "127.0.0.1:19831", "127.0.0.1:19832"
WEBHOOK = "127.0.0.1:19833"
DRY_WEBHOOK = "127.0.0.1:19834"
STATS = "127.0.0.1:19601"
TOKEN = "e2e-secret-token"
#: component -> (container port published on the node, HAProxy frontend)
APPS = {"web": (8080, "127.0.0.1:19600"), "api": (8081, "127.0.0.1:19602"),
        "shop": (8082, "127.0.0.1:19603")}
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
# shop's containers answer /cgi-bin/app with 503 unless their hostname is "orig": the
# originals get that hostname, a copy does not (Docker gives it its ID), so a canary passes
# its health gate and HAProxy's checks but fails the analysis once it takes traffic.
SHOP = ["sh", "-c", '[ "$(hostname)" = orig ] || : > /tmp/fail; exec httpd -f -p 80 -h /www']
TERMINAL = {"succeeded", "rolled_back", "cancelled", "dry_run", "failed"}


@dataclass
class Stack:
    tb: Testbed
    exporter: Exporter
    webhook: Webhook
    config_path: Path
    journal: Path
    artifacts: Path
    haproxy: HAProxy
    loads: dict[str, Load]

    def api(self, path: str, **params: Any) -> Any:
        return self.webhook.api(path, **params)

    def migrations(self, component: str) -> list[dict[str, Any]]:
        return self.webhook.migrations(component)

    def finish_load(self, component: str) -> Any:
        load = self.loads[component]
        load.stop()
        return load.summary()


def _load(component: str) -> Load:
    host, port = APPS[component][1].split(":")
    # ~15 requests/s per component, each on a new connection; bounded in count and time
    return Load(host, int(port), "/cgi-bin/app", total=8000, threads=3, deadline=420,
                interval=0.2)


def _run_app(tb: Testbed, component: str, node: str, healthcheck: dict[str, Any]) -> None:
    port, _ = APPS[component]
    shop = component == "shop"
    tb.client(node).containers.run(
        "preshift-box:latest", SHOP if shop else HTTPD, name=f"{component}-{node}",
        detach=True, init=True, hostname="orig" if shop else None,
        labels={"preshift.service": component},
        ports={"80/tcp": (tb.address(node), port)},
        healthcheck=healthcheck, environment={"NODE": node},
    )


def _healthy(tb: Testbed, node: str, name: str) -> bool:
    c = tb.client(node).containers.get(name)
    return c.attrs["State"].get("Health", {}).get("Status") == "healthy"


def _webhook(config_path: Path, artifacts: Path, name: str = "webhook") -> Webhook:
    w = Webhook(config_path, _listen_of(config_path), artifacts / f"{name}.log", token=TOKEN)
    w.start()
    return w.wait_ready()


def _listen_of(config_path: Path) -> str:
    import yaml

    return yaml.safe_load(config_path.read_text())["webhook"]["listen"]


def _config(tb: Testbed, artifacts: Path, **webhook: Any) -> dict[str, Any]:
    cfg = tb.exporter_config()
    cfg.update(
        refresh_interval="1s",
        horizon="60s",
        services={c: {"min_available": 1} for c in APPS},
        docker={"timeout": "5s"},
        exporter={"listen": EXPORTER},
        webhook={"listen": WEBHOOK, "journal": str(artifacts / "journal.sqlite3"),
                 "exporter_url": f"http://{EXPORTER}", "tick": "0.2s", **webhook},
        traffic={"kind": "haproxy", "socket": str(tb.spec.haproxy_socket),
                 "backends": {c: f"be_{c}" for c in APPS}},
        migration={
            "step_weights": [25, 50, 75, 100], "step_interval": "1s",
            "health_timeout": "8s", "drain_timeout": "10s", "progress_deadline": "60s",
            "standby_ttl": "4s", "cooldown": "10m", "max_concurrent": 1,
            "max_moves_per_node_per_hour": 20,
            "analysis": {"min_requests": 1, "max_error_ratio": 0.0, "failed_checks": 1},
        },
    )
    cfg["prometheus"].update(step="1s", history="15m", timeout="3s")
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    artifacts = tmp_path_factory.mktemp("migrate")
    spec = TestbedSpec(
        prefix=PREFIX, subnet=SUBNET, prometheus_port=PROM_PORT, alertmanager_port=AM_PORT,
        exporter_address=EXPORTER, simulator_address=SIMULATOR,
        extra_scrape=(("preshift-webhook", WEBHOOK),),
        rule_files=tuple(sorted((ROOT / "rules").glob("*.yml"))),
    )
    tb = Testbed(spec)
    procs: list[Process] = []
    loads: dict[str, Load] = {}
    tb.up()
    try:
        sim = Process(preshift_argv(
            "simulate", "--scenario", str(ROOT / "scenarios" / "steady.yaml"),
            "--listen", SIMULATOR, "--nodes", ",".join(n.name for n in tb.nodes),
            *[a for n in tb.nodes for a in ("--docker", f"{n.name}={n.socket_url}")],
        ), artifacts / "simulator.log").start()
        procs.append(sim)
        # api's healthcheck passes only where /tmp/ready exists: the originals get it below,
        # a copy started by the webhook never does (a canary that fails its health gate)
        checks = {
            "web": {"test": ["CMD", "true"], "interval": 500_000_000, "retries": 1},
            "api": {"test": ["CMD", "sh", "-c", "[ -f /tmp/ready ]"],
                    "interval": 500_000_000, "retries": 1},
            "shop": {"test": ["CMD", "true"], "interval": 500_000_000, "retries": 1},
        }
        for comp in APPS:
            for node in ("n1", "n2"):
                _run_app(tb, comp, node, checks[comp])
        for node in ("n1", "n2"):
            tb.client(node).containers.get(f"api-{node}").exec_run(["sh", "-c", ": > /tmp/ready"])
        for comp in APPS:
            for node in ("n1", "n2"):
                wait_for(lambda c=comp, n=node: _healthy(tb, n, f"{c}-{n}"), 20,
                         f"{comp}-{node} healthy")
        backends = [
            Backend(f"be_{c}", fe, tuple(
                (f"{c}-{n}", tb.address(n), port, 100) for n in ("n1", "n2")))
            for c, (port, fe) in APPS.items()
        ]
        tb.start_haproxy(backends, stats=STATS)
        token_file = artifacts / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        config_path = write_yaml(artifacts / "preshift.yaml", _config(tb, artifacts))
        exporter = Exporter(config_path, EXPORTER, artifacts / "exporter.log").start()
        procs.append(exporter)
        exporter.wait_ready()
        webhook = _webhook(config_path, artifacts)
        procs.append(webhook)
        tb.start_alertmanager(f"http://{WEBHOOK}/api/v1/alerts", token_file)
        loads.update({c: _load(c).start() for c in APPS})
        st = Stack(tb, exporter, webhook, config_path, artifacts / "journal.sqlite3",
                   artifacts, HAProxy(spec.haproxy_socket), loads)
        # n2 runs hot: already near the limit and climbing (limit 85 °C)
        r = requests.put(
            f"http://{SIMULATOR}/api/v1/nodes/n2/temperature_celsius",
            json={"ramp": {"from": 80, "to": 95, "over": "120s"}, "noise": 0.3}, timeout=5,
        )
        assert r.status_code == 200, r.text
        yield st
    finally:
        for load in loads.values():
            load.stop()
        for p in reversed(procs):
            p.stop()
        if "st" in locals():
            st.webhook.stop()  # the restarted one, if a test restarted it
        tb.down()


def _wait_migration(stack: Stack, component: str, phases: set[str], timeout: float,
                    ) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        ms = stack.migrations(component)
        return next((m for m in ms if m["phase"] in phases), None)

    return wait_for(found, timeout, f"a {component} migration in {sorted(phases)}", 0.2)


def _containers(tb: Testbed, component: str) -> dict[str, tuple[str, str]]:
    """name -> (node, state) of every container of the component on every node."""
    out = {}
    for n in tb.nodes:
        for c in tb.client(n.name).containers.list(
                all=True, filters={"label": f"preshift.service={component}"}):
            out[c.name] = (n.name, c.status)
    return out


def test_degraded_node_moves_web_losing_nothing_even_across_a_kill_9(stack: Stack) -> None:
    tb = stack.tb
    t0 = time.monotonic()
    m = _wait_migration(stack, "web", {"shifting"} | TERMINAL, 240)
    assert m["phase"] == "shifting", m
    started = time.monotonic() - t0
    assert m["source_node"] == "n2" and m["target_node"] in ("n1", "n3"), m
    stack.webhook.kill_group()  # SIGKILL gunicorn's master and every worker at once
    assert not stack.webhook.running
    stack.webhook = _webhook(stack.config_path, stack.artifacts, "webhook-restarted")
    standby = _wait_migration(stack, "web", {"standby"} | TERMINAL, 90)
    promoted_after = time.monotonic() - t0
    assert standby["id"] == m["id"] and standby["phase"] in ("standby", "succeeded"), standby
    if standby["phase"] == "standby":  # the original: stopped and kept for a fast rollback
        state = _containers(tb, "web").get(m["source_name"])
        assert state is not None and state[1] == "exited", state
    done = _wait_migration(stack, "web", TERMINAL, 60)
    summary = stack.finish_load("web")
    containers = _containers(tb, "web")
    servers = stack.haproxy.servers("be_web")
    print(f"web migration shifting {started:.0f}s after n2 heated up, standby after "
          f"{promoted_after:.0f}s; load {summary.total} requests, {summary.failures} failed, "
          f"statuses {summary.statuses}, served by {summary.bodies}")
    assert done["phase"] == "succeeded", done
    assert summary.failures == 0, summary.statuses
    assert summary.total > 200
    # decommissioned: the original is gone, the canary runs on the target and serves
    assert m["source_name"] not in containers, containers
    assert containers == {"web-n1": ("n1", "running"),
                          m["canary_name"]: (m["target_node"], "running")}, containers
    assert set(servers) == {"web-n1", m["canary_name"]}, servers
    assert servers[m["canary_name"]].requests > 0 and servers[m["canary_name"]].up
    steps = stack.api(f"/api/v1/migrations/{m['id']}")["steps"]
    assert all(s["outcome"] is not None for s in steps), steps


def test_canary_failing_its_health_gate_is_rolled_back(stack: Stack) -> None:
    tb = stack.tb
    m = _wait_migration(stack, "api", TERMINAL, 150)
    summary = stack.finish_load("api")
    assert m["phase"] == "rolled_back", m
    containers = _containers(tb, "api")
    assert set(containers) == {"api-n1", "api-n2"}, containers  # canary removed
    assert containers["api-n2"] == ("n2", "running")
    servers = stack.haproxy.servers("be_api")
    assert set(servers) == {"api-n1", "api-n2"}, servers
    assert servers["api-n2"].weight > 0 and servers["api-n2"].up
    assert summary.failures == 0, summary.statuses
    steps = stack.api(f"/api/v1/migrations/{m['id']}")["steps"]
    assert any("health" in (s["detail"] + s["action"]) for s in steps), steps


def test_canary_failing_its_analysis_is_rolled_back_after_one_step(stack: Stack) -> None:
    tb = stack.tb
    before = {n: c for n, c in _containers(tb, "shop").items()}
    ids = {c.name: c.id for c in tb.client("n2").containers.list(all=True)}
    m = _wait_migration(stack, "shop", TERMINAL, 200)
    summary = stack.finish_load("shop")
    assert m["phase"] == "rolled_back", m
    assert "fail" in m["reason"] or "error" in m["reason"], m["reason"]
    steps = stack.api(f"/api/v1/migrations/{m['id']}")["steps"]
    weights = [s["detail"] for s in steps if s["action"] == "set_weights"]
    # the analysis stopped it at the first step: the canary never got more than 25 %
    canary = re.compile(rf"{m['canary_name']}=(\d+)")
    shares = [int(x) for w in weights for x in canary.findall(w)]
    assert shares and max(shares) == 25, weights
    assert _containers(tb, "shop") == before  # the canary is gone
    assert {c.name: c.id for c in tb.client("n2").containers.list(all=True)}["shop-n2"] == \
        ids["shop-n2"]  # the original was never replaced
    servers = stack.haproxy.servers("be_shop")
    assert set(servers) == {"shop-n1", "shop-n2"} and servers["shop-n2"].weight > 0
    # the only failures are the canary's answers during its one step
    assert summary.statuses.get("503", 0) == summary.failures, summary.statuses
    assert 0 < summary.failures <= 40, summary.statuses
    failed_at = [x.t for x in stack.loads["shop"].samples() if not x.ok]
    late = [x for x in stack.loads["shop"].samples() if x.t > max(failed_at) + 1]
    assert late and all(x.ok for x in late)
    print(f"shop: analysis rollback; {summary.failures} of {summary.total} requests failed "
          f"while the canary had its first step")


def test_dry_run_and_duplicates_change_nothing(stack: Stack) -> None:
    """A second webhook in dry-run with its own journal; the same notification sent 10
    times at once → one set of dry_run migrations, and nothing changes anywhere."""
    tb = stack.tb
    # api still runs on n2 (its move was rolled back), so the plan still moves it
    wait_for(lambda: any(e["component"] == "api" and e["from_node"] == "n2"
                         for e in stack.exporter.footprint()["plan"]["entries"]), 60,
             "a plan entry moving api-n2")
    cfg = _config(tb, stack.artifacts)
    cfg["webhook"].update(listen=DRY_WEBHOOK, journal=str(stack.artifacts / "dry.sqlite3"))
    cfg["migration"]["dry_run"] = True
    path = write_yaml(stack.artifacts / "dry.yaml", cfg)
    before_containers = {c: _containers(tb, c) for c in APPS}
    before_servers = {c: stack.haproxy.servers(f"be_{c}") for c in APPS}
    proc = _webhook(path, stack.artifacts, "dry-webhook")
    try:
        payload = {
            "version": "4", "groupKey": '{}:{alertname="PreshiftFootprintDiscrepancy"}',
            "truncatedAlerts": 0, "status": "firing", "receiver": "preshift",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:19693",
            "alerts": [{"status": "firing", "labels": {
                "alertname": "PreshiftFootprintDiscrepancy", "component": "api"},
                "annotations": {}, "startsAt": "2026-11-28T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                "fingerprint": "e2e0000000000001"}],
        }

        def post(_: int) -> int:
            return requests.post(f"http://{DRY_WEBHOOK}/api/v1/alerts", json=payload,
                                 headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
                                 ).status_code

        with ThreadPoolExecutor(10) as pool:
            codes = list(pool.map(post, range(10)))
        assert codes == [202] * 10, codes

        def planned() -> list[dict[str, Any]]:
            r = requests.get(f"http://{DRY_WEBHOOK}/api/v1/migrations", timeout=5,
                             headers={"Authorization": f"Bearer {TOKEN}"})
            return r.json()["migrations"]

        ms = wait_for(planned, 30, "the dry-run migrations")
        time.sleep(2)  # let any duplicate be handled too, then count
        ms = planned()
        assert len(ms) == 1, ms
        assert ms[0]["phase"] == "dry_run" and ms[0]["source_node"] == "n2", ms
        assert ms[0]["reason"]
        assert {c: _containers(tb, c) for c in APPS} == before_containers
        after = {c: stack.haproxy.servers(f"be_{c}") for c in APPS}
        assert {c: {n: s.weight for n, s in v.items()} for c, v in after.items()} == {
            c: {n: s.weight for n, s in v.items()} for c, v in before_servers.items()}
    finally:
        proc.stop()


def test_grafana_webhook_panels_show_the_migrations(stack: Stack) -> None:
    """After the migrations above, every Grafana query over the webhook's metrics (scraped
    by the testbed's Prometheus as job preshift-webhook) is accepted and returns data, except
    those that by design show only what did not happen here (rejected notifications)."""
    from tests.unit.test_grafana import committed, load_build, metric_names

    build = load_build()
    queries = [(f"{name} {where}", build.substitute(expr))
               for name, doc in committed().items() for where, expr in build.queries(doc)]
    webhook = [(w, q) for w, q in queries if "preshift_webhook_" in q or "preshift-webhook" in q]
    assert len(webhook) >= 10, webhook
    # nothing was rejected, so that labelled counter has no series at all
    may_be_empty = {"preshift_webhook_notifications_rejected_total"}
    prom = stack.tb.prometheus_url
    empty = []
    for where, q in webhook:
        r = requests.get(f"{prom}/api/v1/query", params={"query": q}, timeout=10).json()
        assert r["status"] == "success", (where, q, r)
        if not r["data"]["result"] and not metric_names(q) & may_be_empty:
            empty.append((where, q))
    assert not empty, empty
