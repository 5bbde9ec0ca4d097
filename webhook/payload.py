"""Alertmanager's webhook payload, version "4", validated once at the edge (habit 13).

`parse_notification(body, content_type)` turns the raw request body into a frozen
`Notification` or raises `PayloadError` with an HTTP status and a list of problems, each
naming the field (`alerts.0.fingerprint: required field is missing`). Below this module the
webhook trusts the types.

Required: `version`, `status`, `alerts` and, in each alert, `status`, `labels`, `startsAt`
and `fingerprint` (what the journal's deduplication and the executor need). Alertmanager
always sends the other fields; they default to empty here so a hand-written `curl` test is
accepted. Unknown fields (e.g. `notification_reason`, Alertmanager ≥ 0.34) are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from preshift.act import journal

SUPPORTED_VERSIONS = ("4",)
#: RFC 3339 as Alertmanager writes it (Go's time.RFC3339Nano): fractions of any length.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
#: Labels that name the component to act on, in order of preference.
COMPONENT_LABELS = ("component", "service")


class PayloadError(Exception):
    """The body is not an acceptable notification; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None,
                 reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []
        self.reason = reason  # a bounded label value for preshift_webhook_..._rejected_total

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.problems:
            out["problems"] = self.problems
        return out


def _rfc3339(v: str) -> str:
    if not _RFC3339.match(v):
        raise ValueError("must be an RFC 3339 time such as 2024-05-01T12:00:00.123Z")
    return v


class _Model(BaseModel):
    # extra="ignore": Alertmanager adds fields over time (notification_reason in 0.34)
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class Alert(_Model):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: str
    endsAt: str = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended" for firing alerts
    generatorURL: str = ""
    fingerprint: str = Field(pattern=r"^[0-9a-fA-F]{1,64}$")

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _times(cls, v: str) -> str:
        return _rfc3339(v)

    @property
    def component(self) -> str:
        """The component the alert is about ('' when no component/service label)."""
        for key in COMPONENT_LABELS:
            if self.labels.get(key):
                return self.labels[key]
        return ""


class Notification(_Model):
    """One webhook notification (one POST)."""

    version: str
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""
    notification_reason: str | None = None
    alerts: list[Alert]

    def journal_items(self) -> list[journal.Notification]:
        """One journal row per alert (the journal deduplicates on status+fingerprint+startsAt)."""
        return [
            journal.Notification(
                status=a.status,
                alertname=a.labels.get("alertname", ""),
                component=a.component,
                fingerprint=a.fingerprint,
                starts_at=a.startsAt,
                labels=a.labels,
                group_key=self.groupKey,
            )
            for a in self.alerts
        ]


# error messages ----------------------------------------------------------------------

_HINTS = {
    "missing": "required field is missing",
    "string_type": "must be a string",
    "dict_type": "must be an object of string values",
    "list_type": "must be a list",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "model_type": "must be an object",
}


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def describe(exc: ValidationError) -> list[str]:
    """One line per problem: `field.path: what is wrong (got …)`, the fix implied."""
    problems = []
    for err in exc.errors(include_url=False):
        where = _where(tuple(err["loc"]))
        kind = err["type"]
        got = err.get("input")
        if kind == "missing":
            problems.append(f"{where}: {_HINTS['missing']}")
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            problems.append(f"{where}: must be {expected} (got {got!r})")
        elif kind == "string_pattern_mismatch" and where.endswith("fingerprint"):
            problems.append(
                f"{where}: must be Alertmanager's alert fingerprint, 1-64 hex digits "
                f"(got {got!r})"
            )
        elif kind in _HINTS:
            problems.append(f"{where}: {_HINTS[kind]} (got {type(got).__name__})")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {msg} (got {_short(got)})")
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# parsing -----------------------------------------------------------------------------

def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and
                                          mime.endswith("+json"))


def parse_notification(body: bytes, content_type: str | None) -> Notification:
    """Validate a request body; raises PayloadError (415, 400) naming what to fix."""
    if not _is_json(content_type):
        raise PayloadError(
            415, f"Content-Type must be application/json (got {content_type or 'none'!r}); "
            "Alertmanager's webhook_config sends that", reason="content_type",
        )
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(400, f"the body is not valid JSON: {exc}", reason="not_json") from None
    if not isinstance(raw, Mapping):
        raise PayloadError(
            400, "the body must be a JSON object: an Alertmanager webhook notification "
            f"(got a JSON {type(raw).__name__})", reason="invalid",
        )
    version = raw.get("version")
    if version is not None and version not in SUPPORTED_VERSIONS:
        # Before the field checks: an old/new payload format would otherwise give a list of
        # confusing field errors instead of the one thing to fix.
        raise PayloadError(
            400, f"unsupported payload version {version!r}; this webhook supports version "
            f"{', '.join(repr(v) for v in SUPPORTED_VERSIONS)} (Alertmanager's webhook_config)",
            reason="version",
        )
    try:
        return Notification.model_validate(raw)
    except ValidationError as exc:
        raise PayloadError(
            400, "the payload is not a valid Alertmanager webhook notification (version 4); "
            "fix the fields listed in problems", describe(exc), reason="invalid",
        ) from None
