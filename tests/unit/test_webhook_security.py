"""Security of the webhook: every route is derived from the app's url_map and refused without
(or with wrong) credentials unless it is on the public allow-list below, and nothing is
journaled by a refused request; the runtimes refuse to touch what Preshift does not own.

A route added later without authentication makes `test_every_route_but_the_public_ones_is_
refused` fail (`test_the_check_catches_a_route_added_without_auth` proves it does).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.routing import Rule

from preshift.act.docker_runtime import DockerRuntime
from preshift.act.journal import Journal, Migration
from preshift.act.ports import Instance
from preshift.act.records import Notification
from preshift.act.swarm_runtime import SwarmRuntime
from preshift.config import NodeConfig
from preshift.errors import ActionError

from .webhook_support import PASSWORD, TOKEN, USER, basic, make_app, payload

#: Routes anyone may call, and why that is safe. Each must exist (a stale entry fails).
PUBLIC: dict[tuple[str, str], str] = {
    ("/metrics", "GET"): "Prometheus scrapes it; counters only, no secret, changes nothing",
    ("/-/healthy", "GET"): "liveness probe; a constant answer",
    ("/-/ready", "GET"): "readiness probe; reads one count from the journal",
    ("/static/<path:filename>", "GET"): "the status page's stylesheet",
    ("/status/login", "GET"): "the login form itself",
    ("/status/login", "POST"): "takes the credential itself; a wrong one is a 401 and only "
                               "the session cookie is ever written",
}
#: Refusals that count: the API's 401, the status page's login page (401) and its CSRF
#: refusal (403, for logout: it only forgets a session, and needs the session's token).
REFUSED = (401, 403)
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
WRONG: dict[str, dict[str, str]] = {
    "none": {},
    "wrong bearer": {"Authorization": f"Bearer {TOKEN}x"},
    "empty bearer": {"Authorization": "Bearer "},
    "wrong password": basic(USER, PASSWORD + "x"),
    "wrong user": basic(USER + "x", PASSWORD),
    "token as basic password": basic(USER, TOKEN),
    "garbage basic": {"Authorization": "Basic !!!notbase64"},
    "unknown scheme": {"Authorization": f"Token {TOKEN}"},
}


def _app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, environ={"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
                                       "PRESHIFT_WEBHOOK_PASSWORD": PASSWORD},
                    basic_user=USER)


def _journal_with_one_of_each(path: Path) -> str:
    """A notification and a PLANNED migration a forged request could change; its id."""
    with Journal(path) as j:
        j.record_notifications([Notification(
            status="firing", alertname="A", component="web", fingerprint="f1",
            starts_at="2026-01-01T00:00:00Z", labels={"component": "web"})])
        m = j.create_migration(Migration(id="m-1", component="web", action="move",
                                         target_node="n2", canary_name="web-m-1",
                                         source_node="n1", source_name="web-1"))
        return m.id


def _snapshot(path: Path) -> Any:
    with Journal(path) as j:
        return ([(n.id, n.status, n.handled_at, n.outcome) for n in j.notifications(1000)],
                [m.to_dict() for m in j.migrations(limit=1000)],
                [[s.id for s in j.steps(m.id)] for m in j.migrations(limit=1000)])


def _url(rule: Rule, migration_id: str) -> str:
    values = {"migration_id": migration_id, "what": "abort", "filename": "status.css"}
    return rule.rule.replace("<path:filename>", values["filename"]).replace(
        "<migration_id>", values["migration_id"]).replace("<what>", values["what"])


def unprotected(app: Flask, journal: Path, migration_id: str) -> list[str]:
    """Every (route, method, credentials) that is not refused, or that changed the journal,
    for each non-public rule of the url_map; empty when all is well."""
    problems = []
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (rule.rule, method) in PUBLIC:
                continue
            for what, headers in WRONG.items():
                before = _snapshot(journal)
                body: Any = payload() if rule.rule == "/api/v1/alerts" else None
                form = {"csrf": "guessed", "token": "", "user": "", "password": ""} \
                    if rule.rule.startswith("/status") else None
                resp = client.open(_url(rule, migration_id), method=method, headers=headers,
                                   json=body, data=form)
                if resp.status_code not in REFUSED:
                    problems.append(f"{method} {rule.rule} with {what}: {resp.status_code}")
                if method in MUTATING and _snapshot(journal) != before:
                    problems.append(f"{method} {rule.rule} with {what}: the journal changed")
    return problems


def test_every_route_but_the_public_ones_is_refused(tmp_path: Path) -> None:
    app = _app(tmp_path)
    journal = Path(app.config["PRESHIFT_JOURNAL"])
    mid = _journal_with_one_of_each(journal)
    routes = {(r.rule, m) for r in app.url_map.iter_rules() for m in r.methods or ()}
    assert set(PUBLIC) <= routes, set(PUBLIC) - routes  # no stale allow-list entry
    mutating = {(r, m) for r, m in routes if m in MUTATING}
    assert len(mutating) >= 5, mutating  # alerts, API requests, login, logout, page buttons
    assert unprotected(app, journal, mid) == []
    # and the right credentials do get through (the refusals above are not an accident)
    client = app.test_client()
    ok = client.post(f"/api/v1/migrations/{mid}/abort", headers=basic(USER, PASSWORD))
    assert ok.status_code == 200, ok.get_json()
    assert client.post("/api/v1/alerts", json=payload(),
                       headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202


def test_the_check_catches_a_route_added_without_auth(tmp_path: Path) -> None:
    app = _app(tmp_path)
    journal = Path(app.config["PRESHIFT_JOURNAL"])
    mid = _journal_with_one_of_each(journal)

    def forget() -> tuple[str, int]:
        with Journal(journal) as j:
            j.request(mid, "abort")
        return "ok", 200

    app.add_url_rule("/api/v1/forget", "forget", forget, methods=["POST"])
    problems = unprotected(app, journal, mid)
    assert any(p.startswith("POST /api/v1/forget with none: 200") for p in problems), problems
    assert any("the journal changed" in p for p in problems), problems


def test_no_get_route_changes_the_journal(tmp_path: Path) -> None:
    """Even with valid credentials, reading (every GET rule) journals nothing."""
    app = _app(tmp_path)
    journal = Path(app.config["PRESHIFT_JOURNAL"])
    mid = _journal_with_one_of_each(journal)
    client = app.test_client()
    before = _snapshot(journal)
    gets = [r for r in app.url_map.iter_rules() if "GET" in (r.methods or ())]
    assert len(gets) >= 8
    for rule in gets:
        resp = client.get(_url(rule, mid), headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code < 500, (rule.rule, resp.status_code)
    assert _snapshot(journal) == before


def test_a_session_cookie_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    """The status page's session stands for the secret: a cookie from another secret (or a
    forged one) gets the login page, and its buttons journal nothing."""
    other = make_app(tmp_path / "other", environ={"PRESHIFT_WEBHOOK_TOKEN": "another"})
    (tmp_path / "other").mkdir(exist_ok=True)
    c1 = other.test_client()
    assert c1.post("/status/login", data={"token": "another"}).status_code == 303
    cookie = c1.get_cookie("preshift_status")
    assert cookie is not None
    app = _app(tmp_path)
    journal = Path(app.config["PRESHIFT_JOURNAL"])
    mid = _journal_with_one_of_each(journal)
    before = _snapshot(journal)
    c2 = app.test_client()
    c2.set_cookie("preshift_status", cookie.value)
    assert c2.get("/").status_code == 401
    r = c2.post(f"/status/migrations/{mid}/abort", data={"csrf": "x" * 43})
    assert r.status_code == 401
    assert _snapshot(journal) == before


def test_error_bodies_and_the_401_carry_no_secret(tmp_path: Path) -> None:
    app = _app(tmp_path)
    client = app.test_client()
    sent = f"Bearer {TOKEN}-guess"
    answers = [
        client.post("/api/v1/alerts", data=b"{oops", headers={"Authorization": sent}),
        client.post("/api/v1/alerts", data=b"{oops", headers={"Authorization":
                                                               f"Bearer {TOKEN}"},
                    content_type="application/json"),
        client.get("/api/v1/migrations?limit=x", headers=basic(USER, PASSWORD)),
        client.post("/status/login", data={"token": TOKEN + "-guess"}),
        client.get("/nope"),
    ]
    for r in answers:
        text = r.get_data(as_text=True) + str(r.headers)
        for secret in (TOKEN, PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()):
            assert secret not in text, (r.status_code, text)
    assert answers[0].status_code == 401 and answers[1].status_code == 400


# -- the runtimes change only what carries Preshift's labels ----------------------------------


class _Container:
    def __init__(self, name: str, labels: Mapping[str, str]) -> None:
        self.name, self.status = name, "running"
        self.attrs = {"Name": f"/{name}", "Id": f"id-{name}", "State": {"Status": "running"},
                      "Config": {"Labels": dict(labels), "Image": "box"},
                      "HostConfig": {"RestartPolicy": {"Name": "always"}}}
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Any:
        if method in ("start", "stop", "update", "remove", "unpause", "kill", "pause"):
            return lambda *a, **kw: self.calls.append(method)
        raise AttributeError(method)


class _Containers:
    def __init__(self, boxes: dict[str, _Container]) -> None:
        self.boxes = boxes

    def get(self, ref: str) -> _Container:
        import docker.errors

        if ref not in self.boxes:
            raise docker.errors.NotFound(ref)
        return self.boxes[ref]


class _Client:
    """What DockerRuntime uses of a docker-py client; the low-level API must not be used."""

    def __init__(self, boxes: dict[str, _Container]) -> None:
        self.containers = _Containers(boxes)
        self.api = None  # any create/start through the raw API would fail loudly


def _docker(boxes: dict[str, _Container]) -> DockerRuntime:
    client = _Client(boxes)
    return DockerRuntime([NodeConfig(name="n2", url="unix:///nonexistent.sock")],
                         client_factory=lambda url, timeout: client)


def test_docker_runtime_refuses_containers_without_the_component_label() -> None:
    stranger = _Container("web-2", {"team": "blue"})  # the name a plan entry would use
    ours = _Container("web-3", {"preshift.service": "web"})
    rt = _docker({"web-2": stranger, "web-3": ours})
    for call in (lambda: rt.standby("n2", "web-2", {}), lambda: rt.remove("n2", "web-2"),
                 lambda: rt.start("n2", "web-2")):
        with pytest.raises(ActionError, match=r"web-2 on node n2 .*preshift\.service") as err:
            call()
        assert not err.value.retriable
    assert stranger.calls == []  # untouched
    rt.standby("n2", "web-3", {})
    rt.remove("n2", "web-3")
    assert ours.calls == ["update", "stop", "remove"]


def test_docker_runtime_never_adopts_a_foreign_container_as_a_canary() -> None:
    """clone() reuses an existing container of the canary's name only when this migration
    made it (its migration label): a retry after a crash, never someone else's."""
    other = _Container("web-m-1", {"preshift.service": "web", "preshift.migration": "m-0"})
    bare = _Container("api-m-2", {})
    mine = _Container("web-m-3", {"preshift.service": "web", "preshift.migration": "m-3"})
    mine.status = "exited"
    rt = _docker({"web-m-1": other, "api-m-2": bare, "web-m-3": mine})
    src = Instance(node="n2", name="web-1", container_id="x", component="web",
                   state="running", image="box")
    with pytest.raises(ActionError, match=r"preshift\.migration=m-1"):
        rt.clone(src, "n2", "web-m-1", {"preshift.migration": "m-1"})
    with pytest.raises(ActionError, match=r"preshift\.service"):
        rt.clone(src, "n2", "api-m-2", {"preshift.migration": "m-2"})
    assert other.calls == [] and bare.calls == []
    assert rt.clone(src, "n2", "web-m-3", {"preshift.migration": "m-3"}).name == "web-m-3"
    assert mine.calls == ["start"]


