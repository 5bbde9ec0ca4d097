"""The status page (webhook/status.py) through Flask's test client, with a stub exporter: the
fetch function is injected through app.config, so nothing leaves the process."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from preshift.act.journal import Journal, Migration
from preshift.act.phases import Phase
from webhook import status

from .webhook_support import BEARER, PASSWORD, TOKEN, USER, basic, make_app

HOSTILE = "<script>alert(1)</script>"


def footprint(component: str = "web") -> dict[str, Any]:
    """A small /api/v1/footprint document: two sites, one risky replica."""
    return {
        "version": 1, "generated_at": 1750000000.0, "stale": False,
        "nodes": [
            {"name": "n1", "host": "h1", "rack": "r1", "site": "dc1", "reachable": True,
             "stale": False, "engine_id": "E1", "error": None},
            {"name": "n2", "host": "h2", "rack": "r2", "site": "dc2", "reachable": True,
             "stale": False, "engine_id": "E2", "error": None},
        ],
        "components": {component: {
            "replicas": [{"name": f"{component}-1", "node": "n1", "state": "running",
                          "health": "healthy"},
                         {"name": f"{component}-2", "node": "n2", "state": "running",
                          "health": None}],
            "running_by_node": {"n1": 1, "n2": 1}}},
        "scores": {
            "replicas": [
                {"replica": f"{component}-1", "component": component, "node": "n1",
                 "hps": 41.7, "factors": {}, "top_signal": "temperature"},
                {"replica": f"{component}-2", "component": component, "node": "n2",
                 "hps": 97.5, "factors": {}, "top_signal": None},
            ],
            "nodes": {"n1": {"hps": 49.6}, "n2": {"hps": 98.0}},
            "components": {component: 41.7},
        },
        "plan": {"tolerance": 0.2, "stale": False, "entries": [
            {"action": "move", "component": component, "replica": f"{component}-1",
             "from_node": "n1", "to_node": "n2", "reason": "risk 0.58 > tolerance 0.20",
             "priority": 58.3, "hps": 41.7, "target_hps": 97.0}], "held": []},
    }


class StubExporter:
    """Stands for the exporter: returns `doc`, or raises, and counts the calls."""

    def __init__(self, doc: Mapping[str, Any] | None = None, *, fail: str | None = None,
                 delay: float = 0.0) -> None:
        self.doc, self.fail, self.delay, self.calls = doc, fail, delay, 0

    def __call__(self, url: str, timeout: float) -> Mapping[str, Any]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ValueError(self.fail)
        assert self.doc is not None
        return self.doc


def app_with(tmp_path: Path, fetch: Any, **webhook: Any) -> Flask:
    app = make_app(tmp_path, **webhook)
    app.config[status.FETCH_KEY] = fetch
    return app


def add_migration(app: Flask, mid: str = "m1", component: str = "web",
                  phase: Phase = Phase.AWAITING_APPROVAL, **extra: Any) -> Migration:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        return j.create_migration(Migration(
            id=mid, component=component, action="move", target_node="n2", source_node="n1",
            canary_name=f"{component}-c", phase=phase,
            approval="pending" if phase == Phase.AWAITING_APPROVAL else "none",
            weight=extra.pop("weight", 0), step=extra.pop("step", 0),
            reason=extra.pop("reason", "risk 0.58 > tolerance 0.20"), **extra))


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client: FlaskClient) -> str:
    """Log in with the token through the form; returns the page's CSRF token."""
    resp = client.post("/status/login", data={"token": TOKEN})
    assert resp.status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    return csrf_of(page.text)


def test_renders_footprint_scores_migrations_and_history(tmp_path: Path) -> None:
    stub = StubExporter(footprint())
    app = app_with(tmp_path, stub)
    add_migration(app, "m1", weight=40, step=2)
    done = add_migration(app, "m0", phase=Phase.PLANNED, reason="old move")
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        j.update(done, phase=Phase.CANCELLED, error="alert resolved")
    resp = app.test_client().get("/", headers=BEARER)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.text
    for text in ("site dc1", "rack r1", "site dc2", "web-1", "41.7", "97.5", "HPS 49.6",
                 "Lowest scores", "temperature", "awaiting_approval", "40%", "old move",
                 "cancelled", "alert resolved", "risk 0.58 &gt; tolerance 0.20"):
        assert text in html, text
    # colour by risk: 41.7 is risk 0.58 > 0.2 → high; 97.5 → low
    assert re.search(r'class="replica risk-high">\s*<span class="component">web', html)
    assert 'class="replica risk-low"' in html
    # buttons of a migration awaiting approval: approve, abort, rollback; none for history
    for what in ("approve", "abort", "rollback"):
        assert f'id="{what}-m1"' in html
        assert f'action="/status/migrations/m1/{what}"' in html
    assert 'id="approve-m0"' not in html
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "script-src" not in resp.headers["Content-Security-Policy"]  # default-src 'none'
    assert resp.headers["Cache-Control"] == "no-store"
    assert app.test_client().get("/status", headers=BEARER).status_code == 200
    assert app.test_client().get("/static/status.css").status_code == 200


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    doc = footprint(HOSTILE)
    doc["nodes"][0]["site"] = HOSTILE
    doc["plan"]["entries"][0]["reason"] = f'"><img src=x onerror=alert(1)> {HOSTILE}'
    app = app_with(tmp_path, StubExporter(doc))
    add_migration(app, "m1", component="web", reason=HOSTILE)
    html = app.test_client().get("/", headers=BEARER).text
    assert HOSTILE not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html  # the page has no script at all


