"""The exporter plan source: strict parsing, fail-safe refusals with their reason, and a real
HTTP round trip."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from preshift.act.events import WITHHELD_REASONS
from preshift.act.plan_source import ExporterPlanSource, PlanError, parse_footprint
from preshift.errors import SourceError

NOW = 1_750_000_000.0

DOC: dict[str, Any] = {
    "version": 1,
    "components": {"web": {"replicas": [{"name": "web-1", "node": "n1", "state": "running",
                                         "health": None}], "running_by_node": {"n1": 1}}},
    "plan": {"assessed_at": NOW, "stale": False, "entries": [
        {"action": "move", "component": "web", "replica": "web-1", "from_node": "n1",
         "to_node": "n2", "reason": "risk", "priority": 50.8, "hps": 49.1, "target_hps": 98.3},
        {"action": "new_instance", "component": "web", "replica": "", "from_node": None,
         "to_node": "n3", "reason": "min", "priority": 10, "hps": None, "target_hps": 90},
    ]},
}


def plan_doc(**plan: Any) -> dict[str, Any]:
    """DOC with its plan section's fields replaced (None: removed)."""
    body = {k: v for k, v in {**DOC["plan"], **plan}.items() if v is not None}
    return {**DOC, "plan": body}


def test_parse() -> None:
    items = parse_footprint(DOC)
    assert [i.action for i in items] == ["move", "new_instance"]
    assert items[0].replicas[0].name == "web-1" and items[1].from_node is None
    assert items.assessed_at == NOW
    assert parse_footprint(plan_doc(entries=[])) == []  # fresh and empty: nothing to do


def test_no_plan_yet_is_retried_not_read_as_nothing_to_do() -> None:
    """plan null (no assessment yet, e.g. the failure history is not restored): "nothing to
    do" would be decided from no data; the notification waits instead."""
    doc = {"version": 1, "plan": None,
           "errors": {"stages": {"assess": "not assessed: the failure history is not "
                                 "restored from Prometheus yet; none made yet"}}}
    with pytest.raises(PlanError, match=r"no plan yet.*failure history") as e:
        parse_footprint(doc)
    assert e.value.retriable and e.value.reason == "plan_unavailable"
    with pytest.raises(PlanError, match="no plan yet") as e:
        parse_footprint({"version": 1})  # absent, and no errors section either
    assert e.value.reason == "plan_unavailable"


@pytest.mark.parametrize("doc, field", [
    ([], "footprint"),
    ({"version": 2}, "version"),
    (plan_doc(entries={}), "entries"),
    (plan_doc(entries=[{"action": "teleport"}]), "action"),
    (plan_doc(entries=[{"action": "move", "component": "web", "replica": "r",
                        "from_node": "n1", "to_node": ""}]), "to_node"),
    (plan_doc(entries=[{"action": "move", "component": "web", "replica": "",
                        "from_node": None, "to_node": "n2", "reason": ""}]), "a move needs"),
    (plan_doc(entries=[{"action": "scale_up", "component": "web", "replica": "",
                        "from_node": None, "to_node": "n2", "reason": "",
                        "priority": "high"}]), "priority"),
    # its age cannot be checked
    (plan_doc(assessed_at=None), "plan.assessed_at"),
    (plan_doc(assessed_at="yesterday"), "plan.assessed_at"),
    # an entry for a component without a replicas section: nothing to check it against
    (plan_doc(entries=[{**DOC["plan"]["entries"][0], "component": "api"}]),
     "components.api"),
    ({**DOC, "components": {"web": {"running_by_node": {}}}}, "web.replicas"),
])
def test_bad_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(PlanError) as e:
        parse_footprint(doc)
    assert field in str(e.value) and not e.value.retriable
    assert e.value.reason == "plan_invalid"


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
    plan = src.fetch()
    assert len(plan) == 2 and exporter["path"] == "/api/v1/footprint"
    assert getattr(plan, "assessed_at", None) == NOW
    # (status, body) → (retriable, reason)
    cases = [
        (503, b"{}", "no plan yet", True, "plan_unavailable"),
        (500, b"{}", "HTTP 500", True, "plan_unavailable"),
        (404, b"{}", "HTTP 404", False, "plan_invalid"),
        (200, b"<html>", "not JSON", False, "plan_invalid"),
        (200, json.dumps(plan_doc(stale=True)).encode(), "stale", True, "plan_stale"),
    ]
    for status, body, match, retriable, reason in cases:
        exporter["status"], exporter["body"] = status, body
        with pytest.raises(PlanError, match=match) as e:
            src.fetch()
        assert (e.value.retriable, e.value.reason) == (retriable, reason), status
        assert e.value.reason in WITHHELD_REASONS


def test_exporter_unreachable() -> None:
    with pytest.raises(PlanError) as e:
        ExporterPlanSource("http://127.0.0.1:9", timeout=0.5).fetch()
    assert e.value.retriable and e.value.reason == "plan_unavailable"
    assert isinstance(e.value, SourceError)  # the executor's retry rules apply


def test_a_stale_plan_decides_nothing_but_a_stale_node_does_not_block() -> None:
    """Fail-safe: the exporter kept its last plan (inputs not trusted) → a retriable error,
    so the notification waits for a fresh plan; one unreachable node (doc.stale) is fine."""
    stale_plan = plan_doc(stale=True)
    with pytest.raises(PlanError, match="stale") as info:
        parse_footprint(stale_plan)
    assert info.value.retriable and info.value.reason == "plan_stale"
    assert len(parse_footprint({**DOC, "stale": True, "plan": {**DOC["plan"],
                                                                 "stale": False}})) == 2
