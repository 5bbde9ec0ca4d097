"""Helpers for end-to-end tests: real processes started by PID, PromQL polling.

Everything here talks only to 127.0.0.1 and to the testbed's own node addresses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.3) -> T:
    """Poll `fn` until it returns a truthy value; fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # the thing polled may not be up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def promql(prom_url: str, query: str) -> list[dict[str, Any]]:
    """Instant query → list of {"metric": {...}, "value": float}."""
    r = requests.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return [
        {"metric": s["metric"], "value": float(s["value"][1])} for s in body["data"]["result"]
    ]


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): s["value"] for s in result}


class Process:
    """A child process we started; stopped by its own PID only."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 *, own_group: bool = False) -> None:
        self.argv, self.log, self.env = argv, log, env
        self.own_group = own_group  # a new process group: kill_group() reaches its children
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})}, cwd=ROOT,
                start_new_session=self.own_group,
            )
        return self

    def kill_group(self) -> None:
        """SIGKILL the process group this process leads (only with own_group: a group we
        created, so nothing else is in it), then reap the leader."""
        assert self.own_group and self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def preshift_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "preshift.cli", *args]


class Exporter(Process):
    """`preshift exporter` as a real process, configured for a testbed."""

    def __init__(self, config_path: Path, listen: str, log: Path) -> None:
        super().__init__(
            preshift_argv("exporter", "--config", str(config_path), "--listen", listen), log
        )
        self.listen = listen
        self.url = f"http://{listen}"

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if not self.running:
                raise AssertionError(f"exporter exited early:\n{self.tail()}")
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

        wait_for(ready, timeout, "the exporter to be ready")

    def metrics(self) -> str:
        r = requests.get(f"{self.url}/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def footprint(self) -> dict[str, Any]:
        r = requests.get(f"{self.url}/api/v1/footprint", timeout=5)
        r.raise_for_status()
        return r.json()


class Webhook(Process):
    """`preshift webhook serve` (gunicorn) as a real process, in its own process group (so
    `kill_group()` is a kill -9 of master and workers at once); `token` is its bearer token,
    passed in $PRESHIFT_WEBHOOK_TOKEN unless the config reads it from a file (`token_env`
    False). `argv` replaces the command (e.g. to run it as another user)."""

    def __init__(self, config_path: Path, listen: str, log: Path, *, token: str | None = None,
                 token_env: bool = True, env: dict[str, str] | None = None,
                 argv: list[str] | None = None) -> None:
        env = dict(env or {})
        if token is not None and token_env:
            env["PRESHIFT_WEBHOOK_TOKEN"] = token
        super().__init__(argv or preshift_argv("webhook", "serve", "--config", str(config_path)),
                         log, env=env, own_group=True)
        self.url = f"http://{listen}"
        self.token = token

    def wait_ready(self, timeout: float = 30, interval: float = 0.3) -> Webhook:
        def ready() -> bool:
            if not self.running:
                raise AssertionError(f"webhook exited:\n{self.tail()}")
            return requests.get(f"{self.url}/-/ready", timeout=2).ok

        wait_for(ready, timeout, f"the webhook at {self.url} to be ready", interval)
        return self

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def api(self, path: str, **params: Any) -> Any:
        """GET `path` of its API with the bearer token: the JSON answer (raises on 4xx/5xx)."""
        r = requests.get(f"{self.url}{path}", params=params, timeout=5, headers=self.headers())
        r.raise_for_status()
        return r.json()

    def migrations(self, component: str) -> list[dict[str, Any]]:
        return self.api("/api/v1/migrations", component=component)["migrations"]


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
