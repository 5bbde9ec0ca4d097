"""Hostile input to the webhook (issue 7): never a 5xx, every refusal says what to fix,
nothing journaled for a refused request, exactly the alerts sent for an accepted one, and
nothing of it ever starts a migration or reaches a shell.

The requests come from hypothesis strategies over the pools of `bench/hostile_inputs.py`
(shared with `bench/bench_hostile.py`, which sends 100,000 of them to the real gunicorn) and
from that module's seeded `Fuzzer`, seeded by hypothesis. The expected status of an alerts
request is worked out independently: the credential and content type the generator chose,
the body size, and whether docs/openapi.yaml's request schema accepts the body.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import hostile_inputs as hi
from preshift.act.journal import Journal
from preshift.act.plan_source import StaticPlanSource
from webhook.intake import Intake as WebhookIntake
from webhook.intake import _Pending
from webhook.journal_ext import JournalExt
from webhook.payload import MAX_PROBLEMS, PayloadError, parse_notification

from .act_fakes import Clock, move_item, web_world
from .act_fakes import make_config as act_config
from .webhook_support import BEARER, TOKEN, make_app

ROOT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))
MAX_BODY = 1_048_576  # webhook.max_body's default, what make_app uses
JSON = "application/json"
#: Where the shell payloads would create files; it must never exist.
CANARY = Path(tempfile.gettempdir()) / f"preshift-hostile-canary-{os.getpid()}"
NOTIFICATION_FIELDS = {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                       "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                       "notification_reason", "alerts", "(top level)"}
SETTINGS = settings(max_examples=1500, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- "payload data never reaches a shell" ---------------------------------------------------

_SPAWNERS = (
    (subprocess, "Popen"), (os, "system"), (os, "popen"), (os, "posix_spawn"),
    (os, "posix_spawnp"), (os, "fork"), (os, "forkpty"),
    *((os, n) for n in dir(os) if n.startswith(("exec", "spawn"))),
)


@contextlib.contextmanager
def no_process_started() -> Iterator[list[str]]:
    """Any attempt to start a process (subprocess, os.system/popen/exec*/spawn*/fork) fails
    the test: it raises, and is recorded in case the app swallowed the exception."""
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def _refused(*args: Any, **kwargs: Any) -> Any:
            calls.append(f"{name}{args[:1]!r}")
            raise AssertionError(f"{name} called while serving hostile input: {args[:1]!r}")
        return _refused

    with pytest.MonkeyPatch.context() as mp:
        for module, name in _SPAWNERS:
            if hasattr(module, name):
                mp.setattr(module, name, refuse(f"{module.__name__}.{name}"))
        yield calls


def test_the_process_guard_trips() -> None:
    """The guard itself can fail: a process started inside it is caught."""
    with no_process_started() as calls:
        with pytest.raises(AssertionError, match=r"subprocess\.Popen"):
            subprocess.run(["true"], check=False)
        with pytest.raises(AssertionError, match=r"os\.system"):
            os.system("true")
    assert len(calls) == 2


_SHELL_ATTRS = {("os", "system"), ("os", "popen"), ("asyncio", "create_subprocess_shell"),
                ("commands", "getoutput"), ("commands", "getstatusoutput"), ("pty", "spawn")}


def shell_uses(source: str, filename: str = "<string>") -> list[str]:
    """Calls in Python source that run a command line through a shell: `shell=` anything but
    False, os.system, os.popen, asyncio.create_subprocess_shell, pty.spawn, commands.*.
    Starting a program with an argv list (subprocess without a shell, os.execve) is fine."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                (f.value.id, f.attr) in _SHELL_ATTRS:
            found.append(f"{filename}:{node.lineno}: {f.value.id}.{f.attr}")
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                          and kw.value.value is False):
                found.append(f"{filename}:{node.lineno}: shell={ast.unparse(kw.value)}")
    return found


