"""The testbed itself: engines, network, swarm, Prometheus, disturbances and a clean teardown.

Runs as root. Prefix, subnet and port differ from the demo (ps) and the e2e suite (pi), so
those can run at the same time. The leftover checks here are written independently of
preshift.testbed.cleanup, so a bug there cannot hide a leftover.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import yaml
from click.testing import CliRunner

from preshift import cli
from preshift.config import load_config
from preshift.errors import TestbedError
from preshift.testbed import IMAGE, Testbed, TestbedSpec
from preshift.testbed import cli as testbed_cli
from preshift.testbed.procs import State

from .stack import wait_for

pytestmark = pytest.mark.integration

SPEC = TestbedSpec(
    prefix="tt", subnet="198.18.9", prometheus_port=19190, swarm=True,
    # nothing listens there: scraping is not under test, only the generated config
    exporter_address="127.0.0.1:19931", simulator_address="127.0.0.1:19932",
)
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/www"]
FETCH = ("import sys, urllib.request; "
         "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")


def run(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def tb() -> Iterator[Testbed]:
    bed = Testbed(SPEC)
    bed.up()
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def clean(tb: Testbed) -> Iterator[Testbed]:
    tb.reset()
    yield tb
    tb.reset()


# ---------------------------------------------------------------- independent leftover checks
def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def our_netns(spec: TestbedSpec) -> list[str]:
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return [n for n in names if re.fullmatch(rf"{spec.prefix}-n\d+", n)]


def our_links(spec: TestbedSpec) -> list[str]:
    out = run(["ip", "-o", "link", "show"]).stdout
    names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]
    return [n for n in names if n == f"{spec.prefix}br0" or re.fullmatch(rf"{spec.prefix}v\d+", n)]


def our_iptables_rules(spec: TestbedSpec) -> list[str]:
    out = run(["iptables", "-w", "5", "-S"]).stdout
    return [ln for ln in out.splitlines() if f"preshift-testbed:{spec.prefix}" in ln]


def our_mounts(spec: TestbedSpec) -> list[str]:
    roots = (f"{spec.base_dir}/{spec.prefix}", f"{spec.run_dir}/{spec.prefix}")
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f]
    return [p for p in points if any(p == r or p.startswith(r + "/") for r in roots)
            or re.fullmatch(rf"/run/netns/{spec.prefix}-n\d+", p)]


def our_processes(spec: TestbedSpec) -> list[str]:
    roots = (f"{spec.base_dir}/{spec.prefix}/", f"{spec.run_dir}/{spec.prefix}/")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        cmd = cmdline(int(pid))
        if any(r in cmd for r in roots):
            found.append(f"{pid}: {cmd[:100]}")
    return found


def our_cgroups(spec: TestbedSpec) -> list[str]:
    root = Path("/sys/fs/cgroup")
    return [str(p) for h in root.iterdir() if h.is_dir()
            for p in h.glob(f"preshift-{spec.prefix}-n*")]


def our_dirs(spec: TestbedSpec) -> list[str]:
    return [str(d) for d in (spec.base_dir / spec.prefix, spec.run_dir / spec.prefix)
            if d.exists()]


def assert_nothing_left(spec: TestbedSpec) -> None:
    assert our_netns(spec) == [], "network namespaces left"
    assert our_links(spec) == [], "bridge/veth left"
    assert our_iptables_rules(spec) == [], "iptables rule left"
    assert our_mounts(spec) == [], "mounts left"
    assert our_processes(spec) == [], "processes left"
    assert our_cgroups(spec) == [], "cgroup dirs left"
    assert our_dirs(spec) == [], "run/data dirs left"


# ---------------------------------------------------------------- engines and network
def test_engines_answer_with_labels_distinct_ids_and_hostnames(tb: Testbed) -> None:
    ids, names = set(), set()
    for n in tb.nodes:
        info = tb.client(n.name).info()
        labels = dict(lb.split("=", 1) for lb in info["Labels"])
        assert labels == {"preshift.node": n.name, "preshift.host": n.name,
                          "preshift.rack": f"r{n.index}",
                          "preshift.site": f"dc{(n.index + 1) // 2}"}
        ids.add(info["ID"])
        names.add(info["Name"])
        assert info["Name"] == n.name
        assert info["DockerRootDir"] == str(n.data_root)
        assert tb.socket_url(n.name) == f"unix://{SPEC.run_dir}/tt/{n.name}/docker.sock"
        assert tb.address(n.name) == f"198.18.9.{10 + n.index}"
        # its own containerd, never a system one
        pid = State(SPEC.state_file).proc(f"{n.name}/dockerd").pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--containerd") + 1] == str(n.containerd_socket).encode()
        # nothing can leave the machine from a node: no default route
        assert run(["ip", "-n", n.netns, "route", "show", "default"]).stdout.strip() == ""
        assert len(n.veth) <= 15 and len(SPEC.bridge) <= 15
    assert len(ids) == 3 and len(names) == 3
    images = {t for n in tb.nodes for t in tb.client(n.name).images.get(IMAGE).tags}
    assert images == {IMAGE}


def test_container_answers_from_root_ns_and_from_another_node(clean: Testbed) -> None:
    tb = clean
    addr = tb.address("n1")
    c = tb.client("n1").containers.run(
        IMAGE, HTTPD, detach=True, init=True, name="web", environment={"NODE": "n1"},
        ports={"80/tcp": (addr, 8080)},
    )
    url = f"http://{addr}:8080/"
    body = wait_for(lambda: requests.get(url, timeout=1).text, 10, "httpd on n1")
    assert body == "preshift-box\n"
    assert requests.get(url + "cgi-bin/slow", timeout=3).text.strip() == "n1"
    # from n2's network namespace, across the bridge
    res = run(tb.node_command("n2", [sys.executable, "-c", FETCH, url]))
    assert res.returncode == 0 and res.stdout.strip() == "preshift-box", res.stderr
    # from a container on n2 (through n2's docker NAT)
    out = tb.client("n2").containers.run(
        IMAGE, ["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 8080"],
        remove=True, init=True,
    )
    assert b"200 OK" in out and out.endswith(b"preshift-box\n")
    # the container lives in n1's private containerd
    ctr = run(["ctr", "--address", str(tb.node("n1").containerd_socket), "-n", "moby",
               "containers", "ls", "-q"])
    assert c.id in ctr.stdout.split()


def test_cut_and_restore_link(clean: Testbed) -> None:
    tb = clean
    target = (tb.address("n3"), 7946)  # swarm gossip listens on every node

    def connects() -> bool:
        with socket.create_connection(target, timeout=0.5):
            return True

    assert wait_for(connects, 5, "gossip port of n3")
    tb.cut_link("n3")
    try:
        assert tb.status()["nodes"]["n3"]["link_up"] is False
        with pytest.raises(OSError):
            connects()
    finally:
        tb.restore_link("n3")
    assert wait_for(connects, 5, "n3 after the link came back")


# ---------------------------------------------------------------- swarm
def test_swarm_has_three_labelled_nodes_and_runs_services(clean: Testbed) -> None:
    tb = clean
    sw = tb.status()["swarm"]
    assert sw["state"] == "active"
    assert {name: (n["role"], n["state"]) for name, n in sw["nodes"].items()} == {
        "n1": ("manager", "ready"), "n2": ("worker", "ready"), "n3": ("worker", "ready")}
    for n in tb.nodes:
        assert sw["nodes"][n.name]["labels"] == {
            "preshift.rack": n.rack, "preshift.site": n.site, "preshift.host": n.host}
    svc = tb.client("n1").services.create(
        IMAGE, HTTPD, name="spread", init=True,
        mode=docker.types.ServiceMode("replicated", replicas=2),
        constraints=["node.labels.preshift.site==dc1"],
        endpoint_spec=docker.types.EndpointSpec(ports={8090: (80, "tcp", "host")}),
    )

    def running_on() -> list[str]:
        tasks = [t for t in svc.tasks(filters={"desired-state": "running"})
                 if t["Status"]["State"] == "running"]
        return sorted(tb.client("n1").nodes.get(t["NodeID"]).attrs["Description"]["Hostname"]
                      for t in tasks)

    wait_for(lambda: len(running_on()) == 2, 20, "2 tasks running")
    assert running_on() == ["n1", "n2"]
    assert requests.get(f"http://{tb.address('n2')}:8090/", timeout=3).status_code == 200


def test_reset_removes_services_containers_and_labels(tb: Testbed) -> None:
    m = tb.client("n1")
    m.services.create(IMAGE, HTTPD, name="leftover", init=True)
    for n in tb.nodes:
        tb.client(n.name).containers.run(IMAGE, HTTPD, detach=True, init=True)
    node = m.nodes.list(filters={"name": "n2"})[0]
    spec = node.attrs["Spec"]
    spec["Labels"]["preshift.avoid"] = "true"
    node.update(spec)
    t0 = time.monotonic()
    tb.reset()
    took = time.monotonic() - t0
    assert m.services.list() == []
    assert all(tb.client(n.name).containers.list(all=True) == [] for n in tb.nodes)
    assert "preshift.avoid" not in m.nodes.list(filters={"name": "n2"})[0].attrs["Spec"]["Labels"]
    assert took < 10


# ---------------------------------------------------------------- Prometheus and configs
def test_prometheus_is_up_with_a_valid_generated_config(tb: Testbed, tmp_path: Path) -> None:
    assert requests.get(f"{tb.prometheus_url}/-/ready", timeout=3).status_code == 200
    assert tb.prometheus_url == "http://127.0.0.1:19190"
    check = run(["promtool", "check", "config", str(SPEC.prometheus_config)])
    assert check.returncode == 0, check.stdout + check.stderr
    cfg = yaml.safe_load(SPEC.prometheus_config.read_text())
    assert cfg["global"]["scrape_interval"] == cfg["global"]["evaluation_interval"] == "1s"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["preshift"]["static_configs"] == [{"targets": ["127.0.0.1:19931"]}]
    assert jobs["node"]["static_configs"] == [
        {"targets": ["127.0.0.1:19932"],
         "labels": {"node": n, "__metrics_path__": f"/metrics/{n}"}} for n in ("n1", "n2", "n3")]

    def node_targets() -> dict[str, str]:
        res = requests.get(f"{tb.prometheus_url}/api/v1/targets", timeout=3).json()
        return {t["labels"]["node"]: t["scrapeUrl"] for t in res["data"]["activeTargets"]
                if t["labels"].get("job") == "node"}

    targets = wait_for(lambda: len(node_targets()) == 3 and node_targets(), 10, "3 targets")
    assert targets == {n: f"http://127.0.0.1:19932/metrics/{n}" for n in ("n1", "n2", "n3")}

    # regenerate with a rule file, reload, and back
    rules = tmp_path / "tt.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "tt", "rules": [
        {"record": "tt:up:sum", "expr": "sum(up)"}]}]}))
    tb.write_prometheus_config([rules])
    try:
        assert run(["promtool", "check", "config", str(SPEC.prometheus_config)]).returncode == 0
        tb.reload_prometheus()
        groups = requests.get(f"{tb.prometheus_url}/api/v1/rules", timeout=3).json()
        assert [g["name"] for g in groups["data"]["groups"]] == ["tt"]
    finally:
        tb.write_prometheus_config()
        tb.reload_prometheus()


def test_exporter_config_matches_the_config_schema(tb: Testbed, tmp_path: Path) -> None:
    path = tb.write_exporter_config(tmp_path / "exporter.yaml")
    cfg = load_config(path, environ={})
    assert cfg.prometheus.url == "http://127.0.0.1:19190"
    assert [(n.name, n.url, n.labels.host, n.labels.rack, n.labels.site) for n in cfg.nodes] == [
        ("n1", tb.socket_url("n1"), "n1", "r1", "dc1"),
        ("n2", tb.socket_url("n2"), "n2", "r2", "dc1"),
        ("n3", tb.socket_url("n3"), "n3", "r3", "dc2"),
    ]


def test_cli_status_json(tb: Testbed) -> None:
    res = CliRunner().invoke(testbed_cli.testbed_group, ["status", "--prefix", "tt", "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert all(n["reachable"] and n["pid"] for n in st["nodes"].values())
    assert st["prometheus"]["up"] is True
    assert st["nodes"]["n3"]["labels"]["preshift.site"] == "dc2"


def test_a_second_testbed_cannot_take_the_same_subnet_or_port(tb: Testbed) -> None:
    other = TestbedSpec(prefix="tu", subnet=SPEC.subnet, prometheus_port=19191)
    with pytest.raises(TestbedError, match=r"subnet 198\.18\.9\.0/24 is already used by .*ttbr0"):
        Testbed(other).up()
    other = TestbedSpec(prefix="tu", subnet="198.18.10", prometheus_port=SPEC.prometheus_port)
    with pytest.raises(TestbedError, match=re.escape("port 127.0.0.1:19190 is in use")):
        Testbed(other).up()
    assert_nothing_left(other)
    assert tb.status()["nodes"]["n1"]["reachable"]


# ---------------------------------------------------------------- disturbances
def test_stop_and_start_engine(clean: Testbed) -> None:
    tb = clean
    engine_id = tb.client("n3").info()["ID"]
    tb.stop_engine("n3")
    st = tb.status()["nodes"]["n3"]
    assert st["reachable"] is False and st["pid"] is None
    with pytest.raises(docker.errors.DockerException):
        tb.client("n3").ping()
    tb.start_engine("n3")
    assert tb.client("n3").info()["ID"] == engine_id
    assert tb.status()["nodes"]["n3"]["reachable"] is True


def test_engine_crash_with_a_running_container(clean: Testbed) -> None:
    tb = clean
    c = tb.client("n2").containers.run(IMAGE, HTTPD, detach=True, init=True)
    tb.stop_engine("n2", kill=True)  # SIGKILL: the container keeps running in containerd
    assert not tb.status()["nodes"]["n2"]["reachable"]
    tb.start_engine("n2")
    c.reload()  # the restarted engine found it again (and stopped it: no live-restore)
    assert c.status in ("exited", "running")


# ---------------------------------------------------------------- teardown (keep last)
def test_down_leaves_nothing(tb: Testbed) -> None:
    for n in tb.nodes:  # containers make overlay mounts, netns binds, cgroups and shims
        tb.client(n.name).containers.run(IMAGE, HTTPD, detach=True, init=True,
                                          ports={"80/tcp": (n.address, 8080)})
    assert our_mounts(SPEC) and our_processes(SPEC) and our_cgroups(SPEC)
    tb.down()
    assert_nothing_left(SPEC)


def test_up_after_a_killed_run_clears_what_it_left() -> None:
    spec = TestbedSpec(prefix="tt", subnet="198.18.9", prometheus_port=19190,
                       exporter_address="127.0.0.1:19931", simulator_address="127.0.0.1:19932")
    first = Testbed(spec).up()
    try:
        first.client("n1").containers.run(IMAGE, HTTPD, detach=True, init=True)
        first.client("n2").containers.run(IMAGE, HTTPD, detach=True, init=True)
        first.stop_engine("n2", kill=True)  # a crashed engine leaves its container behind
        old = State(spec.state_file).procs()
        del first  # the run is 'killed': no down()
        second = Testbed(spec)
        second.up()
        try:
            new = {p.role: p.pid for p in State(spec.state_file).procs()}
            assert set(new) >= {"n1/dockerd", "n3/dockerd", "prometheus"}
            # every old daemon is gone (its PID, if reused at all, runs something else)
            for p in old:
                if p.pid not in new.values():
                    assert p.marker not in cmdline(p.pid), p
            assert all(second.client(n.name).containers.list(all=True) == []
                       for n in second.nodes)
        finally:
            second.down()
    except BaseException:
        Testbed(spec).down()
        raise
    assert_nothing_left(spec)


def test_an_interrupted_up_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TestbedSpec(prefix="tv", subnet="198.18.10", prometheus=False)

    def interrupt() -> bytes:  # Ctrl-C once network, containerds and engines are up
        assert our_processes(spec) and our_netns(spec)
        raise KeyboardInterrupt

    monkeypatch.setattr("preshift.testbed.testbed.build_rootfs_tar", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Testbed(spec).up()
    assert_nothing_left(spec)


# ---------------------------------------------------------------- errors (no testbed needed)
def test_errors_are_clear(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(TestbedError, match="prefix 'Bad!'"):
        TestbedSpec(prefix="Bad!")
    assert cli.main(["testbed", "up", "--prefix", "TOO-LONG-PREFIX"]) == 2
    assert "error: invalid testbed spec" in capsys.readouterr().err
    bed = Testbed(TestbedSpec(prefix="tx"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="needs root"):
        bed.preflight()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = __import__("shutil").which
    monkeypatch.setattr("preshift.testbed.testbed.shutil.which",
                        lambda b, path=None: None if b in ("dockerd", "prometheus")
                        else real_which(b, path=path))
    with pytest.raises(TestbedError, match=r"dockerd \(apt-get install docker.io\).*"
                                           r"prometheus \(apt-get install prometheus\)"):
        bed.preflight()
