"""Preshift's configuration: one YAML file, validated once into frozen objects.

`load_config(path, environ)` reads the file, applies environment overrides
(`PRESHIFT_<FIELD>` for a top-level field, `__` to reach into a section, e.g.
`PRESHIFT_PROMETHEUS__URL=http://prom:9090`; values are parsed as YAML scalars), and
validates. Any problem raises ConfigError naming every bad field and what is allowed.
Secrets never live in the file: they come from files (`*_file`) or environment variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .durations import parse_duration
from .errors import ConfigError

ENV_PREFIX = "PRESHIFT_"
#: Variables with the prefix that are not overrides (they configure other parts).
ENV_NOT_OVERRIDES = frozenset({
    "PRESHIFT_CONFIG", "PRESHIFT_WEBHOOK_TOKEN", "PRESHIFT_WEBHOOK_PASSWORD",
})

Duration = Annotated[float, BeforeValidator(parse_duration)]
#: Floor of the default migration.max_plan_age: a refresh at scale takes tens of seconds.
MIN_PLAN_AGE = 60.0


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _host_port(v: str, example: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, e.g. {example}")
    return v


def _http_url(v: str, example: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
        raise ValueError(f"must be an http:// or https:// URL, e.g. {example}")
    return v.rstrip("/")


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
SignalName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeLabels(_Frozen):
    """Failure domains of a node. Missing ones are read from the engine's labels
    (`preshift.host`, `preshift.rack`, `preshift.site`)."""

    host: Name | None = None
    rack: Name | None = None
    site: Name | None = None


class NodeConfig(_Frozen):
    """A Docker engine that Preshift treats as one node."""

    name: Name
    url: str = Field(description="Docker engine URL: unix:///path.sock or tcp://host:port")
    labels: NodeLabels = NodeLabels()
    address: str | None = Field(
        None, description="IP where containers' published ports are reached (traffic goes "
        "there); default: the host of a tcp:// URL, else the HostIp of the source's ports",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not re.match(r"^(unix://|tcp://|ssh://|https?://)\S+$", v):
            raise ValueError(
                "must be a Docker engine URL: unix:///run/docker.sock, tcp://host:2376 or ssh://host"
            )
        return v


class ServiceConfig(_Frozen):
    """What Preshift must respect for one application component (a Docker/Swarm service)."""

    min_available: int = Field(1, ge=0, le=10_000)
    criticality: float = Field(1.0, gt=0, le=10, description="impact weight; 1 is normal")
    depends_on: tuple[Name, ...] = ()
    stateful: bool = False


class SignalConfig(_Frozen):
    """A time series read from Prometheus whose forecast may breach a limit."""

    name: SignalName
    scope: Literal["node", "component"]
    query: str = Field(min_length=1)
    limit: float
    direction: Literal["above", "below"] = "above"
    weight: float = Field(0.5, ge=0, le=1, description="how strongly a breach leads to failure")
    node_label: Name = "node"
    component_label: Name = Field("name", description="label holding the container name")
    enabled: bool = True


class PrometheusConfig(_Frozen):
    url: str = "http://127.0.0.1:9090"
    timeout: PositiveDuration = 10.0
    step: PositiveDuration = Field(60.0, description="resolution of query_range")
    history: Duration = Field(86400.0, description="how much history each signal keeps")
    bearer_token_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        return _http_url(v, "http://127.0.0.1:9090")


class DockerConfig(_Frozen):
    label_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9.-]{0,30}$")] = "preshift"
    timeout: Duration = 10.0


class SwarmConfig(_Frozen):
    """Docker Swarm mode (`mode: swarm`): services are read and changed through a manager."""

    manager: Name | None = Field(
        None, description="the nodes[] entry whose engine is a swarm manager (mode swarm)",
    )
    wait: PositiveDuration = Field(
        10.0, description="longest wait for Swarm to create, start or stop a task per step",
    )


class ExporterConfig(_Frozen):
    listen: str = "127.0.0.1:9731"

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        return _host_port(v, "127.0.0.1:9731 or 0.0.0.0:9731")


class WebhookConfig(_Frozen):
    """The webhook that receives Alertmanager's notifications (docs/webhook.md).

    Authentication: a bearer token from $PRESHIFT_WEBHOOK_TOKEN or `token_file`, and/or basic
    auth `basic_user` with the password from $PRESHIFT_WEBHOOK_PASSWORD or
    `basic_password_file`. Without any, the webhook refuses to start unless
    `allow_unauthenticated` is true.
    """

    listen: str = "127.0.0.1:9733"
    journal: Path = Field(Path("preshift-journal.sqlite3"), description="SQLite journal file")
    exporter_url: str = Field("http://127.0.0.1:9731", description="where the plan is read")
    max_body: int = Field(1 << 20, ge=1024, le=64 << 20, description="largest payload, bytes")
    token_file: Path | None = None
    basic_user: str | None = None
    basic_password_file: Path | None = None
    allow_unauthenticated: bool = False
    tick: PositiveDuration = Field(0.25, description="how often the executor advances")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _host_port(v, "127.0.0.1:9733 or 0.0.0.0:9733")

    @field_validator("exporter_url")
    @classmethod
    def _exporter(cls, v: str) -> str:
        return _http_url(v, "http://127.0.0.1:9731")


class TrafficConfig(_Frozen):
    """The traffic layer the executor shifts weights in: HAProxy's runtime API, or none
    (then a migration starts, checks and promotes without a gradual shift)."""

    kind: Literal["haproxy", "none"] = "none"
    socket: Path | None = Field(None, description="HAProxy admin socket (stats socket level admin)")
    backends: dict[Name, Name] = Field(
        {}, description="component -> HAProxy backend; its servers are named after containers",
    )
    timeout: PositiveDuration = 2.0

    @model_validator(mode="after")
    def _socket_needed(self) -> TrafficConfig:
        if self.kind == "haproxy" and self.socket is None:
            raise ValueError("kind haproxy needs socket: the path of HAProxy's admin socket")
        return self


class AnalysisConfig(_Frozen):
    """Checks at every weight step (docs/webhook.md, "Analysis")."""

    max_error_ratio: float = Field(
        0.01, ge=0, le=1, description="failure budget: failed / total requests to the canary",
    )
    min_requests: int = Field(
        1, ge=0, description="fewer requests in a step = no data: hold, do not pass",
    )
    failed_checks: int = Field(2, ge=1, le=100, description="failed checks before rollback")
    query: str | None = Field(
        None, description="optional PromQL returning one number; {component} and {canary} "
        "are replaced",
    )
    query_max: float | None = Field(None, description="the query's value must stay ≤ this")


class MigrationConfig(_Frozen):
    """How the webhook migrates replicas, and the limits it respects (docs/webhook.md)."""

    dry_run: bool = Field(False, description="journal the plans, change nothing")
    require_approval: bool = Field(False, description="wait for approve before traffic moves")
    step_weights: tuple[Annotated[int, Field(ge=1, le=100)], ...] = (10, 25, 50, 75, 100)
    step_interval: PositiveDuration = 2.0
    health_timeout: PositiveDuration = 30.0
    health_path: str | None = Field(
        None, description="HTTP path probed on the new instance when it has no healthcheck",
    )
    drain_timeout: PositiveDuration = 30.0
    progress_deadline: PositiveDuration = Field(
        120.0, description="a phase that makes no progress this long rolls back",
    )
    standby_ttl: Duration = Field(
        600.0, description="decommission the standby once the new instance stayed healthy "
        "this long; if the new one fails before, the standby is restored",
    )
    analysis: AnalysisConfig = AnalysisConfig()
    max_concurrent: int = Field(1, ge=1, le=100)
    cooldown: Duration = Field(300.0, description="per service, after a migration ends")
    max_moves_per_node_per_hour: int = Field(6, ge=0, le=10_000)
    move_stateful: bool = False
    max_plan_age: PositiveDuration | None = Field(
        None, description="a plan assessed longer ago than this (by the webhook's clock) is "
        "not acted on; default: 4 x refresh_interval, at least 60 s",
    )

    @field_validator("step_weights")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or list(v) != sorted(set(v)) or v[-1] != 100:
            raise ValueError("must be strictly increasing canary percentages ending at 100, "
                             "e.g. [10, 25, 50, 100]")
        return v


DEFAULT_SIGNALS: tuple[SignalConfig, ...] = (
    SignalConfig(
        name="node_load", scope="node", query="node_load1", limit=4.0, weight=0.3,
    ),
    SignalConfig(
        name="network_latency", scope="node",
        query='probe_icmp_duration_seconds{phase="rtt"}', limit=0.05, weight=0.3,
    ),
    SignalConfig(
        name="voltage_deviation", scope="node",
        query='abs(ipmi_voltage_volts{name="12V"} - 12)', limit=0.6, weight=0.6,
    ),
    SignalConfig(
        name="temperature", scope="node",
        query="max by (node) (node_hwmon_temp_celsius)", limit=85.0, weight=0.5,
    ),
    SignalConfig(
        name="memory_pressure", scope="component",
        query="container_memory_working_set_bytes / (container_spec_memory_limit_bytes > 0)",
        limit=0.9, weight=0.4,
    ),
)


class Config(_Frozen):
    """The whole configuration."""

    nodes: tuple[NodeConfig, ...] = Field(min_length=1)
    mode: Literal["docker", "swarm"] = Field(
        "docker", description="docker: containers on plain engines; swarm: Swarm services "
        "(replicas are tasks, changed through swarm.manager)",
    )
    swarm: SwarmConfig = SwarmConfig()
    services: dict[Name, ServiceConfig] = {}
    signals: tuple[SignalConfig, ...] = DEFAULT_SIGNALS
    risk_tolerance: float = Field(
        0.2, ge=0, lt=1,
        description="largest projected failure probability a placement may carry; "
        "higher = fewer moves",
    )
    horizon: PositiveDuration = 1800.0
    refresh_interval: PositiveDuration = 15.0
    prometheus: PrometheusConfig = PrometheusConfig()
    docker: DockerConfig = DockerConfig()
    exporter: ExporterConfig = ExporterConfig()
    webhook: WebhookConfig = WebhookConfig()
    traffic: TrafficConfig = TrafficConfig()
    migration: MigrationConfig = MigrationConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = []
        names = [n.name for n in self.nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"nodes: duplicate node name(s) {dup}; each name must be unique")
        signals = [s.name for s in self.signals]
        dup = sorted({n for n in signals if signals.count(n) > 1})
        if dup:
            problems.append(f"signals: duplicate signal name(s) {dup}; each name must be unique")
        for svc, cfg in self.services.items():
            for dep in cfg.depends_on:
                if dep not in self.services:
                    problems.append(
                        f"services.{svc}.depends_on: unknown service {dep!r}; "
                        f"declare it under services (known: {sorted(self.services)})"
                    )
                elif dep == svc:
                    problems.append(f"services.{svc}.depends_on: a service cannot depend on itself")
        age = self.migration.max_plan_age
        if age is not None and age <= self.refresh_interval:
            problems.append(f"migration.max_plan_age: {age:g} s would refuse every plan: it "
                            f"must exceed refresh_interval ({self.refresh_interval:g} s), e.g. "
                            f"{max(4 * self.refresh_interval, 60.0):g}s")
        if self.mode == "swarm" and self.swarm.manager is None:
            problems.append("swarm.manager: mode swarm needs the name of the nodes[] entry "
                            "whose engine is a swarm manager, e.g. swarm: {manager: n1}")
        elif self.swarm.manager is not None and self.swarm.manager not in names:
            problems.append(f"swarm.manager: unknown node {self.swarm.manager!r}; use one of "
                            f"the configured nodes {names}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def plan_age_limit(self) -> float:
        """Oldest plan (seconds since the exporter assessed it) the webhook acts on: a plan
        normally is at most one refresh interval plus one refresh old; older means the
        exporter's refresh is stuck or its clock is off."""
        age = self.migration.max_plan_age
        return age if age is not None else max(4 * self.refresh_interval, MIN_PLAN_AGE)

    def service(self, name: str) -> ServiceConfig:
        """Settings of a service; undeclared services get the defaults."""
        return self.services.get(name) or ServiceConfig()


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of `loc`, for 'unknown field' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            current = None
            continue
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
    return sorted(getattr(current, "model_fields", {}))


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _location(loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(Config, loc)
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: unknown field{hint}")
        elif err["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        elif err["type"] == "too_short":
            need = err.get("ctx", {}).get("min_length", 1)
            problems.append(f"{where}: needs at least {need} entry (got {err.get('input')!r})")
        elif err["type"] == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern", "")
            allowed = (
                "lowercase letters, digits and _, starting with a letter"
                if pattern.startswith("^[a-z]")
                else "letters, digits, '.', '_' and '-', starting with a letter or digit"
            )
            problems.append(f"{where}: use {allowed} (got {err.get('input')!r})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg} (got {err.get('input')!r})")
    return problems


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply PRESHIFT_* overrides to `raw` in place; return the names applied."""
    applied = []
    top = set(Config.model_fields)
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_OVERRIDES:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__")]
        if not path[0] or path[0] not in top:
            continue  # other parts of Preshift (webhook secrets, ...) use the prefix too
        target = raw
        for part in path[:-1]:
            node = target.get(part)
            if not isinstance(node, dict):
                node = {}
                target[part] = node
            target = node
        target[path[-1]] = _parse_scalar(environ[key])
        applied.append(key)
    return applied


def parse_config(raw: Any, *, source: str = "configuration") -> Config:
    """Validate an already-parsed mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of fields "
            "(nodes:, services:, signals:, ...)"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid", _describe(exc)) from None


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate the YAML file at `path`."""
    environ = os.environ if environ is None else environ
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; pass --config PATH (see config.example.yaml)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read it: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if isinstance(raw, dict):
        apply_env_overrides(raw, environ)
    return parse_config(raw, source=str(p))


def read_secret(env: Mapping[str, str], var: str, file: Path | None = None) -> str | None:
    """A secret from the environment variable `var`, else from `file`; never logged."""
    if env.get(var):
        return env[var].strip()
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret file {file}: {exc.strerror}") from None
    return None
