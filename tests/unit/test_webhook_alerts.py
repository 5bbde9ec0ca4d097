"""POST /api/v1/alerts with Flask's test client and a temp journal: auth, limits, dedupe."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from flask import Flask

from preshift.act.journal import Journal
from webhook.alerts import read_body
from webhook.payload import PayloadError

from .webhook_support import BEARER, PASSWORD, TOKEN, USER, alert, basic, make_app, payload

URL = "/api/v1/alerts"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def rows(app: Flask) -> list[tuple[str, str, str]]:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        return [(n.status, n.fingerprint, n.starts_at) for n in j.notifications()]


def metric(app: Flask, name: str, labels: str = "") -> float:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
    {"Authorization": "Basic !!!"},
    basic(USER, PASSWORD),  # basic auth is not configured in this app
])
def test_without_a_valid_token_401_and_nothing_is_journaled(
    app: Flask, headers: dict[str, str]
) -> None:
    r = app.test_client().post(URL, json=payload(), headers=headers)
    assert r.status_code == 401
    assert r.headers.get_all("WWW-Authenticate") == ['Bearer realm="preshift"']
    assert "Authorization header" in r.json["error"]
    assert rows(app) == []
    assert metric(app, "preshift_webhook_notifications_rejected_total",
                  '{reason="unauthorized"}') == 1


def test_401_comes_before_reading_or_parsing_the_body(app: Flask) -> None:
    r = app.test_client().post(URL, data=b"x" * (2 << 20), content_type="text/plain")
    assert r.status_code == 401  # not 413 or 415: strangers learn nothing about our limits


def test_a_good_bearer_token_is_accepted(app: Flask) -> None:
    r = app.test_client().post(URL, json=payload(), headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 202 and r.json == {"accepted": 1, "duplicates": 0}


def test_basic_auth(tmp_path: Path) -> None:
    app = make_app(tmp_path, environ={"PRESHIFT_WEBHOOK_PASSWORD": PASSWORD}, basic_user=USER)
    c = app.test_client()
    assert c.post(URL, json=payload(), headers=basic(USER, PASSWORD)).status_code == 202
    for bad in (basic(USER, "nope"), basic("someone", PASSWORD), BEARER):
        r = c.post(URL, json=payload(), headers=bad)
        assert r.status_code == 401
        assert r.headers.get_all("WWW-Authenticate") == ['Basic realm="preshift"']
    assert len(rows(app)) == 1


def test_token_and_basic_together_offer_both_challenges(tmp_path: Path) -> None:
    app = make_app(tmp_path, environ={"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
                                      "PRESHIFT_WEBHOOK_PASSWORD": PASSWORD}, basic_user=USER)
    c = app.test_client()
    assert c.post(URL, json=payload(), headers=BEARER).status_code == 202
    assert c.post(URL, json=payload(alert(fingerprint="ab")),
                  headers=basic(USER, PASSWORD)).status_code == 202
    r = c.post(URL, json=payload())
    assert r.headers.get_all("WWW-Authenticate") == ['Bearer realm="preshift"',
                                                     'Basic realm="preshift"']


def test_allow_unauthenticated(tmp_path: Path) -> None:
    app = make_app(tmp_path, environ={}, allow_unauthenticated=True)
    assert app.test_client().post(URL, json=payload()).status_code == 202


# --- malformed, too large -----------------------------------------------------------------


def test_malformed_payload_is_400_naming_the_field(app: Flask) -> None:
    a = alert()
    del a["fingerprint"]
    r = app.test_client().post(URL, json=payload(a), headers=BEARER)
    assert r.status_code == 400
    assert r.json["problems"] == ["alerts.0.fingerprint: required field is missing"]
    assert "Alertmanager webhook notification" in r.json["error"]
    assert rows(app) == []


def test_one_bad_alert_rejects_the_whole_notification(app: Flask) -> None:
    r = app.test_client().post(URL, json=payload(alert(), alert(status="bogus")), headers=BEARER)
    assert r.status_code == 400 and r.json["problems"][0].startswith("alerts.1.status")
    assert rows(app) == []


@pytest.mark.parametrize(("data", "ctype", "status"), [
    (b"{nope", "application/json", 400),
    (b"{}", "application/x-www-form-urlencoded", 415),
    (json.dumps(payload(version="5")).encode(), "application/json", 400),
])
def test_not_a_notification(app: Flask, data: bytes, ctype: str, status: int) -> None:
    r = app.test_client().post(URL, data=data, content_type=ctype, headers=BEARER)
    assert r.status_code == status
    assert r.is_json and r.json["error"]


def test_oversized_body_is_413_from_content_length(app: Flask) -> None:
    big = payload(*[alert(fingerprint=f"{i:016x}") for i in range(6000)])  # > 1 MiB
    data = json.dumps(big).encode()
    assert len(data) > 1 << 20
    r = app.test_client().post(URL, data=data, content_type="application/json", headers=BEARER)
    assert r.status_code == 413
    assert "webhook.max_body" in r.json["error"]
    assert rows(app) == []
    assert metric(app, "preshift_webhook_notifications_rejected_total",
                  '{reason="too_large"}') == 1


def test_max_body_is_configurable(tmp_path: Path) -> None:
    app = make_app(tmp_path, max_body=2048)
    c = app.test_client()
    assert c.post(URL, json=payload(), headers=BEARER).status_code == 202
    many = payload(*[alert(fingerprint=f"{i:04x}") for i in range(10)])
    assert c.post(URL, json=many, headers=BEARER).status_code == 413


def test_a_body_without_content_length_is_limited_while_reading(app: Flask) -> None:
    """Chunked bodies (no Content-Length) are cut at max_body + 1 bytes."""
    limit = 4096
    for size, ok in ((limit, True), (limit + 1, False), (10 * limit, False)):
        with app.test_request_context(
            URL, method="POST", input_stream=io.BytesIO(b"x" * size),
            environ_overrides={"wsgi.input_terminated": True},
        ):
            if ok:
                assert len(read_body(limit)) == size
            else:
                with pytest.raises(PayloadError) as info:
                    read_body(limit)
                assert info.value.status == 413


# --- dedupe -------------------------------------------------------------------------------


def test_the_same_notification_twice_is_one_row(app: Flask) -> None:
    c = app.test_client()
    assert c.post(URL, json=payload(), headers=BEARER).json == {"accepted": 1, "duplicates": 0}
    assert c.post(URL, json=payload(), headers=BEARER).json == {"accepted": 0, "duplicates": 1}
    assert len(rows(app)) == 1
    assert metric(app, "preshift_webhook_notifications_deduplicated_total",
                  '{status="firing"}') == 1
    assert metric(app, "preshift_webhook_notifications_received_total",
                  '{status="firing"}') == 2


def test_firing_and_resolved_are_distinct(app: Flask) -> None:
    c = app.test_client()
    c.post(URL, json=payload(), headers=BEARER)
    resolved = alert(status="resolved", endsAt="2026-05-01T12:10:00Z")
    r = c.post(URL, json=payload(resolved, status="resolved"), headers=BEARER)
    assert r.json == {"accepted": 1, "duplicates": 0}
    assert sorted(s for s, _, _ in rows(app)) == ["firing", "resolved"]


def test_a_new_startsat_is_a_new_alert(app: Flask) -> None:
    c = app.test_client()
    c.post(URL, json=payload(), headers=BEARER)
    again = alert(startsAt="2026-05-01T13:00:00Z")
    assert c.post(URL, json=payload(again), headers=BEARER).json["accepted"] == 1


def test_duplicates_inside_one_notification(app: Flask) -> None:
    r = app.test_client().post(URL, json=payload(alert(), alert()), headers=BEARER)
    assert r.json == {"accepted": 1, "duplicates": 1}


def test_alerts_without_component_are_journaled_and_counted(app: Flask) -> None:
    r = app.test_client().post(URL, json=payload(alert(labels={"alertname": "X"})),
                               headers=BEARER)
    assert r.status_code == 202
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert j.notifications()[0].component == ""
    assert metric(app, "preshift_webhook_notifications_unroutable_total") == 1


# --- journal trouble ----------------------------------------------------------------------


def test_a_locked_journal_is_503_so_alertmanager_retries(app: Flask) -> None:
    app.extensions["preshift.journal"].timeout = 0.2  # before this thread opens its journal
    blocker = sqlite3.connect(app.config["PRESHIFT_JOURNAL"], isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock too long
    try:
        r = app.test_client().post(URL, json=payload(), headers=BEARER)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert "nothing was recorded" in r.json["error"] or "unavailable" in r.json["error"]
    assert rows(app) == []
    # once the lock is gone, the retry succeeds
    assert app.test_client().post(URL, json=payload(), headers=BEARER).status_code == 202


def test_wrong_method_and_unknown_path_answer_json(app: Flask) -> None:
    c = app.test_client()
    r = c.get(URL, headers=BEARER)
    assert r.status_code == 405 and r.is_json and "POST" in r.headers["Allow"]
    r = c.get("/nope")
    assert r.status_code == 404 and r.is_json
