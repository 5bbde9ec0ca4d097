"""The operators' status page: HTML rendered with jinja2 (autoescaped), no JavaScript.

    GET  /  and  /status                       the page (footprint, lowest scores, migrations)
    GET  /status/login    POST /status/login   a form for the bearer token (or user/password)
    POST /status/logout                        forget the session
    POST /status/migrations/<id>/<what>        approve | abort | rollback, journaled like the API

Authentication is the API's: a request with a valid `Authorization` header (basic auth, which
a browser sends by itself once the user typed it in its dialog) is let in. A browser cannot
send a bearer token, so the login form takes it ONCE and sets a session cookie (HttpOnly,
SameSite=Strict, signed with a key derived from the configured secrets, so changing a secret
logs everyone out and a forged cookie needs the secret). The cookie holds no secret: only
"authenticated", the CSRF token and a one-shot message.

CSRF: every POST form carries the session's random token, compared in constant time. A
cross-site POST gets neither the SameSite=Strict cookie nor the token, so it is refused even
when the browser would attach cached basic credentials to it. A foreign `Origin` is refused
too, and the page cannot be framed (clickjacking of the buttons).

The footprint comes from the exporter's /api/v1/footprint through `FootprintCache`: fetched in
a background thread, waited for at most `timeout` seconds, kept `ttl` seconds. A slow or dead
exporter costs the page at most the timeout, and the page still shows the migrations.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface

from preshift.act.journal import REQUESTS, Migration, request_problem
from preshift.errors import InputError

from .auth import Authenticator
from .journal_ext import JournalUnavailable, get_journal, journal_errors

EXTENSION = "preshift.status"
#: app.config keys a test (or an embedding) may set before the first request.
FETCH_KEY = "PRESHIFT_STATUS_FETCH"  # callable(url, timeout) -> dict
TTL_KEY = "PRESHIFT_STATUS_FOOTPRINT_TTL"
TIMEOUT_KEY = "PRESHIFT_STATUS_FOOTPRINT_TIMEOUT"
#: "1": the session cookie gets `Secure` (set it when TLS terminates in front of the webhook).
COOKIE_SECURE_ENV = "PRESHIFT_WEBHOOK_COOKIE_SECURE"
COOKIE_NAME = "preshift_status"
SESSION_HOURS = 12
MAX_FOOTPRINT_BYTES = 64 << 20
LOWEST = 10  # rows in "lowest scores"
HISTORY = 20  # finished migrations shown
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

Fetch = Callable[[str, float], Mapping[str, Any]]

bp = Blueprint("status", __name__)

# No script at all, styles only from our own /static: an escaping mistake cannot run code.
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


@dataclass
class StatusState:
    auth: Authenticator
    exporter_url: str
    cache: FootprintCache | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _StatusPageSessions(SecureCookieSessionInterface):
    """Flask's signed cookie session, opened only on the status page's paths: on every
    other request (Alertmanager's notifications, the API) building the signing serializer
    cost about a third of a millisecond of CPU (docs/benchmarks.md, the webhook's intake)."""

    def open_session(self, app: Flask, request: Any) -> Any:
        if request.path == "/" or request.path.startswith("/status"):
            return super().open_session(app, request)
        return self.make_null_session(app)


def init_app(app: Flask, auth: Authenticator, exporter_url: str, journal: Path,
             environ: Mapping[str, str]) -> None:
    """Register the page; configure Flask's signed session cookie for it."""
    app.extensions[EXTENSION] = StatusState(auth, exporter_url.rstrip("/"))
    app.secret_key = session_key(auth, journal)
    app.session_interface = _StatusPageSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=environ.get(COOKIE_SECURE_ENV, "0") == "1",
        # Flask checks the age of a permanent session's signature on every read
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.config.setdefault(TTL_KEY, 5.0)
    app.config.setdefault(TIMEOUT_KEY, 1.5)
    app.jinja_env.filters["utc"] = _utc
    app.jinja_env.filters["ago"] = _ago
    app.register_blueprint(bp)


def session_key(auth: Authenticator, journal: Path) -> bytes:
    """The cookie-signing key: HMAC of the secrets, so every gunicorn worker derives the same
    key without sharing state, and a new secret invalidates the old cookies. Without any
    secret (allow_unauthenticated) a random key is kept next to the journal, created once."""
    material = b"\0".join(
        x or b"" for x in (auth.token, auth.basic_user, auth.basic_password)
    )
    if not auth.enabled:
        material = _key_file(Path(f"{journal}.status-key"))
    return hmac.new(material, b"preshift status session v1", hashlib.sha256).digest()


def _key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    # the loser of a race between two workers reads what the winner wrote
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------
# The exporter's footprint


def fetch_footprint(url: str, timeout: float) -> Mapping[str, Any]:
    """GET <exporter>/api/v1/footprint; ValueError with a one-line reason when it fails."""
    req = urllib.request.Request(f"{url}/api/v1/footprint", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read(MAX_FOOTPRINT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, OSError):  # the code is enough
            detail = str(json.loads(exc.read(4096)).get("error", ""))
        raise ValueError(f"the exporter answered {exc.code}{': ' + detail if detail else ''}") \
            from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ValueError(f"cannot reach the exporter at {url}: {reason}") from None
    if len(raw) > MAX_FOOTPRINT_BYTES:
        raise ValueError("the exporter's footprint is larger than 64 MiB")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError("the exporter's footprint is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("the exporter's footprint is not a JSON object")
    return doc


@dataclass(frozen=True)
class Snapshot:
    """The last footprint (None until one was read) and why the last fetch failed."""

    doc: Mapping[str, Any] | None = None
    fetched_at: float | None = None  # wall clock of `doc`
    error: str | None = None


class FootprintCache:
    """At most one fetch in flight, in a daemon thread; callers wait `timeout` at most and
    then get the last good document with the error. A result is reused for `ttl` seconds."""

    def __init__(self, fetch: Fetch, url: str, *, ttl: float, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fetch, self.url, self.ttl, self.timeout, self.clock = fetch, url, ttl, timeout, clock
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._checked: float | None = None  # monotonic time of the last finished fetch
        self._inflight: threading.Event | None = None

    def get(self) -> Snapshot:
        with self._lock:
            if self._checked is not None and self.clock() - self._checked < self.ttl:
                return self._snapshot
            done = self._inflight
            if done is None:
                done = self._inflight = threading.Event()
                threading.Thread(target=self._run, args=(done,), name="footprint-fetch",
                                 daemon=True).start()
        if not done.wait(self.timeout):
            with self._lock:
                snap = self._snapshot
            return Snapshot(snap.doc, snap.fetched_at,
                            f"the exporter at {self.url} did not answer within "
                            f"{self.timeout:g}s")
        with self._lock:
            return self._snapshot

    def _run(self, done: threading.Event) -> None:
        try:
            doc = self.fetch(self.url, self.timeout)
            snap = Snapshot(doc, time.time(), None)
        except Exception as exc:  # any failure of the fetch is shown, never raised
            with self._lock:
                old = self._snapshot
            msg = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            snap = Snapshot(old.doc, old.fetched_at, msg or type(exc).__name__)
        with self._lock:
            self._snapshot, self._checked, self._inflight = snap, self.clock(), None
        done.set()


def _cache() -> FootprintCache:
    st: StatusState = current_app.extensions[EXTENSION]
    with st.lock:
        # built on first use, so a test can put its fetch into app.config after create_app
        if st.cache is None:
            cfg = current_app.config
            st.cache = FootprintCache(cfg.get(FETCH_KEY) or fetch_footprint, st.exporter_url,
                                      ttl=float(cfg[TTL_KEY]), timeout=float(cfg[TIMEOUT_KEY]))
        return st.cache


# ---------------------------------------------------------------------------------------------
# View models (plain dicts for the templates; everything from the exporter is data, never markup)


def risk_class(hps: float | None, tolerance: float) -> str:
    """`high` when the plan would act on it (risk above tolerance), `medium` above half of it."""
    if hps is None:
        return "unknown"
    risk = 1.0 - hps / 100.0
    if risk > tolerance:
        return "high"
    if risk > tolerance / 2:
        return "medium"
    return "low"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _dicts(v: Any) -> list[Mapping[str, Any]]:
    return [x for x in v if isinstance(x, Mapping)] if isinstance(v, list) else []


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def footprint_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Sites → racks → nodes → replicas with their HPS, the lowest scores and the plan.
    Tolerant of missing parts: the exporter may not have scored anything yet."""
    scores = _map(doc.get("scores"))
    plan = _map(doc.get("plan"))
    tolerance = _num(plan.get("tolerance"))
    tol = 0.2 if tolerance is None else tolerance
    replica_hps = {str(r.get("replica")): _num(r.get("hps"))
                   for r in _dicts(scores.get("replicas"))}
    node_scores = _map(scores.get("nodes"))

    nodes: dict[str, dict[str, Any]] = {}
    for n in _dicts(doc.get("nodes")):
        name = str(n.get("name", "?"))
        hps = _num(_map(node_scores.get(name)).get("hps"))
        nodes[name] = {
            "name": name, "site": str(n.get("site") or "—"), "rack": str(n.get("rack") or "—"),
            "host": str(n.get("host") or ""), "reachable": bool(n.get("reachable", True)),
            "stale": bool(n.get("stale", False)), "error": n.get("error"),
            "hps": hps, "risk": risk_class(hps, tol), "replicas": [],
        }
    for comp, c in sorted(_map(doc.get("components")).items()):
        for r in _dicts(_map(c).get("replicas")):
            node = str(r.get("node", "?"))
            if node not in nodes:  # a replica on a node the configuration no longer lists
                nodes[node] = {"name": node, "site": "—", "rack": "—", "host": "",
                               "reachable": False, "stale": True, "error": "not configured",
                               "hps": None, "risk": "unknown", "replicas": []}
            hps = replica_hps.get(str(r.get("name")))
            nodes[node]["replicas"].append({
                "component": str(comp), "name": str(r.get("name", "?")),
                "state": str(r.get("state", "")), "health": r.get("health"),
                "hps": hps, "risk": risk_class(hps, tol),
            })
    sites: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for n in nodes.values():  # configuration order within a rack
        sites.setdefault(n["site"], {}).setdefault(n["rack"], []).append(n)
    tree = [{"name": s, "racks": [{"name": r, "nodes": ns} for r, ns in sorted(racks.items())]}
            for s, racks in sorted(sites.items())]

    lowest = sorted(
        ({"replica": str(r.get("replica")), "component": str(r.get("component")),
          "node": str(r.get("node")), "hps": _num(r.get("hps")),
          "top_signal": r.get("top_signal"), "risk": risk_class(_num(r.get("hps")), tol)}
         for r in _dicts(scores.get("replicas")) if _num(r.get("hps")) is not None),
        key=lambda r: (r["hps"], r["replica"]),
    )[:LOWEST]
    entries = [{**e, "risk": risk_class(_num(e.get("hps")), tol)}
               for e in _dicts(plan.get("entries"))]
    return {"sites": tree, "lowest": lowest, "entries": entries,
            "held": _dicts(plan.get("held")), "tolerance": tol,
            "stale": bool(doc.get("stale")), "plan_stale": bool(plan.get("stale")),
            "generated_at": _num(doc.get("generated_at")), "has_scores": bool(scores)}


def migration_view(m: Migration) -> dict[str, Any]:
    d = m.to_dict()
    d["buttons"] = [w for w in REQUESTS if request_problem(m, w) is None]
    return d


# ---------------------------------------------------------------------------------------------
# Authentication, CSRF, headers


def _state() -> StatusState:
    return current_app.extensions[EXTENSION]


def _authenticated() -> bool:
    auth = _state().auth
    if auth.check(request.headers.get("Authorization")):
        return True
    return session.get("auth") is True


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the session cookie carries it)."""
    tok = session.get("csrf")
    if not isinstance(tok, str) or len(tok) < 32:
        tok = session["csrf"] = secrets.token_urlsafe(32)
        session.permanent = True
    return tok


def _csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    want = session.get("csrf")
    if not isinstance(want, str) or not want or not sent:
        return False
    return hmac.compare_digest(sent.encode(), want.encode())


def _same_origin() -> bool:
    """Browsers send Origin on a POST; one that is not us is refused whatever else it has."""
    origin = request.headers.get("Origin")
    if origin is None:  # older browsers and non-browser clients; the CSRF token still applies
        return True
    # host only, not the scheme: behind a TLS proxy the browser says https, Flask sees http
    return urlsplit(origin).netloc == request.host


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    # not no-referrer: with it Chromium sends `Origin: null` on our own POSTs
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _login_page(error: str | None, status: int) -> Response:
    auth = _state().auth
    resp = Response(render_template(
        "login.html", error=error, token=auth.token is not None,
        basic=auth.basic_user is not None, session_hours=SESSION_HOURS,
    ), status=status, mimetype="text/html")
    if status == 401:
        for challenge in auth.challenges():
            resp.headers.add("WWW-Authenticate", challenge)
    return resp


def _flash(kind: str, text: str) -> None:
    session["flash"] = [kind, text]


# ---------------------------------------------------------------------------------------------
# Routes


@bp.get("/")
@bp.get("/status")
def page() -> Response:
    if not _authenticated():
        return _login_page(None, 401)
    snap = _cache().get()
    footprint = footprint_view(snap.doc) if snap.doc is not None else None
    active: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    journal_error = None
    try:
        with journal_errors("reading migrations for the status page"):
            j = get_journal()
            active = [migration_view(m) for m in j.migrations(active=True, limit=200)]
            history = [migration_view(m) for m in j.migrations(active=False, limit=HISTORY)]
    except JournalUnavailable as exc:
        current_app.logger.warning("%s", exc)
        journal_error = "the journal is unavailable; retry in a few seconds"
    flash = session.pop("flash", None)
    body = render_template(
        "status.html", footprint=footprint, exporter_error=snap.error,
        fetched_at=snap.fetched_at, exporter_url=_state().exporter_url, active=active,
        history=history, journal_error=journal_error, csrf=csrf_token(),
        flash=flash if isinstance(flash, list) and len(flash) == 2 else None,
        logged_in=session.get("auth") is True, now=time.time(),
    )
    return Response(body, mimetype="text/html")


@bp.get("/status/login")
def login_form() -> Response:
    return _login_page(None, 200)


@bp.post("/status/login")
def login() -> Response:
    """Accept the bearer token (or user and password) once; the session cookie stands for it.
    No CSRF token here: a forged login would need the secret itself."""
    if not _same_origin():
        return _login_page("refused: the form was not sent from this page", 403)
    auth = _state().auth
    token = request.form.get("token", "")
    user, password = request.form.get("user", ""), request.form.get("password", "")
    header = None
    if token:
        header = f"Bearer {token}"
    elif user or password:
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if header is None or not auth.check(header):
        current_app.logger.info("status page: failed login from %s", request.remote_addr)
        return _login_page("wrong credentials", 401)
    session.clear()  # a new session: no token from before the login survives (fixation)
    session["auth"] = True
    session.permanent = True
    csrf_token()
    return redirect(url_for("status.page"), 303)  # type: ignore[return-value]


@bp.post("/status/logout")
def logout() -> Response:
    if not _csrf_ok():
        return Response("CSRF token missing or wrong; reload the page\n", 403,
                        mimetype="text/plain")
    session.clear()
    return redirect(url_for("status.login_form"), 303)  # type: ignore[return-value]


@bp.post("/status/migrations/<migration_id>/<what>")
def request_migration(migration_id: str, what: str) -> Response:
    if not _authenticated():
        return _login_page(None, 401)
    if not _same_origin() or not _csrf_ok():
        return Response("CSRF token missing or wrong (or a foreign Origin); reload the page "
                        "and try again\n", 403, mimetype="text/plain")
    if what not in REQUESTS or not migration_id or set(migration_id) - _ID_CHARS \
            or len(migration_id) > 64:
        return Response("no such request\n", 404, mimetype="text/plain")
    try:
        with journal_errors(f"recording {what}"):
            m = get_journal().request(migration_id, what)
    except LookupError:
        _flash("error", f"no migration {migration_id}")
    except InputError as exc:
        _flash("error", str(exc))
    except JournalUnavailable:
        _flash("error", f"the journal is unavailable; {what} was NOT recorded, retry")
    else:
        current_app.logger.info("status page: %s of migration %s recorded", what, m.id)
        _flash("ok", f"{what} of migration {m.id} recorded; the executor carries it out at "
                     "its next tick")
    return redirect(url_for("status.page"), 303)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Template filters


def _utc(ts: Any) -> str:
    v = _num(ts)
    if v is None:
        return "—"
    return datetime.fromtimestamp(v, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: Any, now: float | None = None) -> str:
    v = _num(ts)
    if v is None:
        return "—"
    s = max(0, int((time.time() if now is None else now) - v))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"
