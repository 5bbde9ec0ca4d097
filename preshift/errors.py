"""One exception tree for Preshift; adapters translate foreign errors at their edge.

    PreshiftError
    ├── ConfigError        a configuration file or override is invalid (names the field and the fix)
    ├── InputError         input from outside (payload, CSV, API call) is invalid
    ├── SourceError        reading the world failed (Docker, Prometheus); .retriable: retry helps
    ├── ActionError        changing the world failed; .retriable says if a retry helps
    └── TestbedError       the local testbed could not be set up or torn down
"""

from __future__ import annotations


class PreshiftError(Exception):
    """Base of every error Preshift raises on purpose."""


class ConfigError(PreshiftError):
    """The configuration is invalid; the message names each bad field and what is allowed."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class InputError(PreshiftError):
    """Input from outside is invalid."""


class SourceError(PreshiftError):
    """A source of data (Docker engine, Prometheus) failed or answered nonsense."""

    def __init__(self, source: str, message: str, *, retriable: bool = True,
                 unreachable: bool = False) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.retriable = retriable
        #: the source did not answer at all (refused, timed out): the next request to it
        #: would most likely wait as long, whatever it asks
        self.unreachable = unreachable


class ActionError(PreshiftError):
    """An action on the world failed."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class TestbedError(PreshiftError):
    """The local testbed could not be brought up or torn down."""

    __test__ = False  # not a pytest test class
