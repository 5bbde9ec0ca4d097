"""schemathesis against docs/openapi.yaml: every operation of the spec, called on the
in-process app with a valid bearer token, with the data schemathesis generates from the spec
(valid and invalid): never a 5xx, and every answer's status code, content type, headers and
body conform to the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from preshift.act.journal import Journal
from preshift.act.records import Migration

from .webhook_support import BEARER, alert, make_app, payload

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_path(SPEC_PATH)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One app for the module, with a migration and notifications in its journal, so that
    the answers with rows in them are checked too."""
    app = make_app(tmp_path_factory.mktemp("schemathesis"))
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        j.create_migration(Migration(
            id="aaaa0001", component="web", action="move", target_node="n2",
            canary_name="web-aaaa0001", source_node="n1", source_name="web-1", backend="be_web"))
    r = app.test_client().post("/api/v1/alerts", headers=BEARER,
                               json=payload(alert(), alert(fingerprint="abcdef12")))
    assert r.status_code == 202
    yield app


def test_every_operation_is_covered() -> None:
    ops = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert len(ops) == 10, ops


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_the_app_conforms_to_its_spec(case: schemathesis.Case, app: Flask) -> None:
    case.call_and_validate(app=app, headers=BEARER, checks=CHECKS)
