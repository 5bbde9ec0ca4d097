"""Shared helpers of the webhook's unit tests: a config, an app on a temp journal, payloads."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

from flask import Flask

from preshift.config import Config, parse_config

TOKEN = "t0ken-for-tests"
USER, PASSWORD = "alertmanager", "pa55word"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def make_config(journal: Path, **webhook: Any) -> Config:
    return parse_config({
        "nodes": [{"name": "n1", "url": "unix:///nonexistent/n1.sock"}],
        "webhook": {"journal": str(journal), **webhook},
    })


def make_app(tmp_path: Path, *, environ: dict[str, str] | None = None,
             **webhook: Any) -> Flask:
    import webhook as wh

    env = {"PRESHIFT_WEBHOOK_TOKEN": TOKEN} if environ is None else environ
    app = wh.create_app(make_config(tmp_path / "journal.sqlite3", **webhook),
                        start_worker=False, environ=env)
    app.config["TESTING"] = True
    return app


ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web",
               "preshift_action": "migrate", "severity": "warning"},
    "annotations": {"summary": "Replicas of web are not where Preshift wants them"},
    "startsAt": "2026-05-01T12:00:00.123456789Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
    "fingerprint": "c0ffee0123456789",
}


def payload(*alerts: dict[str, Any], status: str = "firing", **extra: Any) -> dict[str, Any]:
    """An Alertmanager v4 notification (with a field newer Alertmanagers add)."""
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}/{preshift_action="migrate"}:{alertname="PreshiftFootprintDiscrepancy"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "preshift-webhook",
        "groupLabels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web"},
        "commonLabels": {"alertname": "PreshiftFootprintDiscrepancy"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "notification_reason": "new_alerts",
        "alerts": [copy.deepcopy(a) for a in (alerts or (ALERT,))],
    }
    body.update(extra)
    return body


def alert(**changes: Any) -> dict[str, Any]:
    a = copy.deepcopy(ALERT)
    labels = changes.pop("labels", None)
    if labels is not None:
        a["labels"] = labels
    a.update(changes)
    return a
