"""`preshift config check|show`: validate a configuration file without starting anything."""

from __future__ import annotations

import click
import yaml

from .config import load_config


@click.group("config")
def config_group() -> None:
    """Validate or show a configuration file."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check_command(path: str) -> None:
    """Exit 0 if PATH is a valid configuration, else name every problem and exit 2."""
    cfg = load_config(path)
    click.echo(
        f"{path}: ok ({len(cfg.nodes)} nodes, {len(cfg.services)} services, "
        f"{len(cfg.signals)} signals)"
    )


@config_group.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
def show_command(path: str) -> None:
    """Print the effective configuration (file + environment overrides + defaults)."""
    cfg = load_config(path)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
