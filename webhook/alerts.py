"""`POST /api/v1/alerts`: Alertmanager's webhook receiver.

Order: authenticate (401, nothing read or journaled) → size (413, from Content-Length and
again while reading, for chunked bodies) → parse (415/400, naming each bad field) → journal
every alert in one transaction, deduplicated → 202 `{"accepted": n, "duplicates": m}`.
Nothing else happens in the request: the executor thread picks the rows up at its next tick,
so the answer takes milliseconds, far inside Alertmanager's send timeout (group_interval).

Status codes follow Alertmanager's retry rules (2xx done, 4xx never retried, 5xx retried):
a 4xx means "this payload will never be accepted", a 503 means "the journal could not take
it now, send it again".

Alerts without a `component` (or `service`) label are journaled like the others, with an
empty component; the executor marks them handled with an "ignored" outcome. Rejecting them
instead would make Alertmanager drop the whole notification (4xx is not retried), including
the alerts of it that do name a component, and would leave no trace in the journal of what
was routed here by mistake; `preshift_webhook_notifications_unroutable_total` counts them.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .auth import Authenticator
from .intake import Intake
from .journal_ext import JournalUnavailable
from .metrics import WebhookMetrics
from .payload import PayloadError, parse_notification
from .responses import json_response, unauthorized

EXTENSION = "preshift.alerts"

bp = Blueprint("alerts", __name__)


class AlertsState:
    """What the endpoint needs, built once by the factory."""

    def __init__(self, auth: Authenticator, intake: Intake, metrics: WebhookMetrics,
                 max_body: int) -> None:
        self.auth = auth
        self.intake = intake
        self.metrics = metrics
        self.max_body = max_body


def init_app(app: Flask, state: AlertsState) -> None:
    app.extensions[EXTENSION] = state
    app.register_blueprint(bp)


def read_body(limit: int) -> bytes:
    """The request body, at most `limit` bytes; PayloadError(413) beyond."""
    too_large = PayloadError(
        413, f"the body is larger than webhook.max_body ({limit} bytes); lower "
        "max_alerts in Alertmanager's webhook_config or raise webhook.max_body",
        reason="too_large",
    )
    length = request.content_length
    if length is not None and length > limit:
        raise too_large  # before reading a byte of it
    chunks: list[bytes] = []
    total = 0
    try:
        stream = request.stream
        while True:
            # Read at most one byte past the limit: enough to know it was exceeded, even
            # when there is no Content-Length (chunked) or it lies.
            chunk = stream.read(min(65536, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise too_large
            chunks.append(chunk)
    except RequestEntityTooLarge:
        raise too_large from None
    return b"".join(chunks)


@bp.post("/api/v1/alerts")
def receive_alerts() -> Any:
    started = time.perf_counter()
    state: AlertsState = current_app.extensions[EXTENSION]
    if not state.auth.check(request.headers.get("Authorization")):
        state.metrics.rejected("unauthorized")
        return unauthorized(state.auth)
    try:
        body = read_body(state.max_body)
        notification = parse_notification(body, request.headers.get("Content-Type"))
    except PayloadError as exc:
        state.metrics.rejected(exc.reason)
        return json_response(exc.to_json(), exc.status)
    items = notification.journal_items()
    try:
        new = state.intake.record(items)
    except JournalUnavailable as exc:
        state.metrics.rejected("journal_unavailable")
        current_app.logger.warning("%s; answered 503 (Alertmanager retries)", exc)
        return json_response(
            {"error": "the journal is unavailable; nothing was recorded, retry later"}, 503,
            headers={"Retry-After": "5"},
        )
    accepted = sum(new)
    state.metrics.received([i.status for i in items], new,
                           sum(1 for i in items if not i.component))
    state.metrics.intake_time(time.perf_counter() - started)
    return json_response({"accepted": accepted, "duplicates": len(new) - accepted}, 202)
