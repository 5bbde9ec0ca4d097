"""The webhook runs as the image's unprivileged user: `preshift webhook serve` (gunicorn, 2
workers as shipped) started as UID/GID 10001 (compose/Dockerfile's `preshift` user) with no
supplementary groups, its config, token file and journal directory owned by that user. It
becomes ready, takes an authenticated notification, journals it and answers the control API;
every one of its processes runs as 10001. The image itself cannot be built on this machine (its
base image needs a registry): this shows the code needs no root. Only 127.0.0.1:20510.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .stack import ROOT, Webhook, wait_for

pytestmark = pytest.mark.integration

UID = GID = 10001  # compose/Dockerfile: ARG PRESHIFT_UID=10001
LISTEN = "127.0.0.1:20510"


def _ids(pid: int) -> tuple[set[int], set[int]]:
    """(real/effective/saved/fs UIDs, GIDs) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ({int(x) for x in fields["Uid"].split()}, {int(x) for x in fields["Gid"].split()})


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _reachable_by_others(path: Path) -> bool:
    """Every directory above `path` lets other users through (o+x)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def _interpreter() -> tuple[str, dict[str, str]]:
    """A Python the unprivileged user can exec, with this environment's packages. The
    project's .venv may link to an interpreter under a root-only home (pyenv in /root on
    this machine); the CLI execs gunicorn with sys.executable, which that user could not.
    Then the system's Python of the same minor version runs the .venv's site-packages (an
    image has its interpreter in /usr/local, reachable)."""
    own = Path(os.path.realpath(sys.executable))
    if _reachable_by_others(own):
        return sys.executable, {}
    system = "/usr/bin/python3"
    minor = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert minor == str(sys.version_info[:2]), (
        f"{own} is not reachable by UID {UID} and {system} is Python {minor}, not "
        f"{sys.version_info[:2]}: install python3 of the same minor version, or build the "
        "venv from a Python outside /root")
    return system, {"PYTHONPATH": f"{sysconfig.get_paths()['purelib']}:{ROOT}"}


@pytest.fixture
def home() -> Iterator[Path]:
    # pytest's tmp_path lives under a root-only directory: the user must reach this one
    d = Path(tempfile.mkdtemp(prefix="preshift-nonroot-"))
    try:
        os.chown(d, UID, GID)
        d.chmod(0o700)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_webhook_serves_as_an_unprivileged_user(home: Path) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    (home / "token").write_text(token + "\n")
    config = home / "preshift.yaml"
    config.write_text("\n".join([
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]",
        "webhook:",
        f"  listen: {LISTEN}",
        f"  journal: {home / 'journal.sqlite3'}",
        f"  token_file: {home / 'token'}",
        "  exporter_url: http://127.0.0.1:20519",  # nothing listens: intake retries later
    ]) + "\n")
    for path in (home / "token", config):
        os.chown(path, UID, GID)
        path.chmod(0o600)
    log = home / "webhook.log"
    log.touch()
    os.chown(log, UID, GID)
    python, env = _interpreter()
    argv = ["setpriv", f"--reuid={UID}", f"--regid={GID}", "--clear-groups",
            python, "-m", "preshift.cli", "webhook", "serve", "--config", str(config)]
    proc = Webhook(config, LISTEN, log, env=env, argv=argv)
    proc.start()
    url = proc.url
    try:
        proc.wait_ready()
        bearer = {"Authorization": f"Bearer {token}"}
        note = {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
                "receiver": "r", "groupLabels": {}, "commonLabels": {},
                "commonAnnotations": {}, "externalURL": "http://am:9093", "alerts": [{
                    "status": "firing", "labels": {"alertname": "A", "component": "web"},
                    "annotations": {}, "startsAt": "2026-11-28T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                    "fingerprint": "abc123"}]}
        r = requests.post(f"{url}/api/v1/alerts", json=note, headers=bearer, timeout=10)
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
        assert requests.get(f"{url}/api/v1/migrations", headers=bearer, timeout=10).ok
        assert requests.get(f"{url}/metrics", timeout=10).ok

        assert proc.proc is not None
        # `setpriv` execs the CLI, which execs gunicorn: the same PID is the master
        master = proc.proc.pid
        workers = wait_for(lambda: _children(master) if len(_children(master)) >= 2 else None,
                           20, "gunicorn's 2 workers")
        for pid in (master, *workers):
            assert _ids(pid) == ({UID}, {GID}), (pid, _ids(pid))
        assert os.stat(home / "journal.sqlite3").st_uid == UID
        with sqlite3.connect(home / "journal.sqlite3") as db:
            rows = db.execute("SELECT fingerprint FROM notifications").fetchall()
        assert rows == [("abc123",)]
    finally:
        proc.stop()
