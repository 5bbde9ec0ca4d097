"""The README's main command, shortened: `preshift demo --duration 40` brings the whole stack
up (testbed, Prometheus, Alertmanager, HAProxy, simulator, exporter, webhook, load), prints
live lines and a summary, and leaves nothing behind. It uses the demo's own names and ports
(prefix ps), so it cannot run while a demo runs on the same machine. The full story (a
migration minutes before the limit) takes about 5 minutes: see README.md for a whole run."""

from __future__ import annotations

import subprocess

import pytest

from preshift.testbed import Testbed

from .stack import ROOT, preshift_argv

pytestmark = pytest.mark.integration


def test_demo_runs_the_stack_and_tears_it_down() -> None:
    proc = subprocess.run(
        preshift_argv("demo", "--duration", "40", "--every", "5"),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Preshift demo is running" in out
    lines = [ln for ln in out.splitlines() if "| requests " in ln]
    assert len(lines) >= 4, out[-3000:]
    assert "node HPS n1=" in lines[-1] and "alert:" in lines[-1]
    assert " 0 failed" in lines[-1], lines[-1]  # the steady load through HAProxy
    assert "Summary" in out and "requests through HAProxy:" in out
    assert "done: nothing left behind" in out
    assert Testbed.attach("ps").leftovers() == []
