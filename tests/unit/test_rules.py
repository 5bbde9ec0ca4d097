"""The project's Prometheus rules pass `promtool check rules` and their own unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "rules"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_rules_are_valid() -> None:
    files = sorted(str(p) for p in RULES.glob("*.yml"))
    assert files, "no rule files in rules/"
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", *files], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p.name) for p in (RULES / "tests").glob("*_test.yml"))
    assert tests, "no promtool unit tests in rules/tests/"
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", *tests],
        capture_output=True, text=True, timeout=120, cwd=RULES / "tests",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(tests)


def test_alertmanager_example_is_valid() -> None:
    amtool = shutil.which("amtool") or "/usr/bin/amtool"
    example = RULES.parent / "compose" / "alertmanager.example.yml"
    proc = subprocess.run(
        [amtool, "check-config", str(example)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_alertmanager_example_routes_the_discrepancy_alert_to_the_webhook() -> None:
    amtool = shutil.which("amtool") or "/usr/bin/amtool"
    example = RULES.parent / "compose" / "alertmanager.example.yml"
    proc = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={example}",
         "alertname=PreshiftFootprintDiscrepancy", "preshift_action=migrate", "component=web"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.strip() == "preshift-webhook", proc.stdout + proc.stderr
    other = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={example}",
         "alertname=PreshiftExporterDown"],
        capture_output=True, text=True, timeout=60,
    )
    assert other.stdout.strip() == "null", other.stdout + other.stderr
