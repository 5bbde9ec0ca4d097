"""docs/metrics.md is generated from the metric table; docs/exporter-api.md matches the JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from exporter.metrics import METRICS, render_docs
from exporter.testing import sample_snapshot

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_metrics_doc_is_up_to_date() -> None:
    committed = (DOCS / "metrics.md").read_text(encoding="utf-8")
    assert committed == render_docs(), (
        "docs/metrics.md is out of date: run `python -m exporter.metrics > docs/metrics.md`"
    )


def test_metrics_doc_names_every_metric() -> None:
    text = render_docs()
    for m in METRICS:
        assert f"| `{m.name}` | {m.kind} |" in text


def _skeleton(doc: dict[str, Any]) -> dict[str, Any]:
    """Field names at every fixed-key level, and the types of leaf values."""
    component = next(iter(doc["components"].values()))
    scores, plan, forecasts = doc["scores"], doc["plan"], doc["forecasts"]
    signal = next(s for s in forecasts["signals"].values() if s["series"])
    series = next(iter(signal["series"].values()))
    return {
        "scores": sorted(scores),
        "score_replica": {k: type(v).__name__ for k, v in scores["replicas"][0].items()},
        "score_factors": sorted(scores["replicas"][0]["factors"]),
        "score_node": sorted(next(iter(scores["nodes"].values()))),
        "plan": {k: type(v).__name__ for k, v in plan.items()},
        "plan_entry": sorted(plan["entries"][0]),
        "plan_held": sorted(plan["held"][0]),
        "forecasts": sorted(forecasts),
        "signal": sorted(signal),
        "quality": sorted(signal["quality"]),
        "series": sorted(series),
        "bands": [len(series["lower"]), len(series["upper"])],
        "top": sorted(doc),
        "node": {k: type(v).__name__ for k, v in doc["nodes"][0].items()},
        "component": sorted(component),
        "replica": sorted(component["replicas"][0]),
        "running_by_node": {type(v).__name__ for v in component["running_by_node"].values()},
        "errors": sorted(doc["errors"]),
        "error_stages": sorted(doc["errors"]["stages"]),
        "sources_up": doc["sources_up"].keys() and sorted(doc["sources_up"]),
        "stages": sorted(doc["stages"]),
        "stage": {k: type(v).__name__ for k, v in doc["stages"]["signals"].items()},
        "types": [type(doc[k]).__name__ for k in ("version", "generated_at", "stale")],
    }


def test_footprint_json_matches_the_documented_shape() -> None:
    text = (DOCS / "exporter-api.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]
    actual = json.loads(sample_snapshot(1_750_000_000.0).footprint_json)
    assert _skeleton(actual) == _skeleton(example)
    for field in _skeleton(actual)["top"]:
        assert f"`{field}" in text, f"{field} is not described in docs/exporter-api.md"
