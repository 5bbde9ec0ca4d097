"""No-op adapters: a traffic layer that is not there (traffic.kind "none").

With `NoTraffic` a migration has no backend: it starts, health-checks and promotes the new
instance without a gradual shift (the executor never calls it then); it exists so that code
holding a `Traffic` never needs a None check.
"""

from __future__ import annotations

from .ports import Server


class NoTraffic:
    """A Traffic with no servers that changes nothing."""

    def servers(self, backend: str) -> dict[str, Server]:
        return {}

    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        return None

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        return None

    def drain(self, backend: str, name: str) -> None:
        return None

    def ready(self, backend: str, name: str) -> None:
        return None

    def remove_server(self, backend: str, name: str) -> None:
        return None
