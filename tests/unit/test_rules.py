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


def test_every_alert_has_a_runbook_section() -> None:
    """Each alert's runbook_url points at a heading of docs/runbook.md (GitHub's anchors:
    lower case, spaces to dashes, punctuation dropped)."""
    import re

    import yaml

    runbook = (RULES.parent / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)}
    missing = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule["annotations"]["runbook_url"]
                assert url.startswith("docs/runbook.md#"), url
                if url.split("#", 1)[1] not in anchors:
                    missing.append(f"{path.name}: {rule['alert']} → {url}")
    assert not missing, missing