def test_the_shell_scanner_finds_each_pattern() -> None:
    src = ("import os, subprocess, asyncio\nos.system('x')\nos.popen('x')\n"
           "subprocess.run('x', shell=True)\nsubprocess.run(['x'], shell=flag)\n"
           "asyncio.create_subprocess_shell('x')\nsubprocess.run(['ls', '-l'], shell=False)\n"
           "os.execve('/bin/ls', ['ls'], {})\n")
    assert [f.split(": ", 1)[1] for f in shell_uses(src)] == [
        "os.system", "os.popen", "shell=True", "shell=flag", "asyncio.create_subprocess_shell"]


def test_no_source_runs_a_shell() -> None:
    """preshift/, webhook/ and exporter/ start programs with argv lists only."""
    found = []
    files = [p for d in ("preshift", "webhook", "exporter") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        found += shell_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


# --- the oracle -----------------------------------------------------------------------------

_VALIDATOR = jsonschema.Draft202012Validator(
    {"components": SPEC["components"],
     "allOf": [{"$ref": "#/components/schemas/AlertmanagerNotification"}]})


def _surrogate(s: Any) -> bool:
    return isinstance(s, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def _kept_strings(doc: dict[str, Any]) -> Iterator[Any]:
    """The strings the webhook keeps (known fields; unknown ones are ignored)."""
    for key in ("groupKey", "receiver", "externalURL", "notification_reason"):
        yield doc.get(key)
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if isinstance(doc.get(key), dict):
            yield from [x for kv in doc[key].items() for x in kv]
    for a in doc.get("alerts") or []:
        if isinstance(a, dict):
            yield a.get("generatorURL")
            for key in ("labels", "annotations"):
                if isinstance(a.get(key), dict):
                    yield from [x for kv in a[key].items() for x in kv]


def spec_accepts(body: bytes) -> bool:
    """Would docs/openapi.yaml accept this body? Its request schema, plus what JSON Schema
    cannot say and the spec states in words: strings are valid Unicode (no lone surrogate);
    a pattern does not match a string with a final newline (Python's `$` would)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not _VALIDATOR.is_valid(doc):
        return False
    if any(_surrogate(s) for s in _kept_strings(doc)):
        return False
    return not any(isinstance(a.get(k), str) and a[k].endswith("\n")
                   for a in doc["alerts"] for k in ("fingerprint", "startsAt", "endsAt"))


def expected_status(req: hi.Request) -> int:
    """The status POST /api/v1/alerts must answer, from what the generator chose."""
    if req.method != "POST":
        return 405
    if not req.extra["auth_ok"]:
        return 401
    if len(req.body) > MAX_BODY:
        return 413
    if not req.extra["json_ct"]:
        return 415
    return 202 if spec_accepts(req.body) else 400


#: `field.path: what it must be (got ...)`; label names other than [A-Za-z0-9_] are quoted.
PROBLEM = re.compile(r"^(?P<root>\(top level\)|[A-Za-z_]\w*)(\.\S.*?)?: (?P<what>.+)$", re.S)


def check_error_answer(status: int, body: Any, req: hi.Request) -> None:
    """A refusal is JSON naming the problem (and, per field, the field) and the fix."""
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    assert len(json.dumps(body)) < 20_000, "an answer must not echo the input at length"
    if status == 401:
        assert "Authorization" in body["error"]
    elif status == 413:
        assert "max_body" in body["error"]
    elif status == 415:
        assert "Content-Type" in body["error"]
    problems = body.get("problems")
    if problems is None:
        return
    assert isinstance(problems, list) and 0 < len(problems) <= MAX_PROBLEMS + 1
    for p in problems:
        m = PROBLEM.match(p)
        assert m, p
        assert m["root"] in NOTIFICATION_FIELDS, p
        assert "must" in m["what"] or "required" in m["what"] or "fix" in m["what"], p


# --- strategies -----------------------------------------------------------------------------

LABELS = hi.label_values(str(CANARY))
texts = st.one_of(st.sampled_from(LABELS), st.text(max_size=20),
                  st.sampled_from(hi.NEAR_MISSES), st.sampled_from(("firing", "resolved", "4")))
components = st.sampled_from(
    (*hi.NEAR_MISSES, *LABELS, "", "api")).filter(lambda c: c != hi.PLANNED)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts
    | st.sampled_from(hi.SMALL_INTS + hi.ODD_FLOATS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
fingerprints = st.from_regex(r"\A[0-9a-f]{1,16}\Z") | st.sampled_from(hi.BAD_FINGERPRINTS)
times = st.sampled_from(hi.GOOD_TIMES + hi.BAD_TIMES)


@st.composite
def hostile_alert(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.dictionaries(texts, texts, max_size=3))
    comp = draw(components)
    labels[draw(st.sampled_from(("component", "service")))] = comp
    if hi.component_of(labels) == hi.PLANNED:  # e.g. component "" and service "web"
        labels["component"] = draw(st.sampled_from(hi.NEAR_MISSES))
    a = hi.alert(comp, draw(fingerprints), status=draw(st.sampled_from(("firing", "resolved"))),
                 starts_at=draw(times))
    a["labels"] = labels
    return a


@st.composite
def mutated(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any]:
    """Fields removed, added or mistyped, at the top or in an alert."""
    for _ in range(draw(st.integers(0, 3))):
        target = doc
        alerts = [a for a in doc["alerts"] if isinstance(a, dict)]  # earlier ops mistype some
        if alerts and draw(st.booleans()):
            target = draw(st.sampled_from(alerts))
        op = draw(st.sampled_from(("remove", "add", "mistype", "version", "status")))
        keys = sorted(target)
        if op == "remove" and keys:
            del target[draw(st.sampled_from(keys))]
        elif op == "add":
            target[draw(texts)] = draw(json_values)
        elif op == "mistype" and keys:
            target[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "version":
            doc["version"] = draw(st.sampled_from(hi.BAD_VERSIONS))
        elif op == "status":
            target["status"] = draw(st.sampled_from(hi.BAD_STATUSES))
        if not isinstance(doc.get("alerts"), list):
            break
    return doc


@st.composite
def v4_body(draw: st.DrawFn) -> bytes:
    doc = hi.notification(*draw(st.lists(hostile_alert(), max_size=4)),
                          status=draw(st.sampled_from(("firing", "resolved"))))
    for key in ("groupKey", "receiver", "externalURL"):
        if draw(st.booleans()):
            doc[key] = draw(texts)
    doc = draw(mutated(doc))
    return hi.dumps(doc, draw(st.sampled_from((0, 0, 1, 2, 3, 4))))


bodies = st.one_of(
    v4_body(), v4_body(), v4_body(), v4_body(),  # weight: most bodies get to the parser
    json_values.map(hi.dumps),
    st.binary(max_size=300),
    st.builds(hi.nested, st.sampled_from((900, 1000, 3000, 100_000)),
              st.sampled_from((b"[", b'{"a":')), st.sampled_from((b"]", b"}")), st.booleans()),
    st.integers(1, 3).map(lambda k: b'{"pad": "' + b"A" * (MAX_BODY + k) + b'"}'),
)


@st.composite
def alerts_request(draw: st.DrawFn) -> hi.Request:
    """A POST to /api/v1/alerts (sometimes another method) with hostile everything."""
    auth_ok = draw(st.integers(0, 9)) < 8
    auth = draw(st.sampled_from(hi.good_auth(TOKEN) if auth_ok else hi.bad_auth(TOKEN)))
    json_ct = draw(st.integers(0, 9)) < 9
    ctype = draw(st.sampled_from(hi.JSON_CONTENT_TYPES if json_ct else hi.OTHER_CONTENT_TYPES))
    headers = {}
    if auth is not None:
        headers["Authorization"] = hi.header_safe(auth)
    if ctype is not None:
        headers["Content-Type"] = hi.header_safe(ctype)
    method = "POST" if draw(st.integers(0, 19)) else draw(st.sampled_from(
        ("GET", "PUT", "DELETE", "PATCH", "HEAD")))
    return hi.Request(method, hi.ALERTS_PATH, headers, draw(bodies), "hypothesis",
                      extra={"auth_ok": auth_ok, "json_ct": json_ct})


#: The benchmark's generator, seeded by hypothesis: every kind of request it sends.
fuzzer_requests = st.integers(0, 2**32).map(
    lambda seed: hi.Fuzzer(seed, TOKEN, MAX_BODY, str(CANARY)).request())


# --- the alerts endpoint --------------------------------------------------------------------


def send(c: FlaskClient, req: hi.Request) -> Any:
    return c.open(req.path, method=req.method, data=req.body, headers=dict(req.headers))


class JournalView:
    """The test's own reading connection and its record of the dedupe keys seen."""

    def __init__(self, path: str) -> None:
        self.j = Journal(path)
        self.keys: set[str] = set()

    def count(self) -> int:
        return int(self.j._db.execute("SELECT count(*) FROM notifications").fetchone()[0])


def check_control_answer(req: hi.Request, r: Any) -> None:
    """The control API and health checks: never a 5xx, JSON, a refusal says what is wrong."""
    assert r.status_code < 500, (req.path[:200], r.data[:300])
    assert r.status_code in (200, 400, 401, 404, 405, 409), (req.path[:200], r.status_code)
    if not req.extra["auth_ok"] and req.path.startswith("/api/"):
        assert r.status_code in (401, 404, 405), req.path[:200]
    assert r.mimetype == JSON, (req.path[:200], r.data[:200])
    body = r.get_json()
    if r.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"]


def check_alerts_request(c: FlaskClient, view: JournalView, req: hi.Request) -> int:
    before = view.count()
    r = send(c, req)
    status = r.status_code
    assert status < 500, (status, r.data[:500])
    if req.kind == "control":
        check_control_answer(req, r)
        assert view.count() == before
        return status
    if req.path != hi.ALERTS_PATH and req.path != "/api/v1/%61lerts":
        assert status in (404, 405), status  # odd paths: unknown, as JSON
        assert r.mimetype == JSON
        assert view.count() == before
        return status
    assert status == expected_status(req), (req.body[:300], r.data[:500])
    if req.method == "HEAD":
        assert view.count() == before
        return status
    assert r.mimetype == JSON, r.data[:200]
    body = r.get_json()
    if status != 202:
        check_error_answer(status, body, req)
        assert view.count() == before, "a refused request journaled something"
        return status
    doc = json.loads(req.body)
    assert not hi.names_planned(doc), "the generator named the planned component"
    sent = [(a["status"], a["fingerprint"], a["startsAt"], a["labels"]) for a in doc["alerts"]]
    new: list[tuple[Any, ...]] = []
    for s, fp, at, labels in sent:
        key = f"{s}|{fp}|{at}"
        if key not in view.keys:
            view.keys.add(key)
            new.append((s, fp, at, labels))
    assert body == {"accepted": len(new), "duplicates": len(sent) - len(new)}
    assert view.count() == before + len(new)
    rows = list(reversed(view.j.notifications(limit=len(new)))) if new else []
    assert [(n.status, n.fingerprint, n.starts_at, dict(n.labels)) for n in rows] == new
    return status


def test_hostile_alerts_never_5xx_and_never_start_a_migration(tmp_path: Path) -> None:
    """The decisive property: everything the fuzz got journaled, run through the real intake
    with a plan that moves `web` (running), starts no migration; one valid alert for `web`
    starts exactly one (the positive control: the check can fail)."""
    app = make_app(tmp_path)
    c = app.test_client()
    view = JournalView(app.config["PRESHIFT_JOURNAL"])
    statuses: dict[int, int] = {}

    @SETTINGS
    @given(st.one_of(alerts_request(), fuzzer_requests))
    def fuzz(req: hi.Request) -> None:
        status = check_alerts_request(c, view, req)
        statuses[status] = statuses.get(status, 0) + 1

    with no_process_started() as spawned:
        fuzz()
    assert spawned == []
    assert not CANARY.exists()
    # the mix reached every stage of the endpoint
    assert {202, 400, 401, 413, 415} <= set(statuses), statuses
    journaled = view.count()
    assert journaled > 20, statuses

    cfg = act_config(cooldown=0)
    world, plans, clock = web_world(cfg), StaticPlanSource([move_item()]), Clock()
    with no_process_started() as spawned:
        replay = hi.replay_intake(view.j, cfg, world, plans, clock)
    assert spawned == []
    assert replay.notifications == journaled
    assert replay.migrations == [], replay.outcomes
    assert set(replay.outcomes) <= {"nothing to do", "ignored", "resolved"}, replay.outcomes

    # positive control: the same path with a valid alert for web does start one
    good = hi.notification(hi.alert(hi.PLANNED, "feedc0de00000001"))
    r = c.post(hi.ALERTS_PATH, data=json.dumps(good), headers={**BEARER, "Content-Type": JSON})
    assert r.status_code == 202 and r.get_json() == {"accepted": 1, "duplicates": 0}
    replay = hi.replay_intake(view.j, cfg, world, plans, clock)
    assert [(m.component, m.action, m.source_name) for m in replay.migrations] == [
        ("web", "move", "web-1")]
    view.j.close()


# --- the control API ------------------------------------------------------------------------

ids = st.one_of(st.sampled_from(hi.HOSTILE_IDS), st.text(min_size=1, max_size=30),
                st.sampled_from(LABELS))
query_pairs = st.lists(st.tuples(st.sampled_from(hi.QUERY_NAMES) | st.text(max_size=8),
                                 st.sampled_from(hi.QUERY_VALUES) | st.text(max_size=8)),
                       max_size=4)


@st.composite
def control_request(draw: st.DrawFn) -> hi.Request:
    auth_ok = draw(st.integers(0, 9)) < 8
    auth = draw(st.sampled_from(hi.good_auth(TOKEN) if auth_ok else hi.bad_auth(TOKEN)))
    headers = {} if auth is None else {"Authorization": hi.header_safe(auth)}
    mid = hi.quote_path_part(draw(ids))
    kind = draw(st.sampled_from(("request", "show", "list")))
    if kind == "request":
        verb = hi.quote_path_part(draw(st.sampled_from(hi.HOSTILE_VERBS) | st.text(max_size=8)))
        path, method = f"/api/v1/migrations/{mid}/{verb}", "POST"
    elif kind == "show":
        path, method = f"/api/v1/migrations/{mid}", draw(st.sampled_from(("GET", "POST")))
    else:
        base = draw(st.sampled_from(("/api/v1/migrations", "/api/v1/notifications",
                                     "/-/ready", "/-/healthy")))
        path, method = f"{base}?{hi.query_string(draw(query_pairs))}", "GET"
    return hi.Request(method, path, headers, b"", "control", extra={"auth_ok": auth_ok})


def _add_migration(app: Flask, mid: str) -> None:
    from preshift.act.records import Migration

    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        j.create_migration(Migration(id=mid, component="web", action="move", target_node="n2",
                                     canary_name=f"web-{mid}", source_node="n1",
                                     source_name="web-1", backend="be_web"))


def test_hostile_control_requests_never_5xx(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    _add_migration(app, "aaaa0001")  # so that some requests reach a real migration
    c = app.test_client()
    statuses: dict[int, int] = {}

    @settings(SETTINGS, max_examples=800)
    @given(st.one_of(control_request(), fuzzer_requests.filter(lambda r: r.kind == "control")))
    def fuzz(req: hi.Request) -> None:
        r = send(c, req)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        check_control_answer(req, r)

    with no_process_started() as spawned:
        fuzz()
    assert spawned == []
    assert {200, 400, 401, 404} <= set(statuses), statuses
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert [m.id for m in j.migrations()] == ["aaaa0001"]  # nothing created or lost


# --- regressions: defects this fuzz found ---------------------------------------------------


def _parse_error(body: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        parse_notification(body, JSON)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("where", ["labels", "groupKey", "annotations"])
def test_a_lone_surrogate_is_a_400_naming_the_field(tmp_path: Path, where: str) -> None:
    """Was a 500: the journal (SQLite, UTF-8) could not store "\\ud800"; with group commit
    the failure also failed the other requests that shared the transaction."""
    a = hi.alert("api", "c0ffee")
    doc = hi.notification(a)
    if where == "groupKey":
        doc["groupKey"], field = "x\ud800", "groupKey"
    else:
        a[where] = {"component": "api", "x": "\udfff"}
        field = f"alerts.0.{where}.x"
    err = _parse_error(hi.dumps(doc))
    assert err.problems[0].startswith(f"{field}: must be valid Unicode text"), err.problems
    app = make_app(tmp_path)
    r = app.test_client().post(hi.ALERTS_PATH, data=hi.dumps(doc),
                               headers={**BEARER, "Content-Type": JSON})
    assert r.status_code == 400
    with Journal(app.config["PRESHIFT_JOURNAL"]) as j:
        assert j.notifications() == []


@pytest.mark.parametrize("body", [
    hi.nested(100_000), hi.nested(100_000, closed=False), hi.nested(5000, b'{"a":', b"}"),
    b'{"version": "4", "status": "firing", "alerts": ' + hi.nested(2000) + b"}",
])
def test_deep_nesting_is_a_400(body: bytes) -> None:
    """Was a 500 (RecursionError in json.loads)."""
    assert "nested too deeply" in _parse_error(body).message


def test_answers_stay_short_and_say_what_to_fix() -> None:
    huge = "x" * 500_000
    err = _parse_error(hi.dumps(hi.notification(hi.alert("api", "ab", status=huge))))
    assert len(json.dumps(err.to_json())) < 1000  # was the whole 500 KB value echoed
    err = _parse_error(hi.dumps(hi.notification(*[hi.alert("api", "zz")] * 500)))
    assert len(err.problems) == MAX_PROBLEMS + 1 and "450 more problems" in err.problems[-1]
    err = _parse_error(b'{"version": "4", "truncatedAlerts": ' + b"9" * 5000 + b"}")
    assert "set_int_max_str_digits" not in err.message  # Python's advice, not the sender's fix
    doc = hi.notification(hi.alert("api", "ab"))
    doc["alerts"][0]["labels"] = {"a\nb" * 100: 1}
    err = _parse_error(hi.dumps(doc))
    assert err.problems[0].startswith("alerts.0.labels.'a\\nb") and len(err.problems[0]) < 200


@pytest.mark.parametrize(("change", "field"), [
    ({"startsAt": "2026-05-01T12:00:00Z\n"}, "alerts.0.startsAt"),  # Python's $ took it
    ({"startsAt": "٢٠٢٦-٠٥-٠١T12:00:00Z"}, "alerts.0.startsAt"),  # and \d Arabic digits
    ({"fingerprint": "c0ffee\n"}, "alerts.0.fingerprint"),
])
def test_times_and_fingerprints_are_ascii_without_a_trailing_newline(
        change: dict[str, str], field: str) -> None:
    doc = hi.notification({**hi.alert("api", "c0ffee"), **change})
    assert _parse_error(hi.dumps(doc)).problems[0].startswith(field + ": must")


@pytest.mark.parametrize("value", ["5", True, 2**63, 1e300])
def test_truncated_alerts_must_be_a_json_integer(value: Any) -> None:
    """pydantic's lax int took "5" and true; the spec says integer, at most 2^63-1."""
    doc = {**hi.notification(hi.alert("api", "ab")), "truncatedAlerts": value}
    assert _parse_error(hi.dumps(doc)).problems[0].startswith("truncatedAlerts: must be")
    assert not spec_accepts(hi.dumps(doc))


def test_one_bad_request_does_not_fail_the_others_of_its_group_commit(tmp_path: Path) -> None:
    """Rows the journal cannot take (here a lone surrogate past validation) fail only the
    request they came from, not every request of the shared transaction."""
    from preshift.act.records import Notification

    intake = WebhookIntake(JournalExt(tmp_path / "j.sqlite3"))
    good = _Pending([Notification("firing", "A", "api", "aa", "2026-01-01T00:00:00Z", {})])
    bad = _Pending([Notification("firing", "A", "x\ud800", "bb", "2026-01-01T00:00:00Z", {})])
    also_good = _Pending([Notification("firing", "A", "api", "cc", "2026-01-01T00:00:00Z", {})])
    intake._write([good, bad, also_good])
    assert (good.result, also_good.result) == ([True], [True])
    assert bad.done and isinstance(bad.error, UnicodeEncodeError)
    with Journal(tmp_path / "j.sqlite3") as j:
        assert sorted(n.fingerprint for n in j.notifications()) == ["aa", "cc"]
