"""Scenario files: what each node's signals do over time, validated once into frozen models.

A scenario is YAML (or JSON, which is YAML too):

    seed: 1
    nodes: [n1, n2, n3]
    defaults:   {<signal>: <spec>, ...}            every node, unless overridden
    overrides:  {<node>: {<signal>: <spec>, ...}}   per node
    containers: {<node>: [<container name>, ...]}   when no Docker engine is given for the node
    memory_limit_bytes: 268435456                   limit of containers without a real one

A spec holds exactly one shape (steady, ramp, spikes, replay) and an optional gaussian `noise`
(standard deviation). Every error becomes one ConfigError naming the field and what is allowed.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from preshift.errors import ConfigError

from .trace import Trace, read_trace

MIB = 1024 * 1024
DEFAULT_MEMORY_LIMIT_BYTES = 256 * MIB


class Signal(StrEnum):
    """A simulated signal of a node; the metric families it drives are listed in metrics.py."""

    LOAD = "load"
    LATENCY_SECONDS = "latency_seconds"
    VOLTAGE_VOLTS = "voltage_volts"
    POWER_WATTS = "power_watts"
    TEMPERATURE_CELSIUS = "temperature_celsius"
    MEMORY_RATIO = "memory_ratio"


# Signals a real exporter never reports below zero; noise must not push them there.
NON_NEGATIVE: frozenset[Signal] = frozenset(
    {Signal.LOAD, Signal.LATENCY_SECONDS, Signal.POWER_WATTS, Signal.MEMORY_RATIO}
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as "30s", "5m", "1h", "1m30s", "250ms"."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string such as '30s', '5m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"invalid duration {value!r}: use seconds (e.g. 90) or a number with a unit "
                    "ms, s, m or h (e.g. '30s', '5m', '1h', '1m30s')"
                ) from None
        else:
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("a duration must be seconds or a string such as '30s', '5m', '1h'")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative (got {value!r})")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)]


class _Model(BaseModel):
    """Frozen, strict about unknown keys, and says which keys are allowed."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's own "Extra inputs are not permitted" does not list what *is* allowed.
        if isinstance(data, dict):
            allowed = {f.alias or n for n, f in cls.model_fields.items()}
            unknown = sorted(str(k) for k in data if k not in allowed and k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown field {', '.join(map(repr, unknown))}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
        return data


class Ramp(_Model):
    """Linear from `from` to `to`, beginning at `start`, taking `over`; holds `to` afterwards."""

    from_: float = Field(alias="from")
    to: float
    start: Duration = 0.0
    over: Duration


class Spikes(_Model):
    """`base`, plus `height` for `width` seconds once every `every` seconds, from `start` on."""

    base: float
    height: float
    every: Duration
    width: Duration
    start: Duration = 0.0

    @model_validator(mode="after")
    def _width_fits(self) -> Spikes:
        if self.every <= 0:
            raise ValueError("every must be longer than 0 s")
        if not 0 < self.width < self.every:
            raise ValueError(
                f"width must be longer than 0 s and shorter than every ({self.every:g} s)"
            )
        return self


class Replay(_Model):
    """A CSV trace replayed with its relative timing (path relative to the scenario file)."""

    csv: str
    column: str = "value"
    time_column: str = "timestamp"
    speed: float = Field(default=1.0, gt=0)
    loop: bool = False
    _trace: Trace = PrivateAttr()

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> Replay:
        base_dir = Path((info.context or {}).get("base_dir", "."))
        path = Path(self.csv) if Path(self.csv).is_absolute() else base_dir / self.csv
        self._trace = read_trace(
            path, time_column=self.time_column, value_column=self.column, loop=self.loop
        )
        return self

    @property
    def trace(self) -> Trace:
        return self._trace


SHAPES = ("steady", "ramp", "spikes", "replay")


class SignalSpec(_Model):
    """One signal's behaviour: exactly one shape plus optional gaussian noise (std deviation)."""

    steady: float | None = None
    ramp: Ramp | None = None
    spikes: Spikes | None = None
    replay: Replay | None = None
    noise: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_number(cls, data: Any) -> Any:
        # `load: 0.6` reads better than `load: {steady: 0.6}` in a hand-written scenario.
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"steady": data}
        return data

    @model_validator(mode="after")
    def _one_shape(self) -> SignalSpec:
        given = [s for s in SHAPES if getattr(self, s) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one shape of {', '.join(SHAPES)} (got {got})")
        return self


BUILTIN_DEFAULTS: dict[Signal, SignalSpec] = {
    Signal.LOAD: SignalSpec(steady=0.6, noise=0.05),
    Signal.LATENCY_SECONDS: SignalSpec(steady=0.002, noise=0.0002),
    Signal.VOLTAGE_VOLTS: SignalSpec(steady=12.0, noise=0.02),
    Signal.POWER_WATTS: SignalSpec(steady=180.0, noise=5.0),
    Signal.TEMPERATURE_CELSIUS: SignalSpec(steady=50.0, noise=0.5),
    Signal.MEMORY_RATIO: SignalSpec(steady=0.3, noise=0.01),
}


class Scenario(_Model):
    """The whole scenario; see the module docstring and docs/simulator.md."""

    seed: int = 0
    nodes: tuple[Name, ...] | None = None
    defaults: dict[Signal, SignalSpec] = Field(default_factory=dict)
    overrides: dict[Name, dict[Signal, SignalSpec]] = Field(default_factory=dict)
    containers: dict[Name, tuple[Name, ...]] = Field(default_factory=dict)
    memory_limit_bytes: int = Field(default=DEFAULT_MEMORY_LIMIT_BYTES, gt=0)

    @field_validator("nodes")
    @classmethod
    def _unique(cls, nodes: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if nodes is not None:
            if not nodes:
                raise ValueError("list at least one node, or leave `nodes` out to use --nodes")
            dupes = sorted({n for n in nodes if nodes.count(n) > 1})
            if dupes:
                raise ValueError(f"node names must be unique; repeated: {', '.join(dupes)}")
        return nodes

    def spec_for(self, node: str, signal: Signal) -> SignalSpec:
        """The spec a node's signal follows: its override, else the default, else built in."""
        node_overrides = self.overrides.get(node, {})
        if signal in node_overrides:
            return node_overrides[signal]
        return self.defaults.get(signal, BUILTIN_DEFAULTS[signal])

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form that validates back into an equal scenario (durations in seconds)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in loc if p != "[key]"]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def config_error(origin: str, exc: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """One line naming each bad field; a CLI prints it as is, an HTTP API returns it in a 400."""
    problems = [f"{_location(prefix + tuple(e['loc']))}: {_message(e)}" for e in exc.errors()]
    shown = "; ".join(problems[:5])
    if len(problems) > 5:
        shown += f"; and {len(problems) - 5} more"
    return ConfigError(f"{origin}: {shown}")


def _load_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML or JSON"
        raise ConfigError(f"{origin}: {problem}{where}; fix the syntax") from None


def parse_scenario(text: str, *, base_dir: Path, origin: str) -> Scenario:
    """Validate scenario text; replay paths are resolved against `base_dir`."""
    data = _load_yaml(text, origin)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: the top level must be a mapping with keys such as seed, nodes, defaults, "
            "overrides, containers"
        )
    try:
        return Scenario.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise config_error(origin, exc) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises ConfigError saying what to fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read scenario file {path}: {exc.strerror or exc}; pass an existing file "
            "with --scenario"
        ) from None
    return parse_scenario(text, base_dir=path.parent, origin=str(path))


