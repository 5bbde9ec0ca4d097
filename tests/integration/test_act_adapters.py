"""The act adapters on a real testbed: DockerRuntime (clone with image copy, probe, standby,
start, remove), HAProxy (runtime API: add, shift, drain, remove under load), and the test
equipment (testbed HAProxy and Alertmanager).

Own names: prefix pa, subnet 198.18.12, Prometheus 19490, HAProxy frontend 127.0.0.1:19500
and stats 19501, Alertmanager 19593. Traffic goes only to 127.0.0.1 and testbed nodes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from preshift.act.docker_runtime import DockerRuntime
from preshift.act.haproxy import HAProxy
from preshift.config import NodeConfig, parse_config
from preshift.errors import ActionError, SourceError
from preshift.testbed import IMAGE, Testbed, TestbedSpec
from preshift.testbed.haproxy import Backend, HAProxyHandle
from preshift.testbed.load import Load
from preshift.testbed.procs import Proc

from .stack import wait_for

pytestmark = pytest.mark.integration

SPEC = TestbedSpec(
    prefix="pa", subnet="198.18.12", prometheus_port=19490, alertmanager_port=19593,
    # nothing listens there: only HAProxy, Docker and Alertmanager are under test
    exporter_address="127.0.0.1:19531", simulator_address="127.0.0.1:19532",
)
FRONTEND = "127.0.0.1:19500"
STATS = "127.0.0.1:19501"
SERVE_NODE = ["sh", "-c", 'echo "$NODE" > /www/index.html; exec httpd -f -p 80 -h /www']
MS = 1_000_000  # Docker durations are in nanoseconds

#: Daemons the tests started and may leave running: down() must stop them.
STARTED: list[Proc] = []


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    bed = Testbed(SPEC)
    bed.up()
    try:
        yield bed
    finally:
        bed.down()  # raises if anything of the prefix is left
        left = [p.role for p in STARTED if p.owned()]
        STARTED.clear()
        assert not left, f"down() left these running: {left}"


@pytest.fixture
def clean(tb: Testbed) -> Iterator[Testbed]:
    tb.reset()
    yield tb
    tb.reset()


@pytest.fixture(scope="module")
def nodes(tb: Testbed) -> tuple[NodeConfig, ...]:
    return parse_config(tb.exporter_config()).nodes


@pytest.fixture
def runtime(nodes: tuple[NodeConfig, ...]) -> Iterator[DockerRuntime]:
    rt = DockerRuntime(nodes, timeout=10)
    try:
        yield rt
    finally:
        rt.close()


def http_body(url: str) -> str | None:
    r = requests.get(url, timeout=2)
    return r.text.strip() if r.status_code == 200 else None


# ---------------------------------------------------------------- DockerRuntime
def _source(tb: Testbed) -> None:
    """web-1 on n1, with every setting a clone must copy (low-level API: stop_timeout)."""
    api = tb.client("n1").api
    host = api.create_host_config(
        port_bindings={80: (tb.address("n1"), 18080)}, mem_limit="64m",
        nano_cpus=500_000_000, cpu_shares=512, pids_limit=64, init=True,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
    )
    api.create_container(
        IMAGE, ["sh", "-c", 'echo "$NODE $GREETING" > /www/index.html; '
                            "exec httpd -f -p 80 -h /www"],
        name="web-1", environment={"NODE": "n1", "GREETING": "hello"},
        labels={"preshift.service": "web", "team": "blue"}, ports=[80],
        healthcheck={"test": ["CMD-SHELL", "test -f /www/index.html"],
                     "interval": 300 * MS, "timeout": 1000 * MS, "retries": 2},
        stop_signal="SIGTERM", stop_timeout=3, working_dir="/www", user="root",
        host_config=host,
    )
    api.start("web-1")


def test_clone_copies_container_and_missing_image(clean: Testbed,
                                                  runtime: DockerRuntime) -> None:
    tb = clean
    _source(tb)
    n3 = tb.client("n3")
    n3.images.remove(IMAGE, force=True)
    assert not n3.images.list()
    source = runtime.inspect("n1", "web-1")
    assert source is not None and source.running
    assert (source.component, source.address, source.port) == ("web", tb.address("n1"), 18080)

    extra = {"preshift.migration": "m-1", "preshift.replaces": "web-1"}
    clone = runtime.clone(source, "n3", "web-1-m1", extra)

    assert clone.node == "n3" and clone.running and clone.image == IMAGE
    assert (clone.address, clone.port) == (tb.address("n3"), 18080)
    assert dict(clone.labels) == {"preshift.service": "web", "team": "blue", **extra}
    # the image was copied, not pulled (nodes have no route out)
    assert n3.images.get(IMAGE).id == tb.client("n1").images.get(IMAGE).id
    a = tb.client("n1").api.inspect_container("web-1")
    b = n3.api.inspect_container("web-1-m1")
    for key in ("Cmd", "Entrypoint", "Env", "Healthcheck", "WorkingDir", "User",
                "StopSignal", "StopTimeout", "ExposedPorts"):
        assert b["Config"].get(key) == a["Config"].get(key), key
    for key in ("Memory", "NanoCpus", "CpuShares", "PidsLimit", "RestartPolicy", "Init"):
        assert b["HostConfig"][key] == a["HostConfig"][key], key
    assert b["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": tb.address("n3"), "HostPort": "18080"}]}
    url = f"http://{tb.address('n3')}:18080/"
    assert wait_for(lambda: http_body(url), 10, "the clone to serve HTTP") == "n1 hello"
    wait_for(lambda: runtime.probe(clone) == "healthy", 15, "the clone's healthcheck")

    # idempotent: the same container comes back; a stopped one is started again
    assert runtime.clone(source, "n3", "web-1-m1", extra).container_id == clone.container_id
    n3.containers.get("web-1-m1").stop(timeout=3)
    again = runtime.clone(source, "n3", "web-1-m1", extra)
    assert again.container_id == clone.container_id and again.running


def test_clone_to_another_node_needs_its_address(clean: Testbed) -> None:
    tb = clean
    tb.client("n1").containers.run(IMAGE, name="lone", detach=True, init=True,
                                   ports={"80/tcp": (tb.address("n1"), 18085)})
    bare = [NodeConfig(name=n.name, url=n.socket_url) for n in tb.nodes]  # no address
    rt = DockerRuntime(bare)
    try:
        source = rt.inspect("n1", "lone")
        assert source is not None and source.address == tb.address("n1")  # the HostIp
        with pytest.raises(ActionError, match=r"nodes\[\]\.address"):
            rt.clone(source, "n2", "lone-2", {})
        assert rt.inspect("n2", "lone-2") is None
        with pytest.raises(ActionError, match="unknown node 'n9'"):
            rt.clone(source, "n9", "lone-9", {})
    finally:
        rt.close()


def test_probe_states(clean: Testbed, nodes: tuple[NodeConfig, ...],
                      runtime: DockerRuntime) -> None:
    tb = clean
    n2, addr = tb.client("n2"), tb.address("n2")
    n2.containers.run(IMAGE, name="plain", detach=True, init=True,
                      ports={"80/tcp": (addr, 18082)})
    n2.containers.run(IMAGE, ["sleep", "300"], name="deaf", detach=True, init=True,
                      ports={"80/tcp": (addr, 18083)})
    n2.containers.run(IMAGE, name="sick", detach=True, init=True, healthcheck={
        "test": ["CMD", "false"], "interval": 200 * MS, "timeout": 1000 * MS, "retries": 1})
    by_http = DockerRuntime(nodes, health_path="/")
    missing_page = DockerRuntime(nodes, health_path="/missing")
    try:
        plain = runtime.inspect("n2", "plain")
        deaf = runtime.inspect("n2", "deaf")
        sick = runtime.inspect("n2", "sick")
        assert plain and deaf and sick and plain.health is None
        assert runtime.probe(plain) == "healthy"  # no healthcheck, no health_path: running
        wait_for(lambda: by_http.probe(plain) == "healthy", 10, "GET / to answer 200")
        assert missing_page.probe(plain) == "unhealthy"  # 404
        assert by_http.probe(deaf) == "starting"  # published, but nothing listens yet
        wait_for(lambda: runtime.probe(sick) == "unhealthy", 15, "the failing healthcheck")
        n2.containers.get("plain").stop(timeout=3)
        assert by_http.probe(plain) == "unhealthy"  # not running
        n2.containers.get("plain").remove(force=True)
        assert by_http.probe(plain) == "unhealthy"  # gone
    finally:
        by_http.close()
        missing_page.close()


def test_standby_start_remove_are_idempotent(clean: Testbed, runtime: DockerRuntime) -> None:
    tb = clean
    cl = tb.client("n1")
    cl.containers.run(IMAGE, SERVE_NODE, name="old", detach=True, init=True,
                      labels={"preshift.service": "old"},  # the runtime acts only on ours
                      environment={"NODE": "n1"}, restart_policy={"Name": "always"},
                      ports={"80/tcp": (tb.address("n1"), 18084)})
    policy = lambda: cl.api.inspect_container("old")["HostConfig"]["RestartPolicy"]["Name"]  # noqa: E731

    before = runtime.inspect("n1", "old")
    assert before is not None and before.restart_policy == "always"
    runtime.standby("n1", "old", {"preshift.standby": "m-1"})
    inst = runtime.inspect("n1", "old")
    assert inst is not None and inst.state == "exited" and policy() == "no"
    runtime.standby("n1", "old", {"preshift.standby": "m-1"})  # again: nothing to do
    assert runtime.probe(inst) == "unhealthy"

    # the executor journals the policy before the standby and gives it back to start()
    started = runtime.start("n1", "old", before.restart_policy)
    assert started.running and policy() == "always"
    assert runtime.start("n1", "old").container_id == started.container_id
    url = f"http://{tb.address('n1')}:18084/"
    assert wait_for(lambda: http_body(url), 10, "the restored standby to serve") == "n1"

    runtime.remove("n1", "old")
    assert runtime.inspect("n1", "old") is None
    runtime.remove("n1", "old")
    runtime.standby("n1", "old", {})
    with pytest.raises(ActionError, match="no such container"):
        runtime.start("n1", "old")


def test_unreachable_engine_is_a_retriable_error(nodes: tuple[NodeConfig, ...]) -> None:
    gone = NodeConfig(name="n9", url="unix:///run/preshift-testbed/pa/none/docker.sock")
    rt = DockerRuntime((*nodes, gone), timeout=2)
    try:
        with pytest.raises(SourceError, match="docker engine n9") as err:
            rt.inspect("n9", "x")
        assert err.value.retriable
        with pytest.raises(ActionError, match="n9") as aerr:
            rt.remove("n9", "x")
        assert aerr.value.retriable
    finally:
        rt.close()


# ---------------------------------------------------------------- HAProxy
@pytest.fixture
def proxied(clean: Testbed) -> Iterator[tuple[Testbed, HAProxyHandle, HAProxy]]:
    """web-n1 (n1) and web-n2 (n2) serving their node name; HAProxy with web-n1 only."""
    tb = clean
    for node in ("n1", "n2"):
        tb.client(node).containers.run(
            IMAGE, SERVE_NODE, name=f"web-{node}", detach=True, init=True,
            environment={"NODE": node}, ports={"80/tcp": (tb.address(node), 18081)})
    handle = tb.start_haproxy(
        [Backend("be_web", FRONTEND, (("web-n1", tb.address("n1"), 18081, 100),))],
        stats=STATS)
    try:
        traffic = HAProxy(handle.socket, timeout=2)
        wait_for(lambda: traffic.servers("be_web")["web-n1"].up, 10, "web-n1 to be UP")
        yield tb, handle, traffic
    finally:
        handle.stop()
    assert not handle.running


def test_shift_under_load_loses_nothing(
    proxied: tuple[Testbed, HAProxyHandle, HAProxy]
) -> None:
    tb, handle, traffic = proxied
    traffic.add_server("be_web", "web-n2", tb.address("n2"), 18081)
    traffic.add_server("be_web", "web-n2", tb.address("n2"), 18081)  # idempotent
    servers = traffic.servers("be_web")
    assert sorted(servers) == ["web-n1", "web-n2"]
    assert (servers["web-n2"].address, servers["web-n2"].port) == (tb.address("n2"), 18081)
    assert servers["web-n2"].weight == 0
    wait_for(lambda: traffic.servers("be_web")["web-n2"].up, 10, "web-n2 to be UP")

    host, port = handle.frontend("be_web")
    # the slow CGI (0.2 s) keeps requests in flight while weights move and n1 drains
    with Load(host, port, "/cgi-bin/slow", total=300, threads=6, deadline=60) as load:
        wait_for(lambda: load.count >= 30, 30, "load on web-n1 alone")
        for step in range(1, 11):
            traffic.set_weight("be_web", "web-n2", 10 * step)
            traffic.set_weight("be_web", "web-n1", 100 - 10 * step)
            threading.Event().wait(0.3)  # let each split carry some requests
        traffic.drain("be_web", "web-n1")
        assert traffic.servers("be_web")["web-n1"].status == "DRAIN"
        wait_for(lambda: traffic.servers("be_web")["web-n1"].sessions == 0, 10,
                 "web-n1 to drain")
        traffic.remove_server("be_web", "web-n1")
        tb.client("n1").containers.get("web-n1").remove(force=True)
    summary = load.summary()

    assert summary.statuses == {"200": 300}, summary
    assert summary.failures == 0
    assert set(summary.bodies) == {"n1", "n2"} and all(summary.bodies.values()), summary
    after = traffic.servers("be_web")
    assert list(after) == ["web-n2"] and after["web-n2"].weight == 100
    assert after["web-n2"].failures == 0
    traffic.remove_server("be_web", "web-n1")  # gone already: fine
    metrics = requests.get(str(handle.metrics_url), timeout=5).text
    assert 'haproxy_server_weight{proxy="be_web",server="web-n2"} 100' in metrics


def test_haproxy_errors_carry_its_message(
    proxied: tuple[Testbed, HAProxyHandle, HAProxy]
) -> None:
    _, handle, traffic = proxied
    with pytest.raises(ActionError, match=r"No such backend\.") as err:
        traffic.set_weight("be_nope", "web-n1", 10)
    assert not err.value.retriable
    with pytest.raises(ActionError, match=r"No such server\."):
        traffic.drain("be_web", "ghost")
    with pytest.raises(ActionError, match=r"use 0\.\.256"):
        traffic.set_weight("be_web", "web-n1", 300)
    with pytest.raises(SourceError, match="no backend 'be_nope'"):
        traffic.servers("be_nope")
    with pytest.raises(ActionError, match="without ';'"):
        traffic.drain("be_web", "web-n1; shutdown sessions")
    # re-pointing an existing server: weight back to 0, new address, and not UP before a
    # check passed (nothing listens there)
    traffic.add_server("be_web", "web-n1", "127.0.0.1", 18081)
    s = traffic.servers("be_web")["web-n1"]
    assert (s.address, s.port, s.weight) == ("127.0.0.1", 18081, 0)
    assert not s.up, s.status
    # a new server is not UP before its first check either
    traffic.add_server("be_web", "web-dead", "127.0.0.1", 18089)
    assert traffic.servers("be_web")["web-dead"].status == "DOWN"
    dead = HAProxy(handle.socket.parent / "missing.sock", timeout=1)
    with pytest.raises(SourceError, match="socket not found") as serr:
        dead.servers("be_web")
    assert serr.value.retriable
    with pytest.raises(ActionError, match="socket not found"):
        dead.ready("be_web", "web-n1")


# ---------------------------------------------------------------- Alertmanager
class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[dict[str, str], dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.got.append((dict(self.headers), json.loads(body or b"{}")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


def test_alertmanager_routes_to_the_webhook_with_the_bearer_token(
    tb: Testbed, tmp_path: Path
) -> None:
    _Receiver.got = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = tmp_path / "token"
        token.write_text("s3cret-token\n")
        am = tb.start_alertmanager(f"http://127.0.0.1:{server.server_port}/alerts", token)
        STARTED.append(am.proc)  # left running on purpose: down() must stop it
        assert requests.get(f"{am.url}/-/ready", timeout=5).status_code == 200
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": "PreshiftTest", "component": "web", "node": "n1"},
            "annotations": {"summary": "test alert"},
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat(),
        }
        r = requests.post(f"{am.url}/api/v2/alerts", json=[alert], timeout=5)
        assert r.status_code == 200, r.text
        wait_for(lambda: _Receiver.got, 20, "Alertmanager to call the webhook")
        headers, payload = _Receiver.got[0]
        assert headers["Authorization"] == "Bearer s3cret-token"
        assert payload["status"] == "firing" and payload["receiver"] == "preshift"
        assert payload["groupLabels"] == {"alertname": "PreshiftTest", "component": "web"}
        assert payload["alerts"][0]["labels"]["node"] == "n1"
        # Prometheus was configured to send its alerts there
        def prom_sees_it() -> bool:
            res = requests.get(f"{tb.prometheus_url}/api/v1/alertmanagers", timeout=5).json()
            urls = [a["url"] for a in res["data"]["activeAlertmanagers"]]
            return any("127.0.0.1:19593" in u for u in urls)

        wait_for(prom_sees_it, 15, "Prometheus to list the Alertmanager")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