def test_401_without_credentials(tmp_path: Path) -> None:
    app2 = make_app(tmp_path, environ={"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
                                        "PRESHIFT_WEBHOOK_PASSWORD": PASSWORD},
                    basic_user=USER)
    app2.config[status.FETCH_KEY] = StubExporter(footprint())
    add_migration(app2, "m1")
    c = app2.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, basic(USER, "wrong")):
        resp = c.get("/", headers=headers)
        assert resp.status_code == 401
        assert 'Basic realm="preshift"' in resp.headers.getlist("WWW-Authenticate")
        assert 'id="login-form"' in resp.text and "m1" not in resp.text
    # the buttons too, even with a CSRF token of someone's session
    assert c.post("/status/migrations/m1/approve", data={"csrf": "x" * 43}).status_code == 401
    with Journal(app2.config["PRESHIFT_JOURNAL"]) as j:
        assert j.get("m1").request is None  # type: ignore[union-attr]
    # basic auth (what a browser sends after its dialog) and the bearer header both work
    assert c.get("/", headers=basic(USER, PASSWORD)).status_code == 200
    assert c.get("/", headers=BEARER).status_code == 200
    # a wrong token in the form is 401 and sets no session
    c2 = app2.test_client()
    resp = c2.post("/status/login", data={"token": "nope"})
    assert resp.status_code == 401 and "wrong credentials" in resp.text
    assert c2.get("/").status_code == 401


def test_login_form_sets_a_strict_httponly_signed_cookie(tmp_path: Path) -> None:
    app = app_with(tmp_path, StubExporter(footprint()))
    c = app.test_client()
    resp = c.post("/status/login", data={"token": TOKEN})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/status")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{status.COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert c.get("/").status_code == 200
    # a cookie signed with another secret is worthless
    other = make_app(tmp_path / "o", environ={"PRESHIFT_WEBHOOK_TOKEN": "another"})
    assert status.session_key(other.extensions[status.EXTENSION].auth, tmp_path) \
        != app.secret_key
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    c3 = other.test_client()
    c3.set_cookie(status.COOKIE_NAME, value)
    assert c3.get("/").status_code == 401


def test_button_posts_and_the_journal_records_the_request(tmp_path: Path) -> None:
    app = app_with(tmp_path, StubExporter(footprint()))
    add_migration(app, "m1")
    c = app.test_client()
    token = login(c)
    resp = c.post("/status/migrations/m1/approve", data={"csrf": token})
    assert resp.status_code == 303
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        m = j.get("m1")
        assert m is not None and m.request == "approve"
        assert [s.action for s in j.steps("m1")][-1] == "request approve"
    page = c.get("/").text
    assert "approve of migration m1 recorded" in page
    assert 'id="approve-m1"' in page or "approve" in page
    # a request the phase does not allow is shown, not a 500
    add_migration(app, "m2", phase=Phase.PLANNED)
    c.post("/status/migrations/m2/rollback", data={"csrf": token})
    assert "nothing has changed yet; use abort" in c.get("/").text
    c.post("/status/migrations/zz/abort", data={"csrf": token})
    assert "no migration zz" in c.get("/").text


def test_basic_auth_user_gets_a_csrf_session_too(tmp_path: Path) -> None:
    app = make_app(tmp_path, environ={"PRESHIFT_WEBHOOK_PASSWORD": PASSWORD}, basic_user=USER)
    app.config[status.FETCH_KEY] = StubExporter(footprint())
    add_migration(app, "m1")
    c = app.test_client()
    hdr = basic(USER, PASSWORD)
    token = csrf_of(c.get("/", headers=hdr).text)
    # the browser attaches cached basic credentials to any POST; without the token: refused
    assert c.post("/status/migrations/m1/abort", headers=hdr).status_code == 403
    assert c.post("/status/migrations/m1/abort", headers=hdr,
                  data={"csrf": token}).status_code == 303
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert j.get("m1").request == "abort"  # type: ignore[union-attr]


