"""A real Prometheus (2.42, loopback) scrapes the simulator with the config in docs/simulator.md."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from preshift.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"

CONFIG = """\
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: preshift-simulator-nodes
    static_configs:
      - targets: ["{address}"]
        labels: {{node: n1}}
      - targets: ["{address}"]
        labels: {{node: n2}}
      - targets: ["{address}"]
        labels: {{node: n3}}
    relabel_configs:
      - source_labels: [node]
        target_label: __metrics_path__
        replacement: /metrics/$1
  - job_name: preshift-simulator
    static_configs:
      - targets: ["{address}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]


def test_prometheus_scrapes_each_node_and_labels_it(tmp_path: Path) -> None:
    sim = Simulator.from_file(REPO / "scenarios" / "degrade-n2.yaml")
    with sim.serve("127.0.0.1", 0) as srv:
        (tmp_path / "prometheus.yml").write_text(CONFIG.format(address=f"127.0.0.1:{srv.port}"))
        port = free_port()
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            # Wait until all four targets (three nodes and the simulator itself) were scraped.
            deadline = time.monotonic() + 30
            while True:
                try:
                    if len(query(base, "up == 1")) == 4:
                        break
                except OSError:
                    pass
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "Prometheus did not scrape all targets"
                time.sleep(0.25)
            result = query(base, 'ipmi_temperature_celsius{name="CPU Temp"}')
            assert sorted(r["metric"]["node"] for r in result) == ["n1", "n2", "n3"]
            for r in result:
                assert "exported_node" not in r["metric"]  # no clash with the target label
                assert r["metric"]["job"] == "preshift-simulator-nodes"
            assert len(query(base, 'container_memory_working_set_bytes{node="n2"}')) == 0
            assert len(query(base, "node_load15")) == 3
            assert len(query(base, 'up{job="preshift-simulator"} == 1')) == 1
            assert len(query(base, "preshift_simulator_scenario_info")) == 1
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
