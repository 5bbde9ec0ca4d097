"""The `preshift` command. Subcommands live next to the code they drive and are added here."""

from __future__ import annotations

import importlib
import sys

import click

from . import __version__
from .errors import PreshiftError

# (module, attribute) of each subcommand; imported lazily so `preshift --help` stays fast
# and a heavy dependency (statsforecast, docker) is only loaded by the command that needs it.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "config": ("preshift.config_cli", "config_group"),
    "testbed": ("preshift.testbed.cli", "testbed_group"),
    "simulate": ("preshift.simulator.cli", "simulate_command"),
    "exporter": ("exporter.cli", "exporter_command"),
    "demo": ("preshift.demo", "demo_command"),
    "backtest": ("preshift.backtest_cli", "backtest_command"),
    "plan": ("preshift.plan_cli", "plan_command"),
    "explain": ("preshift.plan_cli", "explain_command"),
    "webhook": ("webhook.cli", "webhook_group"),
    "migrations": ("webhook.cli", "migrations_group"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="preshift")
def cli() -> None:
    """Preshift: forecast component risk, plan placement, migrate before failure."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors Preshift raises on purpose become one clear message and exit 2."""
    try:
        rv = cli.main(args=argv, prog_name="preshift", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except PreshiftError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0  # ctx.exit(n) comes back as n


if __name__ == "__main__":
    sys.exit(main())
