"""`preshift webhook serve` and `preshift migrations ...` (the operators' client).

`serve` validates the configuration and the secrets here, so a mistake is one line and exit
2, then replaces this process with gunicorn (`python -m gunicorn -c webhook/gunicorn.conf.py
'webhook:create_app()'`): the PID stays the same for a supervisor, and gunicorn alone
handles signals, workers and restarts; no second process layer to keep in sync.

`migrations` talks to a running webhook's HTTP API. Exit codes: 0 done; 2 bad input (a bad
option, an unknown migration, a rejected query); 1 a failure (unreachable webhook, refused
credentials, a request that makes no sense in the migration's phase, a server error, and
`watch` of a migration that did not succeed).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from preshift.config import Config, WebhookConfig, load_config, read_secret
from preshift.errors import InputError

TOKEN_ENV = "PRESHIFT_WEBHOOK_TOKEN"
PASSWORD_ENV = "PRESHIFT_WEBHOOK_PASSWORD"
SUCCESS_PHASES = frozenset({"succeeded", "dry_run"})
TERMINAL_PHASES = frozenset({"succeeded", "rolled_back", "cancelled", "dry_run", "failed"})


class Failure(click.ClickException):
    """A failure (exit 1), printed as one `error: …` line like the rest of `preshift`."""

    exit_code = 1

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable  # the webhook was unreachable or answered 5xx

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


# --- preshift webhook serve ---------------------------------------------------------------


@click.group("webhook")
def webhook_group() -> None:
    """The webhook that receives Alertmanager's notifications and runs migrations."""


def _listen(value: str) -> str:
    from pydantic import ValidationError

    try:
        return WebhookConfig(listen=value).listen
    except ValidationError:
        raise InputError(f"--listen {value!r}: must be HOST:PORT, e.g. 127.0.0.1:9733") from None


@webhook_group.command("serve")
@click.option("--config", "config_path", required=True, envvar="PRESHIFT_CONFIG",
              type=click.Path(dir_okay=False), help="configuration file (or $PRESHIFT_CONFIG)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes [default: $PRESHIFT_WEBHOOK_WORKERS or 2]")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="address to serve on; default: webhook.listen of the configuration")
def serve_command(config_path: str, workers: int | None, listen: str | None) -> NoReturn:
    """Run the webhook under gunicorn (replaces this process)."""
    from .auth import Authenticator

    config = load_config(config_path)  # ConfigError → one line, exit 2
    Authenticator.from_config(config.webhook, os.environ)  # no secret → refuse now, not later
    bind = _listen(listen) if listen else config.webhook.listen
    if importlib.util.find_spec("gunicorn") is None:
        raise Failure("gunicorn is not installed in this Python environment "
                      f"({sys.executable}); pip install gunicorn")
    package = Path(__file__).resolve().parent
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", str(package / "gunicorn.conf.py"),
        # the webhook package importable in the workers even when not installed
        "--pythonpath", str(package.parent),
        "--bind", bind,
    ]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv.append("webhook:create_app()")
    env = {**os.environ, "PRESHIFT_CONFIG": str(Path(config_path).resolve())}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


# --- the API client -----------------------------------------------------------------------


