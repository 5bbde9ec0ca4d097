"""`preshift config check|show`: validate a configuration file without starting anything."""

from __future__ import annotations

import re
from typing import Any

import click
import yaml

from .config import load_config

#: the password of a `scheme://user:password@host` URL
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def redacted(value: Any) -> Any:
    """`value` with the password of every URL in it replaced by `***` (the config may be
    pasted into a ticket; secrets proper come from env or files and are not in it)."""
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***@", value)
    return value


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
    """Print the effective configuration (file + environment overrides + defaults), URL
    passwords shown as `***`."""
    cfg = load_config(path)
    click.echo(yaml.safe_dump(redacted(cfg.model_dump(mode="json")), sort_keys=False))
