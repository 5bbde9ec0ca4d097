"""The executor thread: one per gunicorn worker, only the leader acts.

Every `webhook.tick` seconds the thread tries `LeaderLock.try_acquire()` (an flock the
kernel drops when its holder dies, even by kill -9). The worker that holds it builds the
executor once, through the executor factory, and calls `executor.tick()`; the others keep
trying, so when the leader dies another worker (or gunicorn's replacement) takes over at
its next tick and resumes from the journal. After each tick the leader publishes the queue
depth and the canary weights of active migrations as metrics.

An exception of a tick is logged (its message and type, rate-limited so a persistent
failure does not flood the log; the traceback at debug level) and the loop goes on. The
thread has its own `Journal` (sqlite3 connections belong to one thread). `stop()` is called
from gunicorn's worker_exit hook (see gunicorn.conf.py) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from preshift.act.journal import Journal
from preshift.act.leader import LeaderLock
from preshift.config import Config

from .metrics import MetricsObserver, WebhookMetrics

log = logging.getLogger("webhook.worker")

EXTENSION = "preshift.worker"
#: Import path ("module:attribute") of an executor factory, for tests and experiments.
FACTORY_ENV = "PRESHIFT_WEBHOOK_EXECUTOR_FACTORY"
REPEAT_LOG_EVERY = 60.0  # seconds between two log lines of the same tick error


class Executor(Protocol):
    def tick(self) -> Any: ...


ExecutorFactory = Callable[..., Executor]  # (config, journal, *, observer) -> Executor


def default_executor_factory(config: Config, journal: Journal, *, observer: Any) -> Executor:
    """The real executor; imported here so the app starts (and serves intake) even while
    the executor's modules fail to import, and so tests need not load them."""
    from preshift.act.factory import make_executor, make_query

    return make_executor(config, journal, observer=observer, query=make_query(config))


def factory_from_path(path: str) -> ExecutorFactory:
    """`module:attribute` → the factory it names (ValueError with the fix when it does not)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{FACTORY_ENV} must be module:attribute (got {path!r})")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{FACTORY_ENV}={path!r}: {exc}") from None


class ExecutorWorker:
    """The background thread of one worker process."""

    def __init__(
        self,
        config: Config,
        journal_path: Path,
        factory: ExecutorFactory,
        metrics: WebhookMetrics,
        *,
        tick: float | None = None,
    ) -> None:
        self.config = config
        self.journal_path = journal_path
        self.factory = factory
        self.metrics = metrics
        self.tick_seconds = tick if tick is not None else config.webhook.tick
        self.lock = LeaderLock(journal_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: tuple[str, float] | None = None
        self._active: dict[str, str] = {}  # migration id -> component, as of the last tick
        self.ticks = 0  # ticks run as leader (for tests)

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="preshift-executor", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait up to `timeout` for the current tick to finish."""
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive():
                log.warning("the executor tick did not finish within %.0f s; leaving it "
                            "(the journal lets the next leader resume)", timeout)

    def _run(self) -> None:
        journal: Journal | None = None
        executor: Executor | None = None
        try:
            while not self._stop.is_set():
                try:
                    if journal is None:
                        journal = Journal(self.journal_path)
                    held = self.lock.try_acquire()
                    self.metrics.leader(held)
                    if held:
                        if executor is None:
                            executor = self.factory(
                                self.config, journal, observer=MetricsObserver(self.metrics)
                            )
                            log.info("this worker leads: executor %s built",
                                     type(executor).__name__)
                        self._tick(executor, journal)
                except Exception as exc:  # the loop must survive anything a tick raises
                    self._report(exc)
                self._stop.wait(self.tick_seconds)
        finally:
            self.lock.release()
            if journal is not None:
                journal.close()
            self.metrics.leader(False)

    def _tick(self, executor: Executor, journal: Journal) -> None:
        ok = False
        try:
            executor.tick()
            ok = True
        finally:
            self.ticks += 1
            depth = None
            try:
                depth = journal.count_unhandled()
                active = journal.migrations(active=True, limit=1000)
                for m in active:
                    self.metrics.weight(m)
                now_active = {m.id: m.component for m in active}
                for mid, component in self._active.items():
                    if mid not in now_active:  # finished since: its canary gauge goes to 0
                        self.metrics.finished_weight(mid, component)
                self._active = now_active
            except Exception:  # metrics must not hide the tick's own error
                log.debug("reading the queue depth failed", exc_info=True)
            self.metrics.tick(ok, depth)

    def _report(self, exc: Exception) -> None:
        """Log a tick's failure once per REPEAT_LOG_EVERY while it keeps repeating."""
        text = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if self._last_error and self._last_error[0] == text and \
                now - self._last_error[1] < REPEAT_LOG_EVERY:
            log.debug("executor tick failed again: %s", text, exc_info=True)
            return
        self._last_error = (text, now)
        log.error("executor tick failed: %s (repeats are logged once a minute)", text)
        log.debug("traceback of the failed tick", exc_info=True)
