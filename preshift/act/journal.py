"""The durable journal: SQLite in WAL mode, the only module that imports sqlite3.

Three tables: `notifications` (every accepted alert, deduplicated on status + fingerprint +
startsAt), `migrations` (one row per migration: its phase and counters, like Flagger's
CanaryStatus) and `steps` (every step, written as an intent BEFORE it is taken and completed
with its outcome after). Writes use BEGIN IMMEDIATE and synchronous=FULL, so a row that a
caller saw committed survives a crash or power loss. Safe with several processes (gunicorn
workers): SQLite serialises writers; only one executor acts at a time (see `leader.py`).

One `Journal` object per thread (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ActionError, InputError
from .phases import TERMINAL, Phase, allowed
from .records import (
    APPROVALS,
    REQUESTS,
    Migration,
    Notification,
    Step,
    new_migration_id,
    request_problem,
)

__all__ = [
    "APPROVALS", "REQUESTS", "Journal", "Migration", "Notification", "Step", "as_json",
    "new_migration_id", "request_problem",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    status TEXT NOT NULL,
    alertname TEXT NOT NULL,
    component TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    labels TEXT NOT NULL,
    group_key TEXT NOT NULL,
    handled_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS notifications_unhandled ON notifications(id) WHERE handled_at IS NULL;
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications(fingerprint, starts_at);
CREATE TABLE IF NOT EXISTS migrations (
    id TEXT PRIMARY KEY,
    alert_key TEXT,
    component TEXT NOT NULL,
    action TEXT NOT NULL,
    source_node TEXT,
    source_name TEXT,
    target_node TEXT NOT NULL,
    canary_name TEXT NOT NULL,
    backend TEXT,
    phase TEXT NOT NULL,
    weight INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    failed_checks INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    dry_run INTEGER NOT NULL DEFAULT 0,
    approval TEXT NOT NULL DEFAULT 'none',
    request TEXT,
    reason TEXT NOT NULL DEFAULT '',
    priority REAL NOT NULL DEFAULT 0,
    data TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    phase_since REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS migrations_active ON migrations(phase) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS migrations_component ON migrations(component, created_at);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    migration_id TEXT NOT NULL REFERENCES migrations(id),
    at REAL NOT NULL,
    phase TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    outcome TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS steps_migration ON steps(migration_id, id);
"""

_MIGRATION_COLUMNS = tuple(f.name for f in fields(Migration))


def _row_to_migration(row: sqlite3.Row) -> Migration:
    d = dict(row)
    d["phase"] = Phase(d["phase"])
    d["dry_run"] = bool(d["dry_run"])
    d["data"] = json.loads(d["data"])
    return Migration(**d)


def _row_to_notification(row: sqlite3.Row) -> Notification:
    d = dict(row)
    d.pop("dedupe_key")
    d["labels"] = json.loads(d["labels"])
    return Notification(**d)