class _SwarmApi:
    """A manager with one service; any write is recorded (and must not happen)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.raw = {"ID": "sid", "Version": {"Index": 1}, "Spec": spec}
        self.writes: list[str] = []

    def inspect_service(self, ref: str) -> dict[str, Any]:
        import docker.errors

        if ref not in ("sid", self.raw["Spec"]["Name"]):
            raise docker.errors.NotFound(ref)
        return self.raw

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        return [{"ID": "t1", "ServiceID": "sid", "Slot": 1, "NodeID": "N2",
                 "Status": {"State": "running", "ContainerStatus": {"ContainerID": "c1"}},
                 "DesiredState": "running"}]

    def nodes(self) -> list[dict[str, Any]]:
        return [{"ID": "N2", "Description": {"Hostname": "n2"}, "Spec": {}, "Status": {}}]

    def __getattr__(self, method: str) -> Any:
        if method in ("_post_json", "remove_service", "update_service", "create_service"):
            return lambda *a, **kw: self.writes.append(method)
        raise AttributeError(method)


def _swarm(spec: dict[str, Any]) -> tuple[SwarmRuntime, _SwarmApi]:
    api = _SwarmApi(spec)
    client = type("C", (), {"api": api, "info": lambda self: {"Swarm": {"NodeID": "N2"}}})()
    rt = SwarmRuntime([NodeConfig(name="n2", url="unix:///nonexistent.sock")], "n2",
                      client_factory=lambda url, timeout: client, wait=0.1)
    return rt, api


def test_swarm_runtime_refuses_services_without_the_component_label() -> None:
    spec = {"Name": "web", "Labels": {}, "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"ContainerSpec": {"Image": "box", "Labels": {"team": "x"}}}}
    rt, api = _swarm(spec)
    for call in (lambda: rt.standby("n2", "web.1", {}), lambda: rt.remove("n2", "web.1"),
                 lambda: rt.start("n2", "web.1")):
        with pytest.raises(ActionError, match=r"service web on node n2 .*preshift\.service"):
            call()
    src = Instance(node="n2", name="x.1", container_id="c", component="x", state="running",
                   image="box")
    with pytest.raises(ActionError, match=r"preshift\.migration=m-1"):
        rt.clone(src, "n2", "web", {"preshift.migration": "m-1"})  # a name clash
    assert api.writes == []


def test_refused_targets_stay_in_the_plan_as_stale(tmp_path: Path) -> None:
    """Intake never plans a migration of a replica whose component label does not match the
    plan (an unlabelled container that took the planned replica's name)."""
    from preshift.act.intake import Intake

    from .act_fakes import Clock, World, make_config, move_item

    world = World()
    world.add("n1", "web-1", "")  # same name, no component label
    cfg = make_config()
    plans = type("P", (), {"fetch": lambda self: [move_item("web-1", "n2")]})()
    with Journal(tmp_path / "j.sqlite3") as j:
        j.record_notifications([Notification(
            status="firing", alertname="A", component="web", fingerprint="f",
            starts_at="s", labels={"component": "web"})])
        n = j.unhandled_notifications()[0]
        outcome = Intake(cfg, j, world, plans, clock=Clock()).handle(n)
        assert outcome.startswith("no migration: skipped") and "stale" in outcome, outcome
        assert j.migrations() == [] and world.mutations() == []