def parse_signal_spec(text: str, *, base_dir: Path, origin: str, field: str) -> SignalSpec:
    """Validate one signal spec, e.g. the body of PUT /api/v1/nodes/<node>/<signal>."""
    data = _load_yaml(text, origin)
    try:
        return SignalSpec.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise config_error(origin, exc, prefix=(field,)) from None


def resolve_nodes(
    scenario: Scenario,
    cli_nodes: tuple[str, ...],
    docker_nodes: tuple[str, ...],
    *,
    origin: str = "scenario",
) -> tuple[str, ...]:
    """The node list (scenario, else --nodes, else the --docker nodes), checked for consistency."""
    nodes = scenario.nodes or cli_nodes or tuple(sorted(docker_nodes))
    if not nodes:
        raise ConfigError(
            f"{origin}: nodes: no nodes given; list them in the scenario (`nodes: [n1, n2]`) "
            "or pass --nodes"
        )
    known = set(nodes)
    for field, names in (
        ("overrides", scenario.overrides),
        ("containers", scenario.containers),
        ("--docker", docker_nodes),
    ):
        unknown = sorted(set(names) - known)
        if unknown:
            raise ConfigError(
                f"{origin}: {field}.{unknown[0]}: unknown node {unknown[0]!r}; the nodes are "
                f"{', '.join(nodes)}"
            )
    return tuple(nodes)