class Api:
    """A small client of the webhook's HTTP API that turns every problem into one line."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.timeout = timeout

    def call(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Any:
        import requests

        try:
            resp = self.session.request(method, self.url + path, params=params,
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise Failure(f"cannot reach the webhook at {self.url}: {type(exc).__name__}; "
                          "is it running (preshift webhook serve)? is --url right?",
                          retriable=True) from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        message = body.get("error", "") if isinstance(body, dict) else ""
        if isinstance(body, dict) and body.get("problems"):
            message += ": " + "; ".join(body["problems"])
        if resp.status_code == 401:
            raise Failure("the webhook refused the credentials: set $PRESHIFT_WEBHOOK_TOKEN or "
                          "--token-file (or basic_user with $PRESHIFT_WEBHOOK_PASSWORD)")
        if resp.status_code in (400, 404):
            raise InputError(message or f"HTTP {resp.status_code}")
        if resp.status_code == 409:
            raise Failure(message or "the request makes no sense in the migration's phase")
        if resp.status_code >= 300:
            raise Failure(f"{method} {path}: HTTP {resp.status_code} {message}".rstrip(),
                          retriable=resp.status_code >= 500)
        return body


def _auth_headers(config: Config | None, token_file: str | None) -> dict[str, str]:
    token = read_secret(os.environ, TOKEN_ENV, Path(token_file) if token_file else None)
    if token:
        return {"Authorization": f"Bearer {token}"}
    if config is not None and config.webhook.basic_user:
        password = read_secret(os.environ, PASSWORD_ENV, config.webhook.basic_password_file)
        if password:
            pair = f"{config.webhook.basic_user}:{password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def _base_url(url: str | None, config: Config | None) -> str:
    if url:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"--url {url}: use the webhook's http:// URL, "
                             "e.g. http://127.0.0.1:9733")
        return url
    if config is None:
        raise InputError("where is the webhook? give --url URL, or --config PATH "
                         "(or $PRESHIFT_CONFIG) to use its webhook.listen")
    host, _, port = config.webhook.listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"  # listening everywhere: the local address reaches it
    return f"http://{host}:{port}"


@click.group("migrations")
@click.option("--url", default=None, help="the webhook's URL [default: from webhook.listen]")
@click.option("--config", "config_path", default=None, envvar="PRESHIFT_CONFIG",
              type=click.Path(dir_okay=False), help="configuration file (or $PRESHIFT_CONFIG)")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False),
              help="file with the bearer token [default: $PRESHIFT_WEBHOOK_TOKEN]")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 300),
              help="seconds per HTTP request")
@click.pass_context
def migrations_group(ctx: click.Context, url: str | None, config_path: str | None,
                     token_file: str | None, timeout: float) -> None:
    """List, inspect, approve, abort, roll back and watch migrations (via the webhook)."""
    config = load_config(config_path) if config_path else None
    ctx.obj = Api(_base_url(url, config), _auth_headers(config, token_file), timeout)


# --- rendering ----------------------------------------------------------------------------


def _clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _route(m: Mapping[str, Any]) -> str:
    return f"{m.get('source_node') or '-'} -> {m.get('target_node') or '-'}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _step_line(s: Mapping[str, Any]) -> str:
    detail = f"  {s['detail']}" if s.get("detail") else ""
    return (f"{time.strftime('%H:%M:%S', time.localtime(s['at']))}  {s['phase']:<17} "
            f"{s['action']:<22} {s.get('outcome') or '(in progress)'}{detail}")


def _show(m: Mapping[str, Any]) -> str:
    lines = [
        f"migration {m['id']}: {m['action']} of {m['component']} ({_route(m)})",
        f"  phase      {m['phase']} since {_clock(m.get('phase_since'))}",
        f"  weight     {m['weight']}% (step {m['step']}), failed checks {m['failed_checks']}",
        f"  canary     {m['canary_name']}" + (f" in backend {m['backend']}"
                                               if m.get("backend") else ""),
        f"  approval   {m['approval']}" + (f", request {m['request']}" if m.get("request")
                                           else ""),
        f"  created    {_clock(m.get('created_at'))}, finished {_clock(m.get('finished_at'))}",
    ]
    if m.get("dry_run"):
        lines.append("  dry run    yes (nothing changes)")
    if m.get("reason"):
        lines.append(f"  reason     {m['reason']}")
    if m.get("error"):
        lines.append(f"  error      {m['error']}")
    steps = m.get("steps") or []
    lines.append(f"  steps ({len(steps)}):")
    lines += [f"    {_step_line(s)}" for s in steps]
    return "\n".join(lines)


# --- commands -----------------------------------------------------------------------------


@migrations_group.command("list")
@click.option("--active/--all", default=False, help="only migrations not finished yet")
@click.option("--component", default=None, help="only this component's")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_obj
def list_command(api: Api, active: bool, component: str | None, limit: int,
                 as_json: bool) -> None:
    """Migrations, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if active:
        params["active"] = "true"
    if component:
        params["component"] = component
    rows = api.call("GET", "/api/v1/migrations", params)["migrations"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no migrations" + (" active" if active else ""))
        return
    table = [["ID", "COMPONENT", "ACTION", "PHASE", "WEIGHT", "ROUTE", "CREATED", "NOTE"]]
    for m in rows:
        note = m.get("error") or (f"request {m['request']}" if m.get("request") else "")
        if m.get("approval") == "pending":
            note = note or "awaiting approval"
        table.append([m["id"], m["component"], m["action"], m["phase"], f"{m['weight']}%",
                      _route(m), _clock(m.get("created_at")), note])
    click.echo(_table(table))


@migrations_group.command("show")
@click.argument("migration_id")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_obj
def show_command(api: Api, migration_id: str, as_json: bool) -> None:
    """One migration with every step."""
    m = api.call("GET", f"/api/v1/migrations/{_checked_id(migration_id)}")
    click.echo(json.dumps(m, indent=2) if as_json else _show(m))


def _checked_id(value: str) -> str:
    if not value or not all(c.isalnum() or c in "_-" for c in value) or len(value) > 64:
        raise InputError(f"{value!r} is not a migration id (letters, digits, '_', '-'); "
                         "`preshift migrations list` shows them")
    return value


def _request(api: Api, migration_id: str, what: str) -> None:
    answer = api.call("POST", f"/api/v1/migrations/{_checked_id(migration_id)}/{what}")
    m = answer["migration"]
    click.echo(f"{migration_id}: {answer['message']} (phase {m['phase']}); "
               f"follow it with: preshift migrations watch {migration_id}")


@migrations_group.command("approve")
@click.argument("migration_id")
@click.pass_obj
def approve_command(api: Api, migration_id: str) -> None:
    """Let a migration awaiting approval move traffic."""
    _request(api, migration_id, "approve")


@migrations_group.command("abort")
@click.argument("migration_id")
@click.pass_obj
def abort_command(api: Api, migration_id: str) -> None:
    """Stop a migration: cancelled if nothing started, else rolled back."""
    _request(api, migration_id, "abort")


@migrations_group.command("rollback")
@click.argument("migration_id")
@click.pass_obj
def rollback_command(api: Api, migration_id: str) -> None:
    """Put the original back (also from standby)."""
    _request(api, migration_id, "rollback")


@migrations_group.command("watch")
@click.argument("migration_id")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.01, 60),
              help="seconds between polls")
