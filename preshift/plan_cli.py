"""`preshift plan` and `preshift explain`: what Preshift would do now, and why. Changes nothing.

Two sources, one rendering (preshift.plan_view):

- `--from URL` reads a running exporter's /api/v1/footprint (and its /metrics for the
  failure counters);
- `--config PATH` builds the real adapters like `preshift exporter --once`, runs one full
  refresh with a fit budget large enough that every series gets a fitted ETS model (about
  8 ms per series), and renders the document that refresh produced.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import click

from .errors import InputError, PreshiftError, SourceError
from .plan_view import Context, failure_counters, has_changes, plan_section, render_explain
from .plan_view import render_plan as render_plan_text

Doc = Mapping[str, Any]
#: Fits per refresh for a one-off plan: every series gets its model (the exporter spreads
#: fits over refreshes instead, see docs/forecasting.md).
UNLIMITED_FITS = 10**9


# --- reading a running exporter ---------------------------------------------------------------


def _get(url: str, timeout: float) -> Any:
    import requests  # only the --from path needs it

    try:
        return requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise SourceError("exporter", f"{url}: {type(exc).__name__}: {exc}") from None


def fetch_document(base: str, timeout: float = 10.0) -> tuple[Doc, Context]:
    """The footprint document of the exporter at `base`, and its failure counters."""
    if not base.startswith(("http://", "https://")):
        raise InputError(f"--from {base}: use the exporter's http:// URL, "
                         "e.g. http://127.0.0.1:9731")
    base = base.rstrip("/")
    resp = _get(f"{base}/api/v1/footprint", timeout)
    if resp.status_code == 503:
        raise SourceError("exporter", f"{base} has not finished its first refresh; "
                          "retry in a few seconds")
    if resp.status_code != 200:
        raise SourceError("exporter", f"{base}/api/v1/footprint answered HTTP {resp.status_code}")
    try:
        doc = resp.json()
    except ValueError:
        raise SourceError("exporter", f"{base}/api/v1/footprint did not answer JSON") from None
    if not isinstance(doc, dict):
        raise SourceError("exporter", f"{base}/api/v1/footprint: not a JSON object")
    comps: dict[tuple[str, str, str], float] = {}
    nodes: dict[tuple[str, str], float] = {}
    metrics = _get(f"{base}/metrics", timeout)
    if metrics.status_code == 200:  # without them explain says the counters are unknown
        comps, nodes = failure_counters(metrics.text)
    return doc, Context(source=base, component_failures=comps, node_failures=nodes)


# --- one refresh from the configuration -------------------------------------------------------


def snapshot_once(
    config: Any,
    inventory: Any,
    signals: Any,
    failures: Any,
    *,
    restore: Callable[[], Any] | None = None,
    history: Callable[[float, float], Any] | None = None,
    fitter: Any = None,
    clock: Callable[[], float] = time.time,
) -> Any:
    """One exporter refresh over these sources, every series fitted; the Snapshot."""
    # The exporter package is imported only here: plan/explain --config drive the exporter's
    # own refresh so the numbers are the ones it would serve.
    from exporter.refresh import RefreshLoop

    from .assess import Assessor

    assessor = Assessor(config, fit_budget_per_refresh=UNLIMITED_FITS, fit_seconds=math.inf,
                        fitter=fitter)
    loop = RefreshLoop(config, inventory, signals, failures, clock=clock, restore=restore,
                       history=history, assessor=assessor)
    return loop.refresh_once()


def context_from(snapshot: Any, config: Any, source: str) -> Context:
    """What the configuration and the refresh know beyond the document."""
    a = snapshot.assessment
    return Context(
        source=source,
        weights={s.name: s.weight for s in config.signals if s.enabled},
        depends_on={c: tuple(s.depends_on) for c, s in config.services.items()},
        p_component=dict(a.scores.p_component) if a is not None else {},
        component_failures=dict(snapshot.failures.by_component),
        node_failures=dict(snapshot.failures.by_node),
        configured=True,
    )


def live_document(config_path: str) -> tuple[Doc, Context]:
    """Build the real adapters, refresh once, return the document and its context."""
    from exporter.cli import build_adapters

    from .config import load_config

    config = load_config(config_path)
    adapters = build_adapters(config, os.environ, time.time())
    try:
        # The same sources `preshift exporter --once` wires (exporter.cli._run_once).
        snap = snapshot_once(
            config, adapters.inventory, adapters.signals, adapters.ledger,
            restore=lambda: adapters.restore(config),
            history=lambda since, until: adapters.history(config, since, until),
        )
    finally:
        adapters.close()
    return json.loads(snap.footprint_json), context_from(snap, config, config_path)


def load(config_path: str | None, url: str | None, timeout: float) -> tuple[Doc, Context]:
    """The document from --from or --config; --from wins over $PRESHIFT_CONFIG."""
    ctx = click.get_current_context(silent=True)
    from_env = ctx is not None and ctx.get_parameter_source(
        "config_path") is click.core.ParameterSource.ENVIRONMENT
    if url is not None and from_env:
        config_path = None
    if (config_path is None) == (url is None):
        raise click.UsageError("give exactly one of --config PATH or --from URL")
    if url is not None:
        return fetch_document(url, timeout)
    assert config_path is not None
    return live_document(config_path)


# --- commands ---------------------------------------------------------------------------------

_source_options = [
    click.option("--config", "config_path", envvar="PRESHIFT_CONFIG",
                 type=click.Path(dir_okay=False),
                 help="refresh once from the live sources of this configuration"),
    click.option("--from", "url", metavar="URL",
                 help="read a running exporter instead, e.g. http://127.0.0.1:9731"),
    click.option("--timeout", type=float, default=10.0, show_default=True,
                 help="seconds to wait for the exporter (--from)"),
]


def _sources(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_source_options):
        f = option(f)
    return f


def _fail(exc: PreshiftError) -> NoReturn:
    """With --detailed-exitcode an error must exit 1 (2 means "changes", as in terraform)."""
    raise click.ClickException(str(exc)) from None


@click.command("plan")
@_sources
@click.option("--json", "as_json", is_flag=True, help="print the plan JSON")
@click.option("--detailed-exitcode", is_flag=True,
              help="exit 0: no changes, 1: error, 2: changes (as terraform plan)")
def plan_command(config_path: str | None, url: str | None, timeout: float, as_json: bool,
                 detailed_exitcode: bool) -> None:
    """Show current → desired placement and the prioritised changes, from live data.

    Changes nothing. Exit code 0 whenever it ran (or see --detailed-exitcode).
    """
    try:
        doc, ctx = load(config_path, url, timeout)
        plan = plan_section(doc)
    except PreshiftError as exc:
        if detailed_exitcode:
            _fail(exc)
        raise
    if as_json:
        click.echo(json.dumps(plan, indent=2))
    else:
        for line in render_plan_text(doc, ctx):
            click.echo(line)
    if detailed_exitcode and has_changes(plan):
        # SystemExit, not ctx.exit: preshift.cli.main returns 0 for a clean click exit.
        sys.stdout.flush()
        raise SystemExit(2)


@click.command("explain")
@click.argument("name", metavar="REPLICA")
@_sources
def explain_command(name: str, config_path: str | None, url: str | None, timeout: float) -> None:
    """Break down the score of one replica (container name) or of a component: each factor,
    what drove it, and what the plan does with it."""
    doc, ctx = load(config_path, url, timeout)
    for line in render_explain(doc, name, ctx):
        click.echo(line)
