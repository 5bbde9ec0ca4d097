"""The Alertmanager v4 payload model: what it accepts, and messages that name the field."""

from __future__ import annotations

import json

import pytest

from webhook.payload import PayloadError, parse_notification

from .webhook_support import alert, payload

JSON = "application/json"


def parse(body: object, content_type: str = JSON):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_notification(raw, content_type)


def problems_of(body: object) -> list[str]:
    with pytest.raises(PayloadError) as info:
        parse(body)
    assert info.value.status == 400
    return info.value.problems


def test_a_full_notification_becomes_journal_rows() -> None:
    n = parse(payload(alert(), alert(fingerprint="aa", status="resolved",
                                     endsAt="2026-05-01T12:05:00Z")))
    rows = n.journal_items()
    assert [(r.status, r.fingerprint, r.component) for r in rows] == [
        ("firing", "c0ffee0123456789", "web"), ("resolved", "aa", "web")
    ]
    assert rows[0].alertname == "PreshiftFootprintDiscrepancy"
    assert rows[0].starts_at == "2026-05-01T12:00:00.123456789Z"  # kept exactly as sent
    assert rows[0].group_key.startswith("{}/")


def test_unknown_fields_are_tolerated_and_optional_ones_default() -> None:
    body = {"version": "4", "status": "firing", "future_field": {"x": 1},
            "alerts": [{"status": "firing", "labels": {"service": "api"},
                        "startsAt": "2026-05-01T12:00:00Z", "fingerprint": "ab",
                        "another_new_field": True}]}
    n = parse(body)
    assert n.journal_items()[0].component == "api"  # `service` is the fallback label
    assert n.groupKey == "" and n.alerts[0].annotations == {}


def test_an_alert_without_component_is_accepted_with_an_empty_component() -> None:
    n = parse(payload(alert(labels={"alertname": "Other"})))
    assert n.journal_items()[0].component == ""


def test_missing_fields_are_named_with_their_path() -> None:
    a = alert()
    del a["fingerprint"]
    del a["startsAt"]
    assert problems_of(payload(a)) == [
        "alerts.0.startsAt: required field is missing",
        "alerts.0.fingerprint: required field is missing",
    ]


@pytest.mark.parametrize(("change", "expected"), [
    ({"status": "pending"}, "alerts.0.status: must be 'firing' or 'resolved' (got 'pending')"),
    ({"fingerprint": "not hex!"}, "alerts.0.fingerprint: must be Alertmanager's alert fingerprint"),
    ({"startsAt": "yesterday"}, "alerts.0.startsAt: must be an RFC 3339 time"),
    ({"labels": {"component": 3}}, "alerts.0.labels.component: must be a string"),
    ({"labels": "web"}, "alerts.0.labels: must be an object"),
])
def test_bad_values_say_what_is_allowed(change: dict[str, object], expected: str) -> None:
    problems = problems_of(payload(alert(**change)))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_top_level_problems() -> None:
    assert problems_of({"version": "4", "status": "firing"}) == [
        "alerts: required field is missing"
    ]
    assert problems_of({"version": "4", "status": "firing", "alerts": {}})[0].startswith(
        "alerts: must be a list"
    )


def test_other_versions_are_refused_with_the_supported_one() -> None:
    with pytest.raises(PayloadError) as info:
        parse(payload(version="3"))
    assert info.value.status == 400 and info.value.reason == "version"
    assert "supports version '4'" in info.value.message


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), [
    (b"{not json", JSON, 400, "not_json"),
    (b"\xff\xfe", JSON, 400, "not_json"),
    (b"[1, 2]", JSON, 400, "invalid"),
    (b"{}", "text/plain", 415, "content_type"),
    (b"{}", None, 415, "content_type"),
])
def test_not_json(body: bytes, ctype: str | None, status: int, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_notification(body, ctype)
    assert (info.value.status, info.value.reason) == (status, reason)


def test_json_with_a_charset_is_json() -> None:
    assert parse(payload(), "application/json; charset=utf-8").version == "4"
