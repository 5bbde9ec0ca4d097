"""The Grafana dashboards (grafana/): the committed JSON is what grafana/build.py generates, every
query uses the provisioned data source, and every metric a query names exists (in the
exporter's table, the webhook's FAMILIES, the recording rules or a short allowlist), so a
renamed metric breaks this test. That Prometheus accepts each query is checked against a real
Prometheus in tests/integration/test_grafana_queries.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.metrics import SPECS
from webhook.metrics import FAMILIES, PREFIX

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
COMMITTED = GRAFANA / "dashboards"
#: Metrics the dashboards may use that Preshift does not define.
ALLOWED = frozenset({"ALERTS", "up"})
ALLOWED_PREFIXES = ("haproxy_",)
#: PromQL words an identifier can be that are not metric names.
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})


def load_build() -> ModuleType:
    """grafana/build.py as a module (grafana/ is not a package)."""
    name = "preshift_grafana_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, dict[str, Any]]:
    """The committed dashboards by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(COMMITTED.glob("*.json"))}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (a lexical approximation that is good enough for
    the dashboards: strings, matchers, ranges and grouping label lists are dropped first)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    found = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", e)
    return {n for n in found if n not in KEYWORDS}


def known_metrics() -> set[str]:
    """Every metric name Preshift exposes or records."""
    known = set(SPECS)
    for kind, name, *_ in FAMILIES:
        full = PREFIX + name
        if kind == "counter":
            known.add(full + "_total")
        elif kind == "histogram":
            known.update(full + s for s in ("_bucket", "_sum", "_count"))
        else:
            known.add(full)
    for path in sorted((ROOT / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            known.update(r["record"] for r in group["rules"] if "record" in r)
    return known


def signal_metrics() -> set[str]:
    """Metrics of the default signals' queries (the drill-down plots them)."""
    from preshift.config import DEFAULT_SIGNALS

    return {m for s in DEFAULT_SIGNALS for m in metric_names(s.query)}


def provisioned_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "${PRESHIFT_PROMETHEUS_URL}"
    return ds["uid"]


def datasources(node: Any, where: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every `datasource` key anywhere in a document."""
    out: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                out.append((where, v))
            out.extend(datasources(v, f"{where}/{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(datasources(v, f"{where}/{i}"))
    return out


def test_regenerating_gives_the_committed_json(tmp_path: Path) -> None:
    written = load_build().write(tmp_path)
    assert sorted(p.name for p in written) == sorted(committed()), "dashboards added/removed"
    for path in written:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), (
            f"{path.name} differs from the committed file: run `.venv/bin/python grafana/build.py`"
        )


def test_the_four_dashboards_exist_with_stable_uids_and_ids() -> None:
    docs = committed()
    assert set(docs) == {
        "preshift-overview.json", "preshift-component.json", "preshift-migrations.json",
        "preshift-health.json",
    }
    for name, doc in docs.items():
        assert doc["uid"] == name.removesuffix(".json")
        ids = [p["id"] for p in doc["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        for p in doc["panels"]:
            refs = [t["refId"] for t in p.get("targets", [])]
            assert len(set(refs)) == len(refs) and all(refs), (name, p["title"])
    (var,) = docs["preshift-component.json"]["templating"]["list"]
    assert var["name"] == "component"


def test_every_panel_query_and_variable_uses_the_provisioned_datasource() -> None:
    uid = provisioned_uid()
    for name, doc in committed().items():
        refs = datasources(doc)
        assert refs, name
        for where, ref in refs:
            assert ref == {"type": "prometheus", "uid": uid}, f"{name}{where}: {ref}"
        for p in doc["panels"]:
            if p["type"] != "row":
                assert p.get("datasource", {}).get("uid") == uid, (name, p["title"])
                assert p.get("targets"), (name, p["title"])


def test_dashboard_provider_points_at_a_path() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/preshift.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_metric_a_query_names_exists() -> None:
    build = load_build()
    known = known_metrics() | signal_metrics() | ALLOWED
    used: set[str] = set()
    for name, doc in committed().items():
        for where, expr in build.queries(doc):
            for metric in metric_names(build.substitute(expr)):
                used.add(metric)
                assert metric in known or metric.startswith(ALLOWED_PREFIXES), (
                    f"{name} {where}: unknown metric {metric!r} in {expr}"
                )
    # the dashboards cover both sides and the recording rules
    assert "preshift_health_projection_score" in used
    assert "preshift_webhook_canary_weight_percent" in used
    assert "component:preshift_discrepancy_excess:ratio" in used


def test_variables_are_all_substituted() -> None:
    build = load_build()
    for name, doc in committed().items():
        for where, expr in build.queries(doc):
            # `$1` is label_replace's capture group, not a Grafana variable
            left = re.findall(r"\$\{?[A-Za-z_]\w*", build.substitute(expr))
            assert not left, f"{name} {where}: unsubstituted {left} in {expr}"


@pytest.mark.parametrize("expr, names", [
    ('sum by (le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}),
    ("b and on (node) (c > 0)", {"b", "c"}),
    ('label_replace(d, "n", "$1", "r", "(.*)") or vector(0)', {"d"}),
    ("time() - max(e:f:g)", {"e:f:g"}),
    ("histogram_quantile(0.99, h)", {"h"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_renamed_metric_is_caught() -> None:
    known = known_metrics()
    assert not metric_names("preshift_health_projection_scores") <= known
