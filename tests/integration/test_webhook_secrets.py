"""Secrets never leave the webhook: the real gunicorn webhook (2 workers, debug logging in
Python and in gunicorn, access log on) gets its bearer token and basic-auth password from the
environment in one run and from files in the other. Right and wrong credentials, malformed
and oversized requests, refused pages and errors go in; then everything it produced is read
(its stdout/stderr, the access log, the journal and its side files, /metrics, the status
page, every error body, `preshift config show`, `preshift migrations` with a wrong token) and
none of the secrets, nor any wrong token a client sent, may appear in it, in any encoding.
Needs neither root nor the testbed; only 127.0.0.1:20490-20491.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .stack import ROOT, Process, Webhook, wait_for

pytestmark = pytest.mark.integration

PORTS = {"env": 20490, "files": 20491}
USER = "am-user"


@dataclass
class Served:
    how: str
    url: str
    proc: Process
    dir: Path
    config: Path
    token: str
    password: str
    wrong: list[str] = field(default_factory=list)  # every wrong secret a client sent
    seen: list[str] = field(default_factory=list)  # every body and header answered

    @property
    def secrets(self) -> list[str]:
        return [self.token, self.password]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module", params=sorted(PORTS))
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    how = request.param
    d = tmp_path_factory.mktemp(f"secrets-{how}")
    token, password = f"tok-{secrets.token_hex(12)}", f"pw-{secrets.token_hex(12)}"
    lines = [
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]",
        "webhook:",
        f"  listen: 127.0.0.1:{PORTS[how]}",
        f"  journal: {d / 'journal.sqlite3'}",
        "  tick: 0.1s",
        f"  basic_user: {USER}",
        "  exporter_url: http://127.0.0.1:20499",  # nothing listens: the page shows an error
    ]
    env = {
        "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "webhook.testing:mark_handled_factory",
        "PRESHIFT_WEBHOOK_LOG_LEVEL": "debug", "PRESHIFT_WEBHOOK_ACCESS_LOG": "1",
        "GUNICORN_CMD_ARGS": "--log-level debug",
    }
    if how == "env":
        env |= {"PRESHIFT_WEBHOOK_TOKEN": token, "PRESHIFT_WEBHOOK_PASSWORD": password}
    else:
        for name, value in (("token", token), ("password", password)):
            (d / name).write_text(value + "\n")
            (d / name).chmod(0o600)
        lines += [f"  token_file: {d / 'token'}", f"  basic_password_file: {d / 'password'}"]
    config = d / "preshift.yaml"
    config.write_text("\n".join(lines) + "\n")
    proc = Webhook(config, f"127.0.0.1:{PORTS[how]}", d / "webhook.log", env=env)
    proc.start()
    try:
        proc.wait_ready()
        yield Served(how, proc.url, proc, d, config, token, password)
    finally:
        proc.stop()


def _note(fingerprint: str) -> dict[str, object]:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "r", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am:9093", "alerts": [{
                "status": "firing", "labels": {"alertname": "A", "component": "web"},
                "annotations": {}, "startsAt": "2026-11-28T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                "fingerprint": fingerprint}]}


def _exercise(s: Served) -> None:
    """Right and wrong credentials, malformed requests and errors; keeps every answer."""
    def wrong(prefix: str) -> str:
        w = f"{prefix}-{secrets.token_hex(10)}"
        s.wrong.append(w)
        return w

    def ask(method: str, path: str, want: int, **kw: object) -> requests.Response:
        r = requests.request(method, s.url + path, timeout=10, allow_redirects=False,
                             **kw)  # type: ignore[arg-type]
        s.seen.append(f"{r.status_code} {dict(r.headers)}\n{r.text}")
        assert r.status_code == want, (method, path, r.status_code, r.text[:300])
        return r

    bearer = {"Authorization": f"Bearer {s.token}"}
    basic = {"Authorization": _basic(USER, s.password)}
    alerts = "/api/v1/alerts"
    ask("POST", alerts, 202, json=_note("f1"), headers=bearer)
    ask("POST", alerts, 202, json=_note("f2"), headers=basic)
    ask("POST", alerts, 401, json=_note("f3"), headers={"Authorization": f"Bearer {wrong('b')}"})
    ask("POST", alerts, 401, json=_note("f4"),
        headers={"Authorization": _basic(USER, wrong("p"))})
    ask("POST", alerts, 401, json=_note("f5"),
        headers={"Authorization": _basic(wrong("u"), s.password)})
    ask("POST", alerts, 401, json=_note("f6"), headers={"Authorization": wrong("raw")})
    ask("POST", alerts, 401, data=b"{oops", headers={"Authorization": f"Bearer {wrong('m')}"})
    ask("POST", alerts, 400, data=b"{oops", headers={**bearer,
                                                     "Content-Type": "application/json"})
    ask("POST", alerts, 415, data=b"x", headers={**bearer, "Content-Type": "text/plain"})
    ask("POST", alerts, 413, data=b"x" * (2 << 20),
        headers={**bearer, "Content-Type": "application/json"})
    ask("GET", "/api/v1/migrations?limit=zero", 400, headers=bearer)
    ask("GET", "/api/v1/migrations", 401, headers={"Authorization": f"Bearer {wrong('g')}"})
    ask("POST", "/api/v1/migrations/nope/abort", 404, headers=basic)
    ask("POST", "/api/v1/migrations/nope/abort", 401,
        headers={"Authorization": _basic(USER, wrong("a"))})
    ask("DELETE", alerts, 405, headers=bearer)
    ask("GET", "/nope", 404, headers=bearer)
    # the status page: a wrong token in the form, then the right one; its pages and refusals
    session = requests.Session()
    r = session.post(s.url + "/status/login", data={"token": wrong("form")}, timeout=10)
    s.seen.append(r.text)
    assert r.status_code == 401
    r = session.post(s.url + "/status/login", data={"user": USER, "password": wrong("fp")},
                     timeout=10)
    s.seen.append(r.text)
    assert r.status_code == 401
    r = session.post(s.url + "/status/login", data={"token": s.token}, timeout=10,
                     allow_redirects=False)
    assert r.status_code == 303
    s.seen.append(str(session.cookies.get_dict()))
    page = session.get(s.url + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    s.seen.append(page.text)
    r = session.post(s.url + "/status/migrations/nope/abort", data={"csrf": wrong("csrf")},
                     timeout=10)
    s.seen.append(r.text)
    assert r.status_code == 403
    s.seen.append(requests.get(s.url + "/metrics", timeout=10).text)

    def handled() -> bool:
        r = requests.get(s.url + "/api/v1/notifications?unhandled=true", headers=bearer,
                         timeout=5)
        return r.ok and r.json()["notifications"] == []

    wait_for(handled, 20, "the executor to handle the notifications")


def _run_cli(s: Served, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "preshift.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **env})
    return proc.stdout + proc.stderr


def _forms(secret: str) -> list[str]:
    """The secret as it could leak: plain, in basic auth's base64 (as a password or a user,
    at each of the three alignments base64 gives it) and percent-encoded."""
    out = [secret]
    for pre in ("", "x", "xx"):
        enc = base64.b64encode(f"{pre}{USER}:{secret}".encode()).decode()
        out.append(enc[len(enc) // 2:-4])  # the part that encodes only the secret
    out.append(base64.b64encode(f"{secret}:".encode()).decode()[:-4])
    return out


def test_no_secret_and_no_wrong_token_appears_anywhere(served: Served) -> None:
    s = served
    _exercise(s)
    env = {"PRESHIFT_WEBHOOK_TOKEN": s.token, "PRESHIFT_WEBHOOK_PASSWORD": s.password}
    shown = _run_cli(s, "config", "show", str(s.config), env=env)
    assert "webhook:" in shown, shown
    refused = _run_cli(s, "migrations", "--url", s.url, "list",
                       env={"PRESHIFT_WEBHOOK_TOKEN": s.wrong[0]})
    assert "refused the credentials" in refused, refused
    listed = _run_cli(s, "migrations", "--url", s.url, "--config", str(s.config), "list",
                      env=env)
    assert "Traceback" not in listed, listed
    code = s.proc.stop()  # flush and close everything it writes
    assert code == 0, s.proc.tail()

    produced: dict[str, bytes] = {"cli": (shown + refused + listed).encode(),
                                  "answers": "\n".join(s.seen).encode()}
    for f in s.dir.rglob("*"):
        if f.is_file() and f.name not in ("token", "password", "preshift.yaml"):
            produced[str(f.relative_to(s.dir))] = f.read_bytes()
    log = produced["webhook.log"].decode(errors="replace")
    assert "POST /api/v1/alerts" in log, log[-2000:]  # the access log is in it
    assert "DEBUG" in log, log[-2000:]  # and debug logging was on
    assert any(k.startswith("journal.sqlite3") for k in produced)
    leaks = [(name, what) for name, data in produced.items()
             for what in (*s.secrets, *s.wrong) for form in _forms(what)
             if form.encode() in data]
    assert leaks == [], leaks
    print(f"{s.how}: {len(produced)} outputs, {sum(map(len, produced.values()))} bytes, "
          f"{len(s.wrong)} wrong secrets sent; no leak")
