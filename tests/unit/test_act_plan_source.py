"""The exporter plan source: strict parsing, and one real HTTP round trip."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from preshift.act.plan_source import ExporterPlanSource, parse_footprint
from preshift.errors import SourceError

DOC: dict[str, Any] = {
    "version": 1,
    "components": {"web": {"replicas": [{"name": "web-1", "node": "n1", "state": "running",
                                         "health": None}], "running_by_node": {"n1": 1}}},
    "plan": {"entries": [
        {"action": "move", "component": "web", "replica": "web-1", "from_node": "n1",
         "to_node": "n2", "reason": "risk", "priority": 50.8, "hps": 49.1, "target_hps": 98.3},
        {"action": "new_instance", "component": "web", "replica": "", "from_node": None,
         "to_node": "n3", "reason": "min", "priority": 10, "hps": None, "target_hps": 90},
    ]},
}


def test_parse() -> None:
    items = parse_footprint(DOC)
    assert [i.action for i in items] == ["move", "new_instance"]
    assert items[0].replicas[0].name == "web-1" and items[1].from_node is None
    assert parse_footprint({"version": 1, "plan": None}) == []


@pytest.mark.parametrize("doc, field", [
    ([], "footprint"),
    ({"version": 2}, "version"),
    ({"version": 1, "plan": {"entries": {}}}, "entries"),
    ({"version": 1, "plan": {"entries": [{"action": "teleport"}]}}, "action"),
    ({"version": 1, "plan": {"entries": [{"action": "move", "component": "w",
                                          "replica": "r", "from_node": "n1", "to_node": ""}]}},
     "to_node"),
    ({"version": 1, "plan": {"entries": [{"action": "move", "component": "w", "replica": "",
                                          "from_node": None, "to_node": "n2", "reason": ""}]}},
     "a move needs"),
    ({"version": 1, "plan": {"entries": [{"action": "scale_up", "component": "w",
                                          "replica": "", "from_node": None, "to_node": "n2",
                                          "reason": "", "priority": "high"}]}}, "priority"),
])
def test_bad_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(SourceError) as e:
        parse_footprint(doc)
    assert field in str(e.value) and not e.value.retriable


@pytest.fixture
def exporter() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"status": 200, "body": json.dumps(DOC).encode()}

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["path"] = self.path
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}/"
    try:
        yield state
    finally:
        srv.shutdown()
        srv.server_close()


def test_exporter_round_trip(exporter: dict[str, Any]) -> None:
    src = ExporterPlanSource(exporter["url"], timeout=2)
    assert len(src.fetch()) == 2 and exporter["path"] == "/api/v1/footprint"
    exporter["status"] = 503
    with pytest.raises(SourceError, match="no plan yet") as e:
        src.fetch()
    assert e.value.retriable
    exporter["status"], exporter["body"] = 200, b"<html>"
    with pytest.raises(SourceError, match="not JSON") as e:
        src.fetch()
    assert not e.value.retriable


def test_exporter_unreachable() -> None:
    with pytest.raises(SourceError) as e:
        ExporterPlanSource("http://127.0.0.1:9", timeout=0.5).fetch()
    assert e.value.retriable


def test_a_stale_plan_decides_nothing_but_a_stale_node_does_not_block() -> None:
    """Fail-safe: the exporter kept its last plan (inputs not trusted) → a retriable error,
    so the notification waits for a fresh plan; one unreachable node (doc.stale) is fine."""
    stale_plan = {**DOC, "plan": {**DOC["plan"], "stale": True}}
    with pytest.raises(SourceError, match="stale") as info:
        parse_footprint(stale_plan)
    assert info.value.retriable
    assert len(parse_footprint({**DOC, "stale": True, "plan": {**DOC["plan"],
                                                                 "stale": False}})) == 2
