"""A trivial executor for tests and benchmarks: it marks every journaled notification
handled and does nothing else.

    PRESHIFT_WEBHOOK_EXECUTOR_FACTORY=webhook.testing:mark_handled_factory
    PRESHIFT_WEBHOOK_EXECUTOR_FACTORY=webhook.testing:idle_factory     (does nothing)

Each handling is also appended to `<journal>.handled` ("<notification id> <pid>" per line),
so a test can prove a notification was handled exactly once, by which process.
"""

from __future__ import annotations

import os
from typing import Any

from preshift.act.journal import Journal


class MarkHandledExecutor:
    """Marks unhandled notifications handled ("ignored" without a component)."""

    def __init__(self, journal: Journal, observer: Any = None) -> None:
        self.journal = journal
        self.observer = observer
        self.log_path = f"{journal.path}.handled"

    def tick(self) -> int:
        done = 0
        for n in self.journal.unhandled_notifications(limit=500):
            outcome = "ignored: no component label" if not n.component else "handled (test)"
            self.journal.mark_handled(n.id, outcome)
            # after the commit: a line means "handled", never "maybe"
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{n.id} {os.getpid()}\n")
            done += 1
        return done


class IdleExecutor:
    """Does nothing: measures the intake alone (bench/bench_webhook.py --executor none)."""

    def tick(self) -> int:
        return 0


def idle_factory(config: Any, journal: Journal, *, observer: Any = None) -> Any:
    return IdleExecutor()


def mark_handled_factory(config: Any, journal: Journal, *, observer: Any = None) -> Any:
    return MarkHandledExecutor(journal, observer)