@click.option("--unreachable-for", default=30.0, show_default=True,
              type=click.FloatRange(0, 3600),
              help="give up after the webhook has been unreachable this long")
@click.pass_obj
@click.pass_context
def watch_command(ctx: click.Context, api: Api, migration_id: str, interval: float,
                  unreachable_for: float) -> None:
    """Follow a migration live (phase, weight, steps) until it ends; exit 0 when it
    succeeded (or was a dry run), 1 otherwise."""
    path = f"/api/v1/migrations/{_checked_id(migration_id)}"
    m = api.call("GET", path)
    click.echo(f"migration {m['id']}: {m['action']} of {m['component']} ({_route(m)})")
    seen: set[int] = set()
    last: tuple[str, int] | None = None
    down_since: float | None = None
    while True:
        for s in m.get("steps") or []:
            key = s["id"] if s.get("outcome") is not None else -s["id"]
            if key not in seen:  # a step shows when begun and again when it has an outcome
                seen.add(key)
                click.echo(f"  {_step_line(s)}")
        state = (m["phase"], m["weight"])
        if state != last:
            click.echo(f"  -> phase {m['phase']}, weight {m['weight']}%"
                       + (f", error: {m['error']}" if m.get("error") else ""))
            last = state
        if m["phase"] in TERMINAL_PHASES:
            ok = m["phase"] in SUCCESS_PHASES
            click.echo(f"migration {m['id']} {m['phase']}" + ("" if ok else " (not a success)"))
            ctx.exit(0 if ok else 1)
        time.sleep(interval)
        try:
            m = api.call("GET", path)
            down_since = None
        except Failure as exc:  # a restarting webhook: keep trying for a while
            now = time.monotonic()
            down_since = down_since or now
            if not exc.retriable or now - down_since > unreachable_for:
                raise
            click.echo(f"  ({exc.format_message()}; retrying)", err=True)
