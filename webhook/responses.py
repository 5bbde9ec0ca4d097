"""JSON answers and error handlers shared by the blueprints: no HTML, no traceback."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from .auth import Authenticator
from .journal_ext import JournalUnavailable


def json_response(payload: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), default=str) + "\n"
    resp = Response(body, status=status, mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def unauthorized(auth: Authenticator) -> Response:
    """401 with one `WWW-Authenticate` challenge per accepted scheme."""
    schemes = " or ".join(auth.schemes)
    resp = json_response(
        {"error": f"authentication required: send an Authorization header ({schemes}); "
                  "Alertmanager: http_config.authorization or http_config.basic_auth"},
        401,
    )
    for challenge in auth.challenges():
        resp.headers.add("WWW-Authenticate", challenge)
    return resp


def init_app(app: Flask) -> None:
    """Every error the app can produce answers JSON, and never with a traceback."""

    @app.before_request
    def _json_routing() -> Response | None:
        # Two answers Flask and werkzeug would give in HTML, before any handler could see
        # them: a redirect of a path with doubled slashes (/api/v1//alerts; a client should
        # not rely on re-sending a POST through a redirect) and the automatic OPTIONS answer
        # (200, empty, unauthenticated). The first is an unknown path, the second a method
        # the path does not serve.
        if isinstance(request.routing_exception, RequestRedirect):
            return json_response({"error": f"no such path {request.path[:200]!r}; see "
                                           "docs/webhook.md for the API"}, 404)
        rule = request.url_rule
        if request.method == "OPTIONS" and rule is not None:
            allowed = sorted((rule.methods or set()) - {"OPTIONS"})
            return json_response({"error": "The method is not allowed for the requested URL."},
                                 405, headers={"Allow": ", ".join(allowed)})
        return None

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        resp = json_response({"error": exc.description or exc.name}, exc.code or 500)
        if exc.code == 405 and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(JournalUnavailable)
    def _journal(exc: JournalUnavailable) -> Response:
        app.logger.warning("%s", exc)
        return json_response({"error": "the journal is unavailable; retry later"}, 503,
                             headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Logged with its traceback for us; the client gets a line, not our internals.
        app.logger.error("unexpected error answering a request", exc_info=exc)
        return json_response({"error": "internal error; see the webhook's log"}, 500)
