"""Journal writes of the intake, with group commit.

Every accepted notification must be durable before its 202 (the journal commits with
synchronous=FULL: one fsync per transaction). When several request threads of a worker
arrive together, one of them writes all their alerts in ONE transaction while the others
wait, and each gets its own answer from it: the same durability (nobody is answered before
the commit that holds their rows), one fsync instead of many. No extra thread: the first
waiting request becomes the writer ("leader/follower" group commit), so an idle webhook
writes a lone notification at once.

Across threads and worker processes, every write (intake, control API, executor) waits
for its turn on an flock first (`preshift.act.journal.Journal`), so SQLite's polling busy handler
never adds its sleeps to an ack.

Deduplication stays exact inside a batch: the journal's INSERT OR IGNORE sees the earlier
rows of the same transaction, so of two identical notifications in one batch only the first
counts as new.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from preshift.act.journal import Notification

from .journal_ext import JournalExt, JournalUnavailable, journal_errors


@dataclass(eq=False)
class _Pending:
    items: Sequence[Notification]
    result: list[bool] | None = None
    error: BaseException | None = None
    done: bool = False


class Intake:
    """`record(items)` → for each alert, True when new; raises JournalUnavailable."""

    def __init__(self, journals: JournalExt, *, group_commit: bool = True,
                 max_batch: int = 512) -> None:
        self.journals = journals
        self.group_commit = group_commit
        self.max_batch = max_batch  # alerts per transaction, bounds one commit's time
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False

    def record(self, items: Sequence[Notification]) -> list[bool]:
        if not items:
            return []
        if not self.group_commit:
            with journal_errors("recording a notification"):
                return self.journals.get().record_notifications(items)
        me = _Pending(items)
        with self._cv:
            self._queue.append(me)
            while not me.done:
                if self._writing:
                    self._cv.wait()
                    continue
                self._writing = True
                batch = self._take()
                self._cv.release()
                try:
                    self._write(batch)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    self._cv.notify_all()
        if me.error is not None:
            # A fresh exception per request thread: one object raised in several threads
            # would share (and race on) its traceback.
            if isinstance(me.error, JournalUnavailable):
                raise JournalUnavailable(str(me.error))
            raise RuntimeError("the intake's journal write failed") from me.error
        assert me.result is not None
        return me.result

    def _take(self) -> list[_Pending]:
        """The oldest pending requests, up to max_batch alerts (at least one request)."""
        batch: list[_Pending] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_batch):
            p = self._queue.pop(0)
            batch.append(p)
            size += len(p.items)
        return batch

    def _write(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; every request of it gets its part or the error."""
        flat = [n for p in batch for n in p.items]
        try:
            with journal_errors("recording notifications"):
                new = self.journals.get().record_notifications(flat)
        except JournalUnavailable as exc:
            # the journal itself failed (locked, full): alone, each would fail the same way
            for p in batch:
                p.error, p.done = exc, True
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            # Something in one request's rows (the transaction was rolled back): write each
            # request alone, so one bad request does not fail the others that shared its commit.
            for p in batch:
                self._write([p])
            return
        except BaseException as exc:  # e.g. SystemExit: every waiter must still get an answer
            for p in batch:
                p.error, p.done = exc, True
            return
        i = 0
        for p in batch:
            p.result, p.done = new[i:i + len(p.items)], True
            i += len(p.items)
