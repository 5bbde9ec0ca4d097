"""docs/openapi.yaml against the webhook as it is: its routes, its records and real answers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask
from werkzeug.test import TestResponse

from preshift.act.journal import Journal
from preshift.act.phases import Phase
from preshift.act.records import ACTIONS, APPROVALS, REQUESTS, Migration, Notification, Step

from .webhook_support import BEARER, alert, make_app, payload

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
EXPECTED_PATHS = {
    "/api/v1/alerts",
    "/api/v1/migrations",
    "/api/v1/migrations/{id}",
    "/api/v1/migrations/{id}/approve",
    "/api/v1/migrations/{id}/abort",
    "/api/v1/migrations/{id}/rollback",
    "/api/v1/notifications",
    "/-/healthy",
    "/-/ready",
    "/metrics",
}
OPEN_PATHS = {"/-/healthy", "/-/ready", "/metrics"}
#: Flask's variable names → the spec's (the request verb is spelled out in three paths).
RENAMES = {"migration_id": "id"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


# (a) the document ----------------------------------------------------------------------------

def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _pointer(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_spec_is_openapi_3_1_with_the_expected_paths(spec: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", str(spec["openapi"]))
    assert spec["info"]["title"] and spec["info"]["version"]
    assert set(spec["paths"]) == EXPECTED_PATHS
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["basicAuth"] == {**schemes["basicAuth"], "type": "http", "scheme": "basic"}
    assert spec["security"] == [{"bearerAuth": []}, {"basicAuth": []}]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert method in METHODS, (path, method)
            assert op.get("security") == ([] if path in OPEN_PATHS else None), (path, method)
            if path not in OPEN_PATHS:
                assert "401" in op["responses"], (path, method)


def test_every_ref_resolves_and_every_schema_is_valid(spec: dict[str, Any]) -> None:
    for ref in _refs(spec):
        assert _pointer(spec, ref) is not None, ref
    for name, schema in spec["components"]["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pytest.fail(f"components.schemas.{name}: {exc.message}")


def test_path_parameters_are_declared(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        templated = set(re.findall(r"\{(\w+)\}", path))
        for method, op in item.items():
            params = [_pointer(spec, p["$ref"]) if "$ref" in p else p
                      for p in op.get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == templated, (path, method)


def test_records_match_their_schemas(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name, record in (("Migration", Migration), ("Step", Step),
                         ("Notification", Notification)):
        fields = {f.name for f in dataclasses.fields(record)}
        assert set(schemas[name]["properties"]) == fields, name
        assert set(schemas[name]["required"]) == fields, name
    assert schemas["Phase"]["enum"] == [str(p) for p in Phase]
    props = schemas["Migration"]["properties"]
    assert props["action"]["enum"] == list(ACTIONS)
    assert props["approval"]["enum"] == list(APPROVALS)
    assert props["request"]["enum"] == [*REQUESTS, None]


# (b) the spec and the app's routes -----------------------------------------------------------

def _app_routes(app: Flask) -> set[tuple[str, str]]:
    """(spec path, method) of every rule under /api/, /-/ and /metrics."""
    out: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith(("/api/", "/-/")) or rule.rule == "/metrics"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>",
                      lambda m: "{" + RENAMES.get(m.group(1), m.group(1)) + "}", rule.rule)
        # one Flask rule serves the three requests: POST .../<migration_id>/<what>
        paths = [path.replace("{what}", r) for r in REQUESTS] if "{what}" in path else [path]
        for p in paths:
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                out.add((p, method.lower()))
    return out


def test_spec_and_app_serve_the_same_routes(spec: dict[str, Any], app: Flask) -> None:
    documented = {(p, m) for p, item in spec["paths"].items() for m in item}
    served = _app_routes(app)
    assert served - documented == set(), "served but not in docs/openapi.yaml"
    assert documented - served == set(), "in docs/openapi.yaml but not served"


def test_the_request_rule_takes_exactly_the_documented_requests(app: Flask) -> None:
    c = app.test_client()
    r = c.post("/api/v1/migrations/aaaa0001/promote", headers=BEARER)
    assert r.status_code == 404 and "approve, abort, rollback" in r.json["error"]


# (c) real answers against the schemas ---------------------------------------------------------

def _schema_of(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} {status} is not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = _pointer(spec, response["$ref"])
    return response["content"]["application/json"]["schema"]


def _validate(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    # The references point into the spec's components: validate from a root that holds them.
    root = {"components": spec["components"], "allOf": [schema]}
    jsonschema.Draft202012Validator(root).validate(instance)


def check(spec: dict[str, Any], path: str, method: str, r: TestResponse) -> Any:
    """Validate an answer against the spec (status documented, JSON, schema)."""
    assert r.mimetype == "application/json", (path, r.status_code, r.data[:200])
    body = r.get_json()
    _validate(spec, _schema_of(spec, path, method, r.status_code), body)
    return body


def _add_migration(app: Flask, mid: str) -> None:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        m = j.create_migration(Migration(
            id=mid, component="web", action="move", target_node="n2", canary_name=f"web-{mid}",
            source_node="n1", source_name="web-1", backend="be_web", data={"done": ["x"]},
        ), detail="move web-1 n1→n2")
        m = j.update(m, phase=Phase.STARTING)
        step = j.begin_step(m, "start", "create web-" + mid + " on n2")
        j.end_step(step, "ok")
        j.begin_step(m, "probe")  # in progress: outcome and done_at null


def test_alert_answers_match_the_spec(spec: dict[str, Any], app: Flask) -> None:
    c, path = app.test_client(), "/api/v1/alerts"
    request_schema = spec["paths"][path]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    good = payload(alert(), alert(fingerprint="abcdef12", labels={"alertname": "Other"}))
    _validate(spec, request_schema, good)  # the spec accepts what Alertmanager sends

    body = check(spec, path, "post", c.post(path, json=good, headers=BEARER))
    assert body == {"accepted": 2, "duplicates": 0}
    body = check(spec, path, "post", c.post(path, json=good, headers=BEARER))
    assert body == {"accepted": 0, "duplicates": 2}

    bad = payload(alert(status="pending"), alert(fingerprint=None))
    with pytest.raises(jsonschema.ValidationError):
        _validate(spec, request_schema, bad)  # and rejects what the app rejects
    r = c.post(path, json=bad, headers=BEARER)
    assert r.status_code == 400
    assert len(check(spec, path, "post", r)["problems"]) == 2

    r = c.post(path, json={**good, "version": "3"}, headers=BEARER)
    assert r.status_code == 400 and "problems" not in check(spec, path, "post", r)
    r = c.post(path, data=b"{", headers={**BEARER, "Content-Type": "application/json"})
    assert r.status_code == 400 and check(spec, path, "post", r)
    r = c.post(path, data=b"x", headers={**BEARER, "Content-Type": "text/plain"})
    assert r.status_code == 415 and check(spec, path, "post", r)
    r = c.post(path, json=good)
    assert r.status_code == 401 and check(spec, path, "post", r)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="preshift"'
    r = c.get(path, headers=BEARER)
    assert r.status_code == 405 and check(spec, path, "post", r)


def test_oversized_alert_body_matches_the_spec(spec: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(tmp_path, max_body=1024)
    r = app.test_client().post("/api/v1/alerts", data=b"x" * 2048,
                               headers={**BEARER, "Content-Type": "application/json"})
    assert r.status_code == 413
    check(spec, "/api/v1/alerts", "post", r)


def test_migration_answers_match_the_spec(spec: dict[str, Any], app: Flask) -> None:
    c, api = app.test_client(), "/api/v1/migrations"
    _add_migration(app, "aaaa0001")
    _add_migration(app, "aaaa0002")

    body = check(spec, api, "get", c.get(api, headers=BEARER))
    assert [m["id"] for m in body["migrations"]] == ["aaaa0002", "aaaa0001"]
    body = check(spec, api, "get",
                 c.get(f"{api}?active=TRUE&component=web&limit=1", headers=BEARER))
    assert len(body["migrations"]) == 1
    r = c.get(f"{api}?active=maybe&limit=0&component=a/b&since=1", headers=BEARER)
    assert r.status_code == 400
    assert len(check(spec, api, "get", r)["problems"]) == 4

    one = f"{api}/{{id}}"
    body = check(spec, one, "get", c.get(f"{api}/aaaa0001", headers=BEARER))
    assert [s["action"] for s in body["steps"]] == ["plan", "start", "probe"]
    assert body["steps"][-1]["outcome"] is None
    r = c.get(f"{api}/nope", headers=BEARER)
    assert r.status_code == 404 and check(spec, one, "get", r)

    abort, approve, rollback = (f"{api}/{{id}}/{w}" for w in ("abort", "approve", "rollback"))
    r = c.post(f"{api}/aaaa0001/approve", headers=BEARER)
    assert r.status_code == 409 and check(spec, approve, "post", r)
    body = check(spec, rollback, "post", c.post(f"{api}/aaaa0001/rollback", headers=BEARER))
    assert body["migration"]["request"] == "rollback"
    body = check(spec, abort, "post", c.post(f"{api}/aaaa0002/abort", headers=BEARER))
    assert body["migration"]["request"] == "abort"
    r = c.post(f"{api}/nope/abort", headers=BEARER)
    assert r.status_code == 404 and check(spec, abort, "post", r)


def test_notification_and_health_answers_match_the_spec(spec: dict[str, Any],
                                                        app: Flask) -> None:
    c, path = app.test_client(), "/api/v1/notifications"
    c.post("/api/v1/alerts", json=payload(alert(), alert(fingerprint="abcdef12",
                                                         labels={"alertname": "X"})),
           headers=BEARER)
    body = check(spec, path, "get", c.get(path, headers=BEARER))
    assert len(body["notifications"]) == 2
    body = check(spec, path, "get", c.get(f"{path}?unhandled=yes&limit=1", headers=BEARER))
    assert len(body["notifications"]) == 1
    r = c.get(f"{path}?unhandled=2", headers=BEARER)
    assert r.status_code == 400 and check(spec, path, "get", r)

    assert check(spec, "/-/healthy", "get", c.get("/-/healthy")) == {"status": "ok"}
    body = check(spec, "/-/ready", "get", c.get("/-/ready"))
    assert body["unhandled_notifications"] == 2
    r = c.get("/metrics")
    assert r.status_code == 200
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [r.content_type.replace(" ", "")] == [k.replace(" ", "") for k in content]
    assert b"preshift_webhook_" in r.data
