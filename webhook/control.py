"""The operators' API (same authentication as the alerts) and the health checks.

    GET  /api/v1/migrations?active=&component=&limit=   newest first
    GET  /api/v1/migrations/<id>                         one migration with its steps
    POST /api/v1/migrations/<id>/approve|abort|rollback  journaled; the executor acts on it
    GET  /api/v1/notifications?limit=&unhandled=         recent journaled alerts
    GET  /-/healthy                                      the process answers
    GET  /-/ready                                        the journal can be read

A request is only recorded here (`Journal.request`); the executor carries it out at its next
tick, so the answer is 200 with the migration as it is now, its `request` field set.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from preshift.act.journal import REQUESTS, as_json
from preshift.errors import InputError

from .auth import Authenticator
from .journal_ext import get_journal, journal_errors
from .payload import short
from .responses import json_response, unauthorized

EXTENSION = "preshift.control.auth"
MAX_LIMIT = 1000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # as config names allow
_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

bp = Blueprint("control", __name__)
health = Blueprint("health", __name__)


def init_app(app: Flask, auth: Authenticator) -> None:
    app.extensions[EXTENSION] = auth
    app.register_blueprint(bp)
    app.register_blueprint(health)


@bp.before_request
def _authenticate() -> Response | None:
    auth: Authenticator = current_app.extensions[EXTENSION]
    if not auth.check(request.headers.get("Authorization")):
        return unauthorized(auth)
    return None


class _Query:
    """Query parameters validated together, so one answer lists every problem."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.problems: list[str] = []
        unknown = sorted(set(request.args) - set(allowed))
        if unknown:
            # bounded: a client may send thousands of made-up names
            shown = ", ".join(u if _ID.fullmatch(u) else short(u) for u in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            self.problems.append(
                f"unknown query parameter(s) {shown}{more}; allowed: {', '.join(allowed)}"
            )

    def boolean(self, name: str) -> bool | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return None
        if raw.lower() not in _BOOL:
            self.problems.append(f"{name}: must be true or false (got {short(raw)})")
            return None
        return _BOOL[raw.lower()]

    def limit(self, default: int = 100) -> int:
        raw = request.args.get("limit")
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            self.problems.append(f"limit: must be a whole number from 1 to {MAX_LIMIT} "
                                 f"(got {short(raw)})")
            return default
        return int(raw)

    def text(self, name: str) -> str | None:
        raw = request.args.get(name)
        if raw is not None and not _ID.fullmatch(raw):
            self.problems.append(f"{name}: letters, digits, '_' and '-' only (got {short(raw)})")
            return None
        return raw or None

    def answer(self) -> Response | None:
        if not self.problems:
            return None
        return json_response({"error": "invalid query", "problems": self.problems}, 400)


@bp.get("/api/v1/migrations")
def list_migrations() -> Response:
    q = _Query(("active", "component", "limit"))
    active, component, limit = q.boolean("active"), q.text("component"), q.limit()
    bad = q.answer()
    if bad is not None:
        return bad
    with journal_errors("listing migrations"):
        rows = get_journal().migrations(active=active, component=component, limit=limit)
    return json_response({"migrations": [as_json(m) for m in rows]})


def _not_found(migration_id: str) -> Response:
    return json_response(
        {"error": f"no migration {short(migration_id)}; GET /api/v1/migrations lists them"},
        404
    )


@bp.get("/api/v1/migrations/<migration_id>")
def show_migration(migration_id: str) -> Response:
    with journal_errors("reading a migration"):
        j = get_journal()
        m = j.get(migration_id)
        if m is None:
            return _not_found(migration_id)
        steps = j.steps(migration_id)
    out = as_json(m, steps)
    out.setdefault("steps", [])
    return json_response(out)


@bp.post("/api/v1/migrations/<migration_id>/<what>")
def request_migration(migration_id: str, what: str) -> Response:
    if what not in REQUESTS:
        return json_response(
            {"error": f"unknown request {short(what)}; use one of {', '.join(REQUESTS)}"}, 404
        )
    try:
        with journal_errors(f"recording {what}"):
            m = get_journal().request(migration_id, what)
    except LookupError:
        return _not_found(migration_id)
    except InputError as exc:
        return json_response({"error": str(exc)}, 409)
    return json_response({
        "message": f"{what} recorded; the executor carries it out at its next tick",
        "migration": as_json(m),
    })


@bp.get("/api/v1/notifications")
def list_notifications() -> Response:
    q = _Query(("limit", "unhandled"))
    limit, unhandled = q.limit(), q.boolean("unhandled")
    bad = q.answer()
    if bad is not None:
        return bad
    with journal_errors("listing notifications"):
        j = get_journal()
        rows = j.unhandled_notifications(limit) if unhandled else j.notifications(limit)
    return json_response({"notifications": [_notification(n) for n in rows]})


def _notification(n: Any) -> dict[str, Any]:
    d = asdict(n)
    d["labels"] = dict(n.labels)
    return d


@health.get("/-/healthy")
def healthy() -> Response:
    return json_response({"status": "ok"})


@health.get("/-/ready")
def ready() -> Response:
    """Ready when this worker's journal answers a read (not authenticated, like /metrics)."""
    with journal_errors("checking readiness"):
        unhandled = get_journal().count_unhandled()
    return json_response({"status": "ready", "unhandled_notifications": unhandled})
