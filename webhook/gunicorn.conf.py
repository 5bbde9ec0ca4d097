"""gunicorn settings of the webhook (`preshift webhook serve` uses this file).

    PRESHIFT_CONFIG=/etc/preshift/preshift.yaml \
        gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'

Environment (all optional but PRESHIFT_CONFIG):
    PRESHIFT_CONFIG                 the configuration file (required)
    PRESHIFT_WEBHOOK_WORKERS        worker processes (default 2)
    PRESHIFT_WEBHOOK_WORKER_CLASS   gthread (default) or sync
    PRESHIFT_WEBHOOK_THREADS        request threads per gthread worker (default 4)
    PRESHIFT_WEBHOOK_ACCESS_LOG     1 to log every request to stdout (default off)
    PRESHIFT_WEBHOOK_LOG_LEVEL      debug, info (default), warning, error
    PROMETHEUS_MULTIPROC_DIR        default: <journal>.metrics/, emptied at start
Command-line options (--bind, --workers, ...) override these settings, as usual in gunicorn.

Why these values: gthread keeps connections alive and lets the concurrent requests of one
worker share a journal commit (webhook/intake.py); with sync workers every notification pays
a TCP handshake and an fsync of its own (docs/benchmarks.md, "The webhook's intake"). Two
workers: one can take requests while the other waits on the journal's write lock or runs the
executor. The app is NOT preloaded: each worker must open its own journal and start its own
executor thread after the fork (threads do not survive a fork).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

# Loaded in gunicorn's master before any worker exists. prometheus_client must not be
# imported before PROMETHEUS_MULTIPROC_DIR is set: it picks its storage at import time,
# and the workers inherit the master's modules.


def _load_config() -> Any:
    from preshift.config import load_config
    from preshift.errors import PreshiftError

    path = os.environ.get("PRESHIFT_CONFIG")
    if not path:
        sys.exit("preshift webhook: set PRESHIFT_CONFIG to the configuration file")
    try:
        return load_config(path)
    except PreshiftError as exc:
        sys.exit(f"preshift webhook: {exc}")


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        sys.exit(f"preshift webhook: {name} must be a whole number from {low} to {high} "
                 f"(got {raw!r})")
    return int(raw)


_config = _load_config()
_journal = Path(_config.webhook.journal).absolute()
_metrics_dir = Path(
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") or f"{_journal}.metrics"
).absolute()
_metrics_dir.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

logging.basicConfig(
    level=os.environ.get("PRESHIFT_WEBHOOK_LOG_LEVEL", "info").upper(),
    format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
)

wsgi_app = "webhook:create_app()"
bind = [_config.webhook.listen]
workers = _int_env("PRESHIFT_WEBHOOK_WORKERS", 2, 1, 64)
worker_class = os.environ.get("PRESHIFT_WEBHOOK_WORKER_CLASS", "gthread")
if worker_class not in ("gthread", "sync"):
    sys.exit(f"preshift webhook: PRESHIFT_WEBHOOK_WORKER_CLASS must be gthread or sync "
             f"(got {worker_class!r})")
threads = _int_env("PRESHIFT_WEBHOOK_THREADS", 4, 1, 256)
keepalive = 5  # Alertmanager reuses its connections; a benchmark client too
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 10  # SIGTERM: finish requests and the executor's current tick
preload_app = False
#: gunicorn's default access-log format without `%(u)s`: that field is the user name of any
#: basic-auth header, i.e. whatever a client sent, a password pasted in the wrong box included.
access_log_format = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
accesslog = "-" if os.environ.get("PRESHIFT_WEBHOOK_ACCESS_LOG", "") not in ("", "0") else None
errorlog = "-"
proc_name = "preshift-webhook"
control_socket_disable = True  # gunicorn ≥ 25's control socket: unused, and one per $HOME


def on_starting(server: Any) -> None:
    """Empty the multiprocess directory: files of a previous run would add old counts."""
    for f in _metrics_dir.glob("*.db"):
        f.unlink(missing_ok=True)
    server.log.info("metrics of the workers are merged in %s", _metrics_dir)


def child_exit(server: Any, worker: Any) -> None:
    """A worker died (exited or killed): its live gauges (leader, queue depth) go away."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, on a graceful exit: stop the executor thread, release the lock."""
    import webhook

    webhook.shutdown(getattr(worker, "wsgi", None))

