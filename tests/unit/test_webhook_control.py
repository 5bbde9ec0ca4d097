"""The control API (migrations, notifications, health) and the app factory's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

import webhook
from preshift.act.journal import Journal, Migration
from preshift.act.phases import Phase
from preshift.errors import ConfigError

from .webhook_support import BEARER, PASSWORD, make_app, make_config, payload

API = "/api/v1/migrations"


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def add(app: Flask, mid: str, component: str = "web", **kw: object) -> Migration:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        return j.create_migration(Migration(
            id=mid, component=component, action="move", target_node="n2",
            canary_name=f"{component}-{mid}", source_node="n1", source_name=f"{component}-1",
            **kw,  # type: ignore[arg-type]
        ))


def advance(app: Flask, mid: str, *phases: Phase, **changes: object) -> None:
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        m = j.get(mid)
        assert m is not None
        for p in phases:
            m = j.update(m, phase=p)
        if changes:
            j.update(m, **changes)


def test_control_endpoints_need_auth(app: Flask) -> None:
    add(app, "aaaa0001")
    c = app.test_client()
    for method, path in (("GET", API), ("GET", f"{API}/aaaa0001"),
                         ("POST", f"{API}/aaaa0001/abort"), ("GET", "/api/v1/notifications")):
        r = c.open(path, method=method)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="preshift"'
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert j.get("aaaa0001").request is None  # type: ignore[union-attr]


def test_health_and_metrics_need_no_auth(app: Flask) -> None:
    c = app.test_client()
    assert c.get("/-/healthy").json == {"status": "ok"}
    r = c.get("/-/ready")
    assert r.status_code == 200 and r.json["unhandled_notifications"] == 0
    assert c.get("/metrics").status_code == 200


def test_ready_is_503_when_the_journal_cannot_be_opened(app: Flask, tmp_path: Path) -> None:
    ext = app.extensions["preshift.journal"]
    ext.path = tmp_path / "gone" / "file-not-dir" / "j.sqlite3"
    (tmp_path / "gone").write_text("a file where a directory should be")
    r = app.test_client().get("/-/ready")
    assert r.status_code == 503 and r.is_json


def test_list_and_filters(app: Flask) -> None:
    add(app, "aaaa0001", "web")
    add(app, "aaaa0002", "api")
    add(app, "aaaa0003", "web")
    advance(app, "aaaa0003", Phase.CANCELLED)
    c = app.test_client()
    ids = lambda r: [m["id"] for m in r.json["migrations"]]  # noqa: E731
    assert sorted(ids(c.get(API, headers=BEARER))) == ["aaaa0001", "aaaa0002", "aaaa0003"]
    assert sorted(ids(c.get(f"{API}?active=true", headers=BEARER))) == ["aaaa0001", "aaaa0002"]
    assert ids(c.get(f"{API}?active=false", headers=BEARER)) == ["aaaa0003"]
    assert sorted(ids(c.get(f"{API}?component=web", headers=BEARER))) == ["aaaa0001",
                                                                          "aaaa0003"]
    assert len(ids(c.get(f"{API}?limit=1", headers=BEARER))) == 1


def test_bad_query_parameters_are_400_with_every_problem(app: Flask) -> None:
    r = app.test_client().get(f"{API}?active=maybe&limit=0&colour=red&component=a%20b",
                              headers=BEARER)
    assert r.status_code == 400
    problems = r.json["problems"]
    assert any(p.startswith("unknown query parameter(s) colour") for p in problems)
    assert any(p.startswith("active: must be true or false") for p in problems)
    assert any(p.startswith("limit: must be a whole number from 1 to 1000") for p in problems)
    assert any(p.startswith("component:") for p in problems)


def test_hostile_query_and_ids_are_refused_with_bounded_answers(app: Flask) -> None:
    c = app.test_client()
    r = c.get(f"{API}?component=web%0A", headers=BEARER)  # a trailing newline is not a name
    assert r.status_code == 400 and r.json["problems"][0].startswith("component:")
    names = "&".join(f"p{i:05d}{'x' * 20}=1" for i in range(2000))
    r = c.get(f"{API}?{names}", headers=BEARER)
    assert r.status_code == 400 and len(r.get_data()) < 1000
    assert "and 1995 more" in r.json["problems"][0]
    long_id = "m" * 20_000
    for resp in (c.get(f"{API}/{long_id}", headers=BEARER),
                 c.post(f"{API}/{long_id}/abort", headers=BEARER),
                 c.post(f"{API}/x/{long_id}", headers=BEARER)):
        assert resp.status_code == 404 and len(resp.get_data()) < 500


def test_show_with_steps_and_404(app: Flask) -> None:
    add(app, "aaaa0001")
    c = app.test_client()
    r = c.get(f"{API}/aaaa0001", headers=BEARER)
    assert r.status_code == 200
    assert r.json["phase"] == "planned" and r.json["steps"][0]["action"] == "plan"
    r = c.get(f"{API}/nope", headers=BEARER)
    assert r.status_code == 404 and "no migration 'nope'" in r.json["error"]


def test_requests_200_404_409(app: Flask) -> None:
    add(app, "aaaa0001")
    c = app.test_client()
    # approve: nothing waits for approval
    r = c.post(f"{API}/aaaa0001/approve", headers=BEARER)
    assert r.status_code == 409 and "not waiting for approval" in r.json["error"]
    # rollback of a planned migration: nothing to undo
    r = c.post(f"{API}/aaaa0001/rollback", headers=BEARER)
    assert r.status_code == 409 and "use abort" in r.json["error"]
    r = c.post(f"{API}/aaaa0001/abort", headers=BEARER)
    assert r.status_code == 200
    assert r.json["migration"]["request"] == "abort" and "next tick" in r.json["message"]
    assert c.post(f"{API}/missing/abort", headers=BEARER).status_code == 404
    assert c.post(f"{API}/aaaa0001/explode", headers=BEARER).status_code == 404
    steps = c.get(f"{API}/aaaa0001", headers=BEARER).json["steps"]
    assert [s["action"] for s in steps] == ["plan", "request abort"]


def test_approve_when_awaiting_approval_and_409_once_finished(app: Flask) -> None:
    add(app, "aaaa0001", approval="pending")
    c = app.test_client()
    assert c.post(f"{API}/aaaa0001/approve", headers=BEARER).status_code == 200
    advance(app, "aaaa0001", Phase.CANCELLED)
    r = c.post(f"{API}/aaaa0001/abort", headers=BEARER)
    assert r.status_code == 409 and "finished" in r.json["error"]


def test_notifications_list(app: Flask) -> None:
    c = app.test_client()
    c.post("/api/v1/alerts", json=payload(), headers=BEARER)
    r = c.get("/api/v1/notifications?limit=5", headers=BEARER)
    assert r.status_code == 200
    (n,) = r.json["notifications"]
    assert n["component"] == "web" and n["handled_at"] is None
    assert len(c.get("/api/v1/notifications?unhandled=true", headers=BEARER)
               .json["notifications"]) == 1
    assert c.get("/api/v1/notifications?limit=x", headers=BEARER).status_code == 400


# --- the factory --------------------------------------------------------------------------


def test_no_auth_configured_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no authentication configured"):
        webhook.create_app(make_config(tmp_path / "j.sqlite3"), start_worker=False, environ={})


@pytest.mark.parametrize(("webhook_cfg", "env", "match"), [
    ({"basic_user": "am"}, {}, "there is no password"),
    ({}, {"PRESHIFT_WEBHOOK_PASSWORD": PASSWORD}, "basic_user is not set"),
    ({"token_file": "/nonexistent/token"}, {}, "cannot read the secret file"),
])
def test_inconsistent_auth_refuses_to_start(
    tmp_path: Path, webhook_cfg: dict[str, str], env: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        webhook.create_app(make_config(tmp_path / "j.sqlite3", **webhook_cfg),
                           start_worker=False, environ=env)


def test_an_empty_token_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        webhook.create_app(make_config(tmp_path / "j.sqlite3", token_file=str(tmp_path / "token")),
                           start_worker=False, environ={})


def test_token_from_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    app = webhook.create_app(make_config(tmp_path / "j.sqlite3",
                                         token_file=str(tmp_path / "token")),
                             start_worker=False, environ={})
    r = app.test_client().get(API, headers={"Authorization": "Bearer from-a-file"})
    assert r.status_code == 200


def test_config_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "preshift.yaml"
    cfg.write_text(
        "nodes: [{name: n1, url: 'unix:///x.sock'}]\n"
        f"webhook: {{journal: '{tmp_path / 'j.sqlite3'}'}}\n"
    )
    app = webhook.create_app(start_worker=False, environ={
        "PRESHIFT_CONFIG": str(cfg), "PRESHIFT_WEBHOOK_TOKEN": "x"})
    assert app.config["PRESHIFT_JOURNAL"] == str(tmp_path / "j.sqlite3")
    with pytest.raises(ConfigError, match="PRESHIFT_CONFIG"):
        webhook.create_app(start_worker=False, environ={})


def test_an_unopenable_journal_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"webhook\.journal"):
        webhook.create_app(make_config(tmp_path / "file" / "j.sqlite3"), start_worker=False,
                           environ={"PRESHIFT_WEBHOOK_TOKEN": "x"})


def test_a_bad_factory_path_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="module:attribute"):
        webhook.create_app(make_config(tmp_path / "j.sqlite3"), environ={
            "PRESHIFT_WEBHOOK_TOKEN": "x", "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "nocolon"})
