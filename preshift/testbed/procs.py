"""External commands and the daemons the testbed starts: spawn, check ownership, stop.

A PID is signalled only if /proc/PID/cmdline still contains the marker recorded when we
started it (a config path under our own directories), so a recycled PID is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import TestbedError

T = TypeVar("T")
# /usr/local is left out on purpose: it may hold other docker/runc builds.
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, no shell); on failure raise TestbedError with its stderr."""
    try:
        res = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise TestbedError(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"command timed out after {timeout:g} s: {' '.join(argv)}") from None
    if check and res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise TestbedError(f"{' '.join(argv)} failed: {msg[-1] if msg else res.returncode}")
    return res


def parallel(fn: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """fn over items, one thread each (per-node work is I/O bound: sockets, processes)."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


# Daemons started by this process, kept so they can be reaped (no zombies) and so that
# dropping a Testbed without down() does not warn about still-running subprocesses.
_CHILDREN: dict[int, subprocess.Popen] = {}


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start a daemon in its own session (setsid), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env or DAEMON_ENV), start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise TestbedError(f"cannot start {argv[0]}: {exc.strerror}") from None
    _CHILDREN[popen.pid] = popen
    return popen


def in_node(netns_path: Path, hostname: str | None, argv: Sequence[str]) -> list[str]:
    """Wrap `argv` to run in a node's netns and, given a hostname, a fresh UTS namespace.

    nsenter --net keeps the root mount namespace (`ip netns exec` remounts /sys and dockerd
    then finds no cgroups). Neither nsenter nor unshare forks here, and the shell execs, so
    the PID Popen sees is the daemon's own PID.
    """
    wrapped = ["nsenter", f"--net={netns_path}"]
    if hostname is None:
        return [*wrapped, "--", *argv]
    # The hostname and argv are positional parameters of the script, never parsed by the shell.
    script = 'hostname "$1" && shift && exec "$@"'
    return [*wrapped, "unshare", "--uts", "--", "/bin/sh", "-c", script, "node", hostname, *argv]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def reap(pid: int) -> None:
    """Collect `pid` if it is our child, so it does not linger as a zombie."""
    popen = _CHILDREN.get(pid)
    if popen is not None:
        if popen.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True)
class Proc:
    """A daemon we started: its PID and the marker its cmdline must contain."""

    role: str
    pid: int
    marker: str

    def owned(self) -> bool:
        """Still alive and still ours (the PID was not recycled for another program)."""
        for _ in range(20):
            if not alive(self.pid):
                return False
            argv = cmdline(self.pid)
            if argv:
                return self.marker in argv
            time.sleep(0.01)  # cmdline reads empty for a moment while the process execs
        return False


def stop(procs: Iterable[Proc], timeout: float = 20.0) -> list[str]:
    """SIGTERM every owned process at once, wait, SIGKILL what is left. Returns the SIGKILLed."""
    procs = list(procs)
    for p in procs:
        reap(p.pid)  # already dead (e.g. SIGKILLed) children must not stay zombies
    todo = [p for p in procs if p.owned()]
    for p in todo:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    killed = []
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if sig == signal.SIGKILL:
            for p in todo:
                if p.owned():
                    killed.append(p.role)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for p in todo:
                reap(p.pid)
            if not any(alive(p.pid) for p in todo):
                return killed
            time.sleep(0.05)
    left = [p.role for p in todo if alive(p.pid)]
    if left:
        raise TestbedError(f"processes did not stop even after SIGKILL: {', '.join(left)}")
    return killed


class State:
    """The run dir's state file: spec, daemons started (with markers), shared dirs created."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # teardown threads may record procs at the same time
        self.data: dict = {"procs": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
                self.data.setdefault("procs", {})
            except (OSError, ValueError):
                self.data = {"procs": {}, "corrupt": True}

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
            os.replace(tmp, self.path)  # atomic: a killed run never leaves half a file

    def add_proc(self, proc: Proc) -> None:
        self.data["procs"][proc.role] = {"pid": proc.pid, "marker": proc.marker}
        self.save()

    def drop_proc(self, role: str) -> None:
        if self.data["procs"].pop(role, None) is not None:
            self.save()

    def proc(self, role: str) -> Proc | None:
        entry = self.data["procs"].get(role)
        if not entry:
            return None
        return Proc(role, int(entry["pid"]), str(entry["marker"]))

    def procs(self) -> list[Proc]:
        return [p for role in self.data["procs"] if (p := self.proc(role))]
