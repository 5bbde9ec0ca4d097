"""The journal as a Flask resource (habit 4): `JournalExt.init_app(app)`, `get_journal()`.

sqlite3 connections belong to one thread, and opening a `Journal` runs its schema script,
so each request thread keeps one open `Journal` for its lifetime (gunicorn's threads live as
long as the worker) instead of opening one per request. The executor thread opens its own.

Every write transaction first waits for its turn on `<journal>.write.lock` (see
`preshift.act.journal.Journal`; one descriptor per Journal, so the lock excludes threads and
processes alike): SQLite's own busy handler polls with sleeps of up to 100 ms
(docs/benchmarks.md, "The webhook's intake").

Failures of the journal (locked longer than the busy timeout, disk full, I/O error) become
`JournalUnavailable`, which the blueprints answer with 503: Alertmanager retries a 5xx, and
that is what we want when the write did not happen.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask, current_app

from preshift.act.journal import Journal
from preshift.errors import ActionError

EXTENSION = "preshift.journal"


class JournalUnavailable(Exception):
    """The journal could not be opened, read or written; retrying later may help."""


@contextmanager
def journal_errors(what: str) -> Iterator[None]:
    """Translate the journal's failures into JournalUnavailable (the message names `what`)."""
    try:
        yield
    except (sqlite3.Error, OSError, ActionError) as exc:
        raise JournalUnavailable(f"journal unavailable while {what}: {exc}") from None


class JournalExt:
    """Holds the journal path and one `Journal` per thread; no app state of its own."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        # Shorter than the journal's default: a request should get its 503 (and Alertmanager
        # retry later) well before gunicorn's worker timeout kills it.
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Journal] = []

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self
        app.cli.add_command(journal_check_command)

    def get(self) -> Journal:
        """This thread's journal, opened on first use."""
        j = getattr(self._local, "journal", None)
        if j is None:
            with journal_errors("opening it"):
                j = Journal(self.path, timeout=self.timeout)
            self._local.journal = j
            with self._lock:
                self._open.append(j)
        return j

    def close_all(self) -> None:
        """Close every thread's journal (at worker exit)."""
        with self._lock:
            opened, self._open = self._open, []
        for j in opened:
            with contextlib.suppress(sqlite3.Error):  # best effort at exit
                j.close()


def get_journal() -> Journal:
    """The current request thread's journal."""
    ext: JournalExt = current_app.extensions[EXTENSION]
    return ext.get()


@click.command("journal-check")
def journal_check_command() -> None:
    """Open the journal and print its counts.

    `PRESHIFT_CONFIG=... flask --app 'webhook:create_app(start_worker=False)' journal-check`
    """
    ext: JournalExt = current_app.extensions[EXTENSION]
    j = ext.get()
    click.echo(f"journal {ext.path}: {j.count_unhandled()} unhandled notifications, "
               f"migrations by phase {j.counts_by_phase() or '{}'}")
