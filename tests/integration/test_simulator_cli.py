"""`preshift simulate` as a subprocess: clear one-line errors, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def preshift(*args: str) -> list[str]:
    return [sys.executable, "-m", "preshift.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes: [n1]\ndefaults:\n  temprature: {steady: 1}\n", "defaults.temprature"),
        ("nodes: [n1]\ndefaults:\n  load: {ramp: {from: 1, to: 2, over: soon}}\n", "ramp.over"),
        ("defaults: {}\n", "--nodes"),
    ],
)
def test_bad_scenario_exits_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run(
        preshift("simulate", "--scenario", str(path), "--listen", f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        preshift("simulate", "--scenario", str(tmp_path / "nope.yaml")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cannot read scenario file" in result.stderr


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            preshift(
                "simulate",
                "--scenario",
                str(REPO / "scenarios" / "steady.yaml"),
                "--listen",
                f"127.0.0.1:{port}",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "--listen" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_runs_until_signalled_then_exits_cleanly(signum: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        preshift(
            "simulate",
            "--scenario",
            str(REPO / "scenarios" / "degrade-n2.yaml"),
            "--listen",
            f"127.0.0.1:{port}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/n2", timeout=2) as r:
                    assert b"ipmi_temperature_celsius" in r.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
