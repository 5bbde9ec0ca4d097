"""The webhook under REAL gunicorn (2 workers) on 127.0.0.1:19741, started the way an operator
does (`preshift webhook serve`), with the trivial executor (webhook.testing) that only marks
notifications handled. Needs neither root nor the testbed. Only the processes this module
starts are ever signalled, by PID.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from preshift.act.journal import Journal
from preshift.act.leader import LeaderLock

from .stack import Process, preshift_argv, wait_for

HOST, PORT = "127.0.0.1", 19741
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Webhook:
    proc: Process
    journal: Path
    sent: int = 0  # alerts sent in valid, authenticated notifications
    seen_pids: set[int] = field(default_factory=set)

    @property
    def master(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid


def request(method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    """One request on a new connection (so gunicorn spreads them over its workers)."""
    conn = http.client.HTTPConnection(HOST, PORT, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
            else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read().decode()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, (json.loads(raw) if "json" in ctype else raw)
    finally:
        conn.close()


def notification(fingerprint: str, status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4", "groupKey": "{}:{alertname=\"PreshiftFootprintDiscrepancy\"}",
        "truncatedAlerts": 0, "status": status, "receiver": "preshift-webhook",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "PreshiftFootprintDiscrepancy", "component": "web",
                       "preshift_action": "migrate"},
            "annotations": {}, "startsAt": "2026-05-01T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint,
        }],
    }


def metrics_text() -> str:
    status, text = request("GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    return text


def leader_samples(text: str) -> dict[int, float]:
    return {int(pid): float(v) for pid, v in
            re.findall(r'^preshift_webhook_leader\{pid="(\d+)"\} (\S+)$', text, re.M)}


def lock_holder(journal: Path) -> int:
    return int(Path(f"{journal}.lock").read_text().strip())


def children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.add(int(d.name))
    return out


def handled_lines(journal: Path) -> list[tuple[int, int]]:
    path = Path(f"{journal}.handled")
    if not path.exists():
        return []
    return [(int(a), int(b)) for a, b in (ln.split() for ln in path.read_text().splitlines())]


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    d = tmp_path_factory.mktemp("webhook")
    journal = d / "journal.sqlite3"
    cfg = d / "preshift.yaml"
    cfg.write_text(
        "nodes: [{name: n1, url: 'unix:///nonexistent/n1.sock'}]\n"
        f"webhook: {{listen: '127.0.0.1:19749', journal: '{journal}', tick: 0.1s}}\n"
    )
    proc = Process(
        # --listen overrides webhook.listen: the CLI's override reaches gunicorn
        preshift_argv("webhook", "serve", "--config", str(cfg), "--workers", "2",
                      "--listen", f"{HOST}:{PORT}"),
        d / "webhook.log",
        env={"PRESHIFT_WEBHOOK_TOKEN": TOKEN,
             "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY": "webhook.testing:mark_handled_factory"},
    ).start()
    wh = Webhook(proc, journal)
    try:
        def up() -> bool:
            if not proc.running:
                raise AssertionError(f"webhook exited early:\n{proc.tail()}")
            # ready, and both workers have run their executor thread once
            return request("GET", "/-/ready")[0] == 200 and len(leader_samples(
                metrics_text())) == 2

        wait_for(up, 30, "gunicorn and both workers")
        wh.seen_pids = children(wh.master)
        yield wh
    finally:
        workers = children(wh.master)
        code = proc.stop()
        assert code == 0, proc.tail()
        assert not any(Path(f"/proc/{p}").exists() for p in workers), "a worker outlived gunicorn"


def test_serve_execs_gunicorn_with_two_workers(webhook: Webhook) -> None:
    cmdline = Path(f"/proc/{webhook.master}/cmdline").read_bytes().split(b"\0")
    assert b"gunicorn" in b" ".join(cmdline)  # same PID, now gunicorn: signals reach it
    assert len(children(webhook.master)) == 2


def test_unauthenticated_is_401_and_nothing_is_journaled(webhook: Webhook) -> None:
    status, body = request("POST", "/api/v1/alerts", notification("aa01"))
    assert status == 401 and "Authorization" in str(body)
    status, _ = request("POST", "/api/v1/alerts", notification("aa01"),
                        {"Authorization": "Bearer wrong"})
    assert status == 401
    with Journal(webhook.journal) as j:
        assert j.notifications() == []


def test_malformed_is_400_naming_the_field(webhook: Webhook) -> None:
    bad = notification("aa02")
    del bad["alerts"][0]["startsAt"]
    status, body = request("POST", "/api/v1/alerts", bad, AUTH)
    assert status == 400 and isinstance(body, dict)
    assert body["problems"] == ["alerts.0.startsAt: required field is missing"]
    status, _ = request("POST", "/api/v1/alerts", b"{oops", AUTH)
    assert status == 400


def test_ten_concurrent_copies_make_one_row_handled_once(webhook: Webhook) -> None:
    note = notification("c0ffee0000000010")
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: request("POST", "/api/v1/alerts", note, AUTH),
                                range(10)))
    webhook.sent += 10
    assert [s for s, _ in answers] == [202] * 10
    assert sum(b["accepted"] for _, b in answers) == 1  # type: ignore[index]
    assert sum(b["duplicates"] for _, b in answers) == 9  # type: ignore[index]
    with Journal(webhook.journal) as j:
        rows = [n for n in j.notifications() if n.fingerprint == "c0ffee0000000010"]
        assert len(rows) == 1
        row_id = rows[0].id
    wait_for(lambda: any(i == row_id for i, _ in handled_lines(webhook.journal)), 10,
             "the executor to handle it")
    time.sleep(0.5)  # several more ticks: it must not be handled again
    assert [i for i, _ in handled_lines(webhook.journal)].count(row_id) == 1
    with Journal(webhook.journal) as j:
        assert j.count_unhandled() == 0


def test_exactly_one_worker_holds_the_leader_lock(webhook: Webhook) -> None:
    samples = leader_samples(metrics_text())
    assert set(samples) == children(webhook.master)
    assert sorted(samples.values()) == [0.0, 1.0]
    leader = next(p for p, v in samples.items() if v == 1)
    assert lock_holder(webhook.journal) == leader
    assert not LeaderLock(webhook.journal).try_acquire()  # held: by that worker


def test_metrics_aggregate_across_workers(webhook: Webhook) -> None:
    for i in range(20):  # new connections: both workers take some
        status, _ = request("POST", "/api/v1/alerts", notification(f"bb{i:02x}"), AUTH)
        assert status == 202
    webhook.sent += 20
    metrics_dir = Path(f"{webhook.journal}.metrics")
    pids = {int(f.stem.rsplit("_", 1)[1]) for f in metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, pids
    for _ in range(6):  # whichever worker answers, the totals are the same
        text = metrics_text()
        total = sum(float(v) for v in re.findall(
            r'^preshift_webhook_notifications_received_total\{status="\w+"\} (\S+)$', text, re.M))
        assert total == webhook.sent
        assert re.search(r'^preshift_webhook_notifications_rejected_total\{reason="unauthorized"\}'
                         r" 2\.0$", text, re.M)


def test_kill_9_of_the_leader_hands_over(webhook: Webhook) -> None:
    old = lock_holder(webhook.journal)
    assert old in children(webhook.master)  # our own gunicorn's worker, nothing else
    os.kill(old, signal.SIGKILL)

    def new_leader() -> int | None:
        samples = leader_samples(metrics_text())
        leaders = [p for p, v in samples.items() if v == 1]
        return leaders[0] if len(leaders) == 1 and leaders[0] != old else None

    leader = wait_for(new_leader, 20, "another worker to take the lead")
    assert lock_holder(webhook.journal) == leader
    assert old not in leader_samples(metrics_text())  # its live gauge went with it
    wait_for(lambda: len(children(webhook.master)) == 2, 20, "gunicorn to replace the worker")
    # the new leader handles new notifications
    status, body = request("POST", "/api/v1/alerts", notification("dd01"), AUTH)
    assert status == 202 and body == {"accepted": 1, "duplicates": 0}
    webhook.sent += 1
    with Journal(webhook.journal) as j:
        row_id = next(n.id for n in j.notifications() if n.fingerprint == "dd01")
    wait_for(lambda: (row_id, leader) in handled_lines(webhook.journal), 10,
             "the new leader to handle it")
    # counts of the killed worker survive in the merged totals
    text = metrics_text()
    total = sum(float(v) for v in re.findall(
        r'^preshift_webhook_notifications_received_total\{status="\w+"\} (\S+)$', text, re.M))
    assert total == webhook.sent