class Journal:
    """Open (and create) the journal at `path`. `clock` is injectable for tests.

    Writers take turns on an exclusive `flock` of `<journal>.write.lock` before BEGIN
    IMMEDIATE: SQLite serialises writers by itself, but a writer that finds the database locked
    polls, sleeping 1, 2, 5 … 100 ms between tries (acks took 100+ ms at the 99th percentile
    with two gunicorn workers and the executor writing); the kernel wakes a process blocked on
    an flock the moment it is released. Readers take no turn (WAL readers never block).
    """

    def __init__(self, path: str | Path, *, clock: Any = time.time, timeout: float = 10.0):
        self.path = Path(path)
        self.clock = clock
        self._turn = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._turn = os.open(f"{self.path}.write.lock",
                                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with self._my_turn():
                self._db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except (sqlite3.Error, OSError) as exc:
            raise ActionError(f"journal {self.path}: cannot open it: {exc}") from None

    def close(self) -> None:
        self._db.close()
        if self._turn >= 0:
            os.close(self._turn)
            self._turn = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front, so two
        processes never both read-then-write the same rows."""
        with self._my_turn():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _my_turn(self) -> Iterator[None]:
        fcntl.flock(self._turn, fcntl.LOCK_EX)  # blocks without holding the GIL
        try:
            yield
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    # notifications -------------------------------------------------------------------

    def record_notifications(self, items: Sequence[Notification]) -> list[bool]:
        """Journal alerts; for each, True when new, False when a duplicate (same status,
        fingerprint and startsAt). One transaction for the whole notification."""
        now = self.clock()
        out = []
        with self._write() as db:
            for n in items:
                cur = db.execute(
                    "INSERT OR IGNORE INTO notifications (dedupe_key, received_at, status, "
                    "alertname, component, fingerprint, starts_at, labels, group_key) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    (n.dedupe_key, now, n.status, n.alertname, n.component, n.fingerprint,
                     n.starts_at, json.dumps(dict(n.labels), sort_keys=True), n.group_key),
                )
                out.append(cur.rowcount == 1)
        return out

    def unhandled_notifications(self, limit: int = 100) -> list[Notification]:
        rows = self._db.execute(
            "SELECT * FROM notifications WHERE handled_at IS NULL ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_notification(r) for r in rows]

    def mark_handled(self, notification_id: int, outcome: str) -> None:
        with self._write() as db:
            db.execute(
                # appended: a reopened alert keeps the history of what each handling did
                "UPDATE notifications SET handled_at=?, "
                "outcome=COALESCE(outcome || ' | ', '') || ? WHERE id=?",
                (self.clock(), outcome, notification_id),
            )

    def reopen_firing(self, alert_key: str, outcome: str) -> bool:
        """Hand a still-firing alert back to intake (handled_at cleared) unless it resolved;
        True when it was reopened."""
        fingerprint, _, starts_at = alert_key.partition("|")
        with self._write() as db:
            cur = db.execute(
                "UPDATE notifications SET handled_at=NULL, "
                "outcome=COALESCE(outcome || ' | ', '') || ? "
                "WHERE status='firing' AND fingerprint=? AND starts_at=? AND NOT EXISTS ("
                "SELECT 1 FROM notifications r WHERE r.status='resolved' "
                "AND r.fingerprint=? AND r.starts_at=?)",
                (outcome, fingerprint, starts_at, fingerprint, starts_at),
            )
            return cur.rowcount > 0

    def reopen_refused(self, migration_id: str, outcome: str) -> int:
        """Hand back to intake the still-firing alerts that were refused because migration
        `migration_id` was busy with their component (safety.admit's "already has migration
        <id> (" outcome); returns how many."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE notifications SET handled_at=NULL, "
                "outcome=COALESCE(outcome || ' | ', '') || ? "
                "WHERE status='firing' AND handled_at IS NOT NULL AND outcome LIKE ? "
                "AND NOT EXISTS (SELECT 1 FROM notifications r WHERE r.status='resolved' "
                "AND r.fingerprint=notifications.fingerprint "
                "AND r.starts_at=notifications.starts_at)",
                (outcome, f"%already has migration {migration_id} (%"),
            )
            return cur.rowcount

    def resolved(self, alert_key: str) -> bool:
        """True when a resolved notification of this alert instance is journaled."""
        fingerprint, _, starts_at = alert_key.partition("|")
        return self._db.execute(
            "SELECT 1 FROM notifications WHERE status='resolved' AND fingerprint=? "
            "AND starts_at=? LIMIT 1", (fingerprint, starts_at)).fetchone() is not None

    def notifications(self, limit: int = 100) -> list[Notification]:
        rows = self._db.execute(
            "SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_notification(r) for r in rows]

    def count_unhandled(self) -> int:
        return self._db.execute(
            "SELECT count(*) FROM notifications WHERE handled_at IS NULL"
        ).fetchone()[0]

    # migrations ----------------------------------------------------------------------

    def create_migration(self, m: Migration, *, detail: str = "") -> Migration:
        """Insert a new migration (and its first step line)."""
        now = self.clock()
        m = replace(m, created_at=now, updated_at=now, phase_since=now,
                    finished_at=now if m.terminal else None)
        row = m.to_dict()
        with self._write() as db:
            db.execute(
                f"INSERT INTO migrations ({','.join(_MIGRATION_COLUMNS)}) "
                f"VALUES ({','.join('?' * len(_MIGRATION_COLUMNS))})",
                [json.dumps(row[c]) if c == "data" else row[c] for c in _MIGRATION_COLUMNS],
            )
            db.execute(
                "INSERT INTO steps (migration_id, at, phase, action, detail, outcome, done_at) "
                "VALUES (?,?,?,?,?,?,?)", (m.id, now, str(m.phase), "plan", detail, "ok", now),
            )
        return m

    def get(self, migration_id: str) -> Migration | None:
        row = self._db.execute("SELECT * FROM migrations WHERE id=?", (migration_id,)).fetchone()
        return _row_to_migration(row) if row else None

    def migrations(
        self,
        *,
        active: bool | None = None,
        component: str | None = None,
        alert_key: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Migration]:
        """Newest first. active=True: not finished; False: finished only. alert_key: caused by
        that alert. since: unfinished, or finished at or after that time (what the safety
        limits look at: cooldowns and moves per hour)."""
        where: list[str] = []
        args: list[Any] = []
        if active is True:
            where.append("finished_at IS NULL")
        elif active is False:
            where.append("finished_at IS NOT NULL")
        if component is not None:
            where.append("component=?")
            args.append(component)
        if alert_key is not None:
            where.append("alert_key=?")
            args.append(alert_key)
        if since is not None:
            where.append("(finished_at IS NULL OR finished_at>=?)")
            args.append(since)
        sql = "SELECT * FROM migrations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_row_to_migration(r) for r in rows]

    def update(self, old: Migration, **changes: Any) -> Migration:
        """Write `changes` if the row still has `old`'s phase and updated_at (compare-and-set:
        a concurrent writer makes this raise ActionError(retriable=True)). A phase change is
        checked against the transition table."""
        unknown = set(changes) - set(_MIGRATION_COLUMNS)
        if unknown:
            raise ValueError(f"unknown migration fields {sorted(unknown)}")
        new_phase = Phase(changes.get("phase", old.phase))
        if not allowed(old.phase, new_phase):
            raise ActionError(f"migration {old.id}: {old.phase} → {new_phase} is not allowed")
        now = _after(self.clock(), old.updated_at)
        changes["updated_at"] = now
        if new_phase != old.phase:
            changes["phase_since"] = now
            if new_phase in TERMINAL:
                changes["finished_at"] = now
        new = replace(old, **changes)
        row = new.to_dict()
        cols = sorted(changes)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE migrations SET {', '.join(f'{c}=?' for c in cols)} "
                "WHERE id=? AND phase=? AND updated_at=? AND request IS ?",
                [json.dumps(row[c]) if c == "data" else row[c] for c in cols]
                + [old.id, str(old.phase), old.updated_at, old.request],
            )
            if cur.rowcount != 1:
                raise ActionError(f"migration {old.id} changed underneath; re-read it",
                                  retriable=True)
        return new

    def request(self, migration_id: str, what: str) -> Migration:
        """Record an operator's request (approve, abort, rollback); the executor acts on it at
        its next tick. Raises InputError when the request makes no sense for the phase."""
        if what not in REQUESTS:
            raise InputError(f"unknown request {what!r}; use one of {', '.join(REQUESTS)}")
        with self._write() as db:
            row = db.execute("SELECT * FROM migrations WHERE id=?", (migration_id,)).fetchone()
            if row is None:
                raise LookupError(migration_id)
            m = _row_to_migration(row)
            problem = request_problem(m, what)
            if problem:
                raise InputError(f"migration {m.id} is {m.phase}: {problem}")
            now = _after(self.clock(), m.updated_at)
            db.execute("UPDATE migrations SET request=?, updated_at=? WHERE id=?",
                       (what, now, m.id))
            db.execute(
                "INSERT INTO steps (migration_id, at, phase, action, detail, outcome, done_at) "
                "VALUES (?,?,?,?,?,?,?)", (m.id, now, str(m.phase), f"request {what}", "", "ok",
                                           now),
            )
        return replace(m, request=what, updated_at=now)

    def counts_by_phase(self) -> dict[str, int]:
        rows = self._db.execute("SELECT phase, count(*) FROM migrations GROUP BY phase")
        return {r[0]: r[1] for r in rows}

    # steps ---------------------------------------------------------------------------

    def begin_step(self, m: Migration, action: str, detail: str = "") -> int:
        """Write the intent of a step before taking it; returns its id for `end_step`."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO steps (migration_id, at, phase, action, detail) VALUES (?,?,?,?,?)",
                (m.id, self.clock(), str(m.phase), action, detail),
            )
            return int(cur.lastrowid or 0)

    def end_step(self, step_id: int, outcome: str) -> None:
        with self._write() as db:
            db.execute("UPDATE steps SET outcome=?, done_at=? WHERE id=?",
                       (outcome, self.clock(), step_id))

    def steps(self, migration_id: str) -> list[Step]:
        rows = self._db.execute(
            "SELECT * FROM steps WHERE migration_id=? ORDER BY id", (migration_id,)
        ).fetchall()
        return [Step(**dict(r)) for r in rows]

    def open_steps(self, migration_id: str) -> list[Step]:
        """Intents without an outcome: steps a crash interrupted."""
        return [s for s in self.steps(migration_id) if s.outcome is None]


def _after(now: float, previous: float) -> float:
    """A row's updated_at only grows, even when the clock stands still or steps back: the
    compare-and-set in `update` relies on every write changing it."""
    return now if now > previous else previous + 1e-6


def as_json(m: Migration, steps: Sequence[Step] = ()) -> dict[str, Any]:
    """The API's view of a migration."""
    d = m.to_dict()
    if steps:
        d["steps"] = [asdict(s) for s in steps]
    return d
