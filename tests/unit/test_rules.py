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
