"""`preshift exporter` as a real process, with every node unreachable and Prometheus down.

Needs neither root nor the testbed: engines are sockets that do not exist and ports on
127.0.0.1 where nothing listens. Only the process this test starts is ever signalled.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROMTOOL = "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sample(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    dead = free_port()  # nothing listens there: connections are refused at once
    path = tmp_path / "preshift.yaml"
    path.write_text(
        "nodes:\n"
        f"  - {{name: n1, url: 'unix://{tmp_path}/n1.sock', labels: {{rack: r1, site: s1}}}}\n"
        f"  - {{name: n2, url: 'tcp://127.0.0.1:{dead}'}}\n"
        f"prometheus: {{url: 'http://127.0.0.1:{dead}', timeout: 2s}}\n"
        "docker: {timeout: 2s}\n"
        "refresh_interval: 0.5s\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def exporter(config_file: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config", str(config_file),
             "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:  # only the PID this test started
            proc.kill()
            proc.wait(timeout=10)


def wait_ready(proc: subprocess.Popen, port: int, log: Path, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if get(port, "/-/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"not ready within {within} s:\n{log.read_text()}")


def test_serves_with_everything_down_and_stops_on_sigterm(exporter) -> None:
    proc, port, log = exporter
    wait_ready(proc, port, log)
    deadline = time.monotonic() + 20  # wait for a few refreshes (0.5 s apart)
    while True:
        status, body = get(port, "/metrics")
        text = body.decode()
        if (sample(text, "preshift_refreshes_total") or 0) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    assert sample(text, "preshift_refreshes_total") >= 3
    assert sample(text, "preshift_node_up", '{node="n1"}') == 0
    assert sample(text, "preshift_node_up", '{node="n2"}') == 0
    assert sample(text, "preshift_refresh_errors_total", '{stage="inventory"}') >= 3
    assert sample(text, "preshift_refresh_errors_total", '{stage="signals"}') >= 3
    assert sample(text, "preshift_source_up", '{source="docker"}') == 0
    assert sample(text, "preshift_source_up", '{source="prometheus"}') == 0
    assert sample(text, "preshift_up") == 0
    assert sample(text, "preshift_snapshot_stale") == 1
    # not restored from Prometheus yet: the failure counters wait (no phantom jump later)
    assert "preshift_node_failures_total{" not in text
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                           timeout=30, check=False)
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b"")

    status, body = get(port, "/api/v1/footprint")
    doc = json.loads(body)
    assert status == 200 and doc["stale"] is True
    assert [(n["name"], n["reachable"]) for n in doc["nodes"]] == [("n1", False), ("n2", False)]
    assert doc["errors"]["nodes"]["n2"]

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    text = log.read_text()
    assert "listening on http://127.0.0.1:" in text and "stopped" in text
    assert "Traceback" not in text  # expected source errors are one-line warnings
    # each problem is logged when it starts, not on every refresh
    assert text.count("WARNING exporter.refresh: inventory:") == 1


def test_invalid_config_exits_2_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: []\nrefresh_interval: -1\n", encoding="utf-8")
    res = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(bad), "--listen", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2
    assert "nodes" in res.stderr and "refresh_interval" in res.stderr
    assert "Traceback" not in res.stderr and "listening" not in res.stderr


def test_a_busy_port_is_a_clear_error(config_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "exporter", "--config", str(config_file),
             "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )
    assert res.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_once_prints_the_footprint(config_file: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", str(config_file), "--once"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["stale"] is True and {n["name"] for n in doc["nodes"]} == {"n1", "n2"}