def test_csrf_token_required(tmp_path: Path) -> None:
    app = app_with(tmp_path, StubExporter(footprint()))
    add_migration(app, "m1")
    c = app.test_client()
    token = login(c)
    for data in ({}, {"csrf": ""}, {"csrf": "x" + token[1:]}):
        assert c.post("/status/migrations/m1/approve", data=data).status_code == 403
    # the right token from another origin is refused as well
    resp = c.post("/status/migrations/m1/approve", data={"csrf": token},
                  headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403
    # another session's token does not fit this session
    other = app.test_client()
    other_token = login(other)
    assert other_token != token
    assert c.post("/status/migrations/m1/approve",
                  data={"csrf": other_token}).status_code == 403
    # a bearer header alone does not replace the token (the page is not the API)
    assert app.test_client().post("/status/migrations/m1/approve",
                                  headers=BEARER).status_code == 403
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert j.get("m1").request is None  # type: ignore[union-attr]
    # logout needs the token too, then the session is gone
    assert c.post("/status/logout").status_code == 403
    assert c.post("/status/logout", data={"csrf": token}).status_code == 303
    assert c.get("/").status_code == 401


def test_exporter_down_page_still_renders_with_a_notice(tmp_path: Path) -> None:
    stub = StubExporter(fail="cannot reach the exporter at http://127.0.0.1:1: refused")
    app = app_with(tmp_path, stub)
    add_migration(app, "m1")
    resp = app.test_client().get("/", headers=BEARER)
    assert resp.status_code == 200
    assert "Exporter unavailable" in resp.text and "refused" in resp.text
    assert 'id="migration-m1"' in resp.text and 'id="approve-m1"' in resp.text


def test_slow_exporter_costs_at_most_the_timeout(tmp_path: Path) -> None:
    stub = StubExporter(footprint(), delay=2.0)
    app = app_with(tmp_path, stub)
    app.config[status.TIMEOUT_KEY] = 0.2
    add_migration(app, "m1")
    t0 = time.monotonic()
    resp = app.test_client().get("/", headers=BEARER)
    assert time.monotonic() - t0 < 1.0
    assert resp.status_code == 200 and "did not answer within 0.2s" in resp.text
    assert 'id="migration-m1"' in resp.text
    # a second page while the first fetch is still running starts no second fetch
    app.test_client().get("/", headers=BEARER)
    assert stub.calls == 1


def test_footprint_is_cached_for_ttl() -> None:
    now = [0.0]
    stub = StubExporter(footprint())
    cache = status.FootprintCache(stub, "http://x", ttl=5, timeout=1, clock=lambda: now[0])
    assert cache.get().doc is not None and stub.calls == 1
    now[0] = 4.0
    cache.get()
    assert stub.calls == 1
    now[0] = 10.0
    stub.fail = "boom"
    snap = cache.get()
    assert stub.calls == 2 and snap.error == "boom" and snap.doc is not None  # last good kept


def test_real_fetch_against_a_dead_port_says_why() -> None:
    # 127.0.0.1 port 9 (discard) is closed on a test machine: the one-line reason is shown
    with pytest.raises(ValueError, match="cannot reach the exporter"):
        status.fetch_footprint("http://127.0.0.1:9", 0.5)


def test_footprint_view_tolerates_missing_parts() -> None:
    v = status.footprint_view({"nodes": [{"name": "n1"}], "scores": None, "plan": None})
    assert v["sites"][0]["racks"][0]["nodes"][0]["risk"] == "unknown"
    assert v["lowest"] == [] and v["entries"] == []
    assert status.risk_class(85.0, 0.2) == "medium" and status.risk_class(95.0, 0.2) == "low"


def test_unauthenticated_mode_keeps_csrf(tmp_path: Path) -> None:
    app = make_app(tmp_path, environ={}, allow_unauthenticated=True)
    app.config[status.FETCH_KEY] = StubExporter(footprint())
    add_migration(app, "m1")
    c = app.test_client()
    page = c.get("/")
    assert page.status_code == 200
    assert c.post("/status/migrations/m1/approve").status_code == 403
    assert c.post("/status/migrations/m1/approve",
                  data={"csrf": csrf_of(page.text)}).status_code == 303
    assert Path(f"{app.config['PRESHIFT_JOURNAL']}.status-key").stat().st_mode & 0o077 == 0


def test_concurrent_pages_share_one_fetch(tmp_path: Path) -> None:
    stub = StubExporter(footprint(), delay=0.3)
    app = app_with(tmp_path, stub)
    codes: list[int] = []

    def get() -> None:
        codes.append(app.test_client().get("/", headers=BEARER).status_code)

    threads = [threading.Thread(target=get) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 5 and stub.calls == 1
