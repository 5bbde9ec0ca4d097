"""Preshift's webhook: receives Alertmanager's notifications, journals them, and runs the
migration executor in the background (docs/webhook.md).

    gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'    # or: preshift webhook serve

Modules: `payload` (the Alertmanager v4 model), `auth` (bearer/basic), `journal_ext` (one
journal per thread), `intake` (group-committed journal writes), `alerts` (POST
/api/v1/alerts), `control` (the migrations API, health), `metrics` (/metrics, multiprocess
aware, and the executor's observer), `worker` (the executor thread), `responses` (JSON
answers), `status` (the operators' HTML page, `/`), `cli` (`preshift webhook`, `preshift
migrations`), `testing` (a trivial executor).
Everything is imported inside `create_app`, so importing `webhook` costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from preshift.config import Config

__all__ = ["CONFIG_ENV", "create_app", "shutdown"]

CONFIG_ENV = "PRESHIFT_CONFIG"
#: "0" turns the intake's group commit off (one transaction per request), for comparisons.
GROUP_COMMIT_ENV = "PRESHIFT_WEBHOOK_GROUP_COMMIT"


def create_app(
    config: Config | str | os.PathLike[str] | None = None,
    *,
    journal_path: str | os.PathLike[str] | None = None,
    start_worker: bool = True,
    executor_factory: Any = None,
    environ: Mapping[str, str] | None = None,
) -> Flask:
    """Build the webhook app.

    `config`: a Config, a path to the YAML file, or None for the file named by
    $PRESHIFT_CONFIG (what `gunicorn 'webhook:create_app()'` uses). `journal_path` overrides
    webhook.journal. `start_worker` starts the executor thread (off in most unit tests);
    `executor_factory(config, journal, *, observer)` builds the executor, by default
    $PRESHIFT_WEBHOOK_EXECUTOR_FACTORY (module:attribute) or
    `webhook.worker.default_executor_factory` (preshift.act.factory.make_executor).
    `environ` is where secrets and $PRESHIFT_CONFIG are read (default os.environ).

    Raises ConfigError (nothing started) when the configuration is invalid, no
    authentication is configured and webhook.allow_unauthenticated is false, or the
    journal cannot be opened.
    """
    from flask import Flask

    from preshift.act.journal import Journal
    from preshift.config import Config, load_config
    from preshift.errors import ActionError, ConfigError

    from . import alerts, control, metrics, responses, status
    from .auth import Authenticator
    from .intake import Intake
    from .journal_ext import JournalExt
    from .worker import FACTORY_ENV, ExecutorWorker, default_executor_factory, factory_from_path

    env = os.environ if environ is None else environ
    if config is None:
        path = env.get(CONFIG_ENV)
        if not path:
            raise ConfigError(
                f"no configuration: set ${CONFIG_ENV} to the configuration file "
                "(preshift webhook serve --config PATH does) or pass create_app(config)"
            )
        config = load_config(path, env)
    elif not isinstance(config, Config):
        config = load_config(config, env)
    cfg = config.webhook
    auth = Authenticator.from_config(cfg, env)  # refuses to start without a secret
    jpath = Path(journal_path if journal_path is not None else cfg.journal)
    try:
        # Opened once now, so a bad path or a full disk stops the start, not the first alert.
        Journal(jpath).close()
    except ActionError as exc:
        raise ConfigError(f"webhook.journal: {exc}") from None

    app = Flask("webhook")
    app.config.from_mapping(
        # werkzeug enforces it too (Content-Length and chunked bodies); alerts.read_body
        # answers first, with a message that says what to change.
        MAX_CONTENT_LENGTH=cfg.max_body,
        PRESHIFT_JOURNAL=str(jpath),
    )
    journals = JournalExt(jpath)
    journals.init_app(app)
    m = metrics.WebhookMetrics.create()
    metrics.init_app(app, m)
    responses.init_app(app)
    alerts.init_app(app, alerts.AlertsState(
        auth, Intake(journals, group_commit=env.get(GROUP_COMMIT_ENV, "1") != "0"), m,
        cfg.max_body,
    ))
    control.init_app(app, auth)
    status.init_app(app, auth, cfg.exporter_url, jpath, env)

    if start_worker:
        factory = executor_factory
        if factory is None:
            path = env.get(FACTORY_ENV)
            try:
                factory = factory_from_path(path) if path else default_executor_factory
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        worker = ExecutorWorker(config, jpath, factory, m)
        app.extensions["preshift.worker"] = worker
        worker.start()
    return app


def shutdown(app: Any, timeout: float = 5.0) -> None:
    """Stop the executor thread (releasing the leader lock) and close the journals.
    Called by gunicorn's worker_exit hook; safe to call twice or on a foreign object."""
    extensions = getattr(app, "extensions", None) or {}
    worker = extensions.get("preshift.worker")
    if worker is not None:
        worker.stop(timeout)
    journals = extensions.get("preshift.journal")
    if journals is not None:
        journals.close_all()
