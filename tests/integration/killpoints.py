"""A test-only executor factory for the real webhook: the real executor (make_executor with
the configured adapters) whose Runtime and Traffic adapters SIGKILL the whole webhook —
gunicorn's master and every worker, i.e. its process group — at a chosen migration phase.

    PRESHIFT_WEBHOOK_EXECUTOR_FACTORY=tests.integration.killpoints:factory
    PRESHIFT_KILL_SPEC=/path/to/kill.json

The spec file (written by the test, absent = the webhook runs clean):

    {"pgid": 1234,                                  the webhook's process group (its master)
     "kill": {"phase": "routing", "on": "effect"},
     "sabotage": {"phase": "shifting", "on": "effect"} or null}

`on` "effect": right AFTER the first side effect taken while the active migration's journal
row is in `phase` (the step's intent is journaled, its outcome never is: the next executor
must close it as interrupted and find out what the effect did); "call": right BEFORE the
first adapter call in `phase`, reads included (phases without side effects, and a standby
whose only effect comes at its end). The sabotage makes the canary fail its Docker
healthcheck from then on (it still answers HTTP), which sends the move back: rolling_back
from shifting, restoring from standby.

The spec is re-read at every adapter call, so one running webhook is armed per case and,
once the test removed the file, its replacement runs clean. Before the kill one JSON line
(migration, phase, call, pid) is appended to `<spec>.fired` and fsynced: the test's proof of
where it died. The kill happens only when this process's group is the spec's `pgid` (the
webhook was started in a session of its own), so it can never reach the test runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from preshift.act.factory import make_executor, make_query, make_runtime, make_traffic
from preshift.act.journal import Journal
from preshift.act.records import Migration
from preshift.config import Config

SPEC_ENV = "PRESHIFT_KILL_SPEC"
#: Adapter methods that change the world (Runtime and Traffic ports); the rest only read.
EFFECTS = frozenset({"clone", "start", "standby", "remove", "add_server", "set_weight",
                     "drain", "ready", "remove_server"})


def read_spec(path: Path) -> dict[str, Any] | None:
    """The armed spec, or None when there is none (or it is being written)."""
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def fired_path(spec_path: Path) -> Path:
    return Path(f"{spec_path}.fired")


def fired(spec_path: Path) -> list[dict[str, Any]]:
    """The lines written by the triggers (sabotage and kill), oldest first."""
    try:
        lines = fired_path(spec_path).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(x) for x in lines if x.strip()]


class Killpoints:
    """Decides, on each adapter call, whether a trigger of the spec fires."""

    def __init__(self, spec_path: Path, journal: Journal, sabotage: Callable[[Migration], None]
                 ) -> None:
        self.spec_path, self.journal, self.sabotage = spec_path, journal, sabotage
        self.done: set[str] = set()  # triggers that fired in this process

    def _active(self) -> Migration | None:
        ms = self.journal.migrations(active=True, limit=5)
        return ms[0] if ms else None

    def _due(self, spec: dict[str, Any], what: str, m: Migration, name: str,
             when: str) -> bool:
        t = spec.get(what)
        if not t or what in self.done or str(m.phase) != t["phase"]:
            return False
        if t.get("on", "effect") == "call":
            return when == "before"
        return when == "after" and name in EFFECTS

    def check(self, name: str, when: str) -> None:
        """Called before and after every adapter call `name`."""
        spec = read_spec(self.spec_path)
        if spec is None:
            return
        m = self._active()
        if m is None:  # intake's reads, before the migration exists
            return
        if self._due(spec, "sabotage", m, name, when):
            self.done.add("sabotage")
            self.sabotage(m)
            self._note("sabotage", m, name, when)
        if self._due(spec, "kill", m, name, when) and os.getpgrp() == spec.get("pgid"):
            self._note("kill", m, name, when)
            os.killpg(os.getpgrp(), signal.SIGKILL)

    def _note(self, what: str, m: Migration, name: str, when: str) -> None:
        line = json.dumps({"what": what, "migration": m.id, "phase": str(m.phase),
                           "call": f"{when} {name}", "pid": os.getpid(), "at": time.time()})
        fd = os.open(fired_path(self.spec_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)  # on disk before the SIGKILL
        finally:
            os.close(fd)


class Wrapped:
    """A Runtime or Traffic adapter whose public calls pass the killpoints."""

    def __init__(self, inner: Any, points: Killpoints) -> None:
        self._inner, self._points = inner, points

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._inner, name)
        if not callable(fn) or name.startswith("_") or name in ("client", "close"):
            return fn

        def call(*args: Any, **kw: Any) -> Any:
            self._points.check(name, "before")
            out = fn(*args, **kw)
            self._points.check(name, "after")
            return out

        return call


def factory(config: Config, journal: Journal, *, observer: Any = None) -> Any:
    """The webhook's executor factory (`PRESHIFT_WEBHOOK_EXECUTOR_FACTORY`)."""
    runtime = make_runtime(config)

    def sabotage(m: Migration) -> None:
        """The canary fails its healthcheck from now on (idempotent: it may be gone). Waits
        (≤ 5 s, blocking this tick) until Docker reports it unhealthy, so this very tick's
        observation sees it: the way back then does not race the standby_ttl or the next
        analysis on a loaded machine."""
        with contextlib.suppress(Exception):
            c = runtime.client(m.target_node).containers.get(m.canary_name)  # type: ignore[attr-defined]
            c.exec_run(["rm", "-f", "/tmp/ok"])
            end = time.monotonic() + 5
            while time.monotonic() < end:
                c.reload()
                if c.attrs["State"].get("Health", {}).get("Status") == "unhealthy":
                    return
                time.sleep(0.05)

    points = Killpoints(Path(os.environ[SPEC_ENV]), journal, sabotage)
    return make_executor(config, journal, runtime=Wrapped(runtime, points),  # type: ignore[arg-type]
                         traffic=Wrapped(make_traffic(config), points),  # type: ignore[arg-type]
                         observer=observer, query=make_query(config))
