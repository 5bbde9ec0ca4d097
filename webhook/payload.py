"""Alertmanager's webhook payload, version "4", validated once at the edge (habit 13).

`parse_notification(body, content_type)` turns the raw request body into a frozen
`Notification` or raises `PayloadError` with an HTTP status and a list of problems, each
naming the field (`alerts.0.fingerprint: required field is missing`). Below this module the
webhook trusts the types.

Required: `version`, `status`, `alerts` and, in each alert, `status`, `labels`, `startsAt`
and `fingerprint` (what the journal's deduplication and the executor need). Alertmanager
always sends the other fields; they default to empty here so a hand-written `curl` test is
accepted. Unknown fields (e.g. `notification_reason`, Alertmanager ≥ 0.34) are ignored.

Hostile input is a 400 too, never a 500 (tests/unit/test_webhook_hostile.py): a string kept
(labels, annotations, groupKey, ...) with a lone surrogate, JSON nested too deeply for the
parser; an answer lists at most MAX_PROBLEMS problems and never echoes more than ~80
characters of a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from preshift.act import journal

SUPPORTED_VERSIONS = ("4",)
#: RFC 3339 as Alertmanager writes it (Go's time.RFC3339Nano): fractions of any length.
#: ASCII digits only and fullmatch: Python's \d also matches e.g. Arabic-Indic digits, and
#: its $ also matches before a final newline.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
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
    if not _RFC3339.fullmatch(v):
        raise ValueError("must be an RFC 3339 time such as 2024-05-01T12:00:00.123Z")
    return v


def _unicode(v: str) -> str:
    """JSON can carry a lone surrogate (`"\\ud800"`); it is not text and cannot be stored
    (SQLite takes UTF-8): refuse it here, naming the field, instead of failing at the journal."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"must be valid Unicode text: a lone surrogate {v[exc.start]!r} at position "
            f"{exc.start} (escape a character outside the BMP as a surrogate pair)"
        ) from None
    return v


def _whole_number(v: Any) -> Any:
    # pydantic's lax int would take true and "5"; Alertmanager sends a JSON integer
    if isinstance(v, (bool, str, bytes)):
        raise ValueError("must be a whole number (a JSON integer), 0 or more")
    return v


#: Every string the webhook keeps (journal, metrics, logs) is valid Unicode.
Text = Annotated[str, AfterValidator(_unicode)]
LabelSet = dict[Text, Text]


class _Model(BaseModel):
    # extra="ignore": Alertmanager adds fields over time (notification_reason in 0.34)
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class Alert(_Model):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: LabelSet = {}
    startsAt: str
    endsAt: str = "0001-01-01T00:00:00Z"  # Alertmanager's "not ended" for firing alerts
    generatorURL: Text = ""
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
    groupKey: Text = ""
    truncatedAlerts: Annotated[int, BeforeValidator(_whole_number)] = Field(
        0, ge=0, le=2**63 - 1)
    status: Literal["firing", "resolved"]
    receiver: Text = ""
    groupLabels: LabelSet = {}
    commonLabels: LabelSet = {}
    commonAnnotations: LabelSet = {}
    externalURL: Text = ""
    notification_reason: Text | None = None
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
    "string_unicode": "must be a string of valid Unicode text",
    "dict_type": "must be an object of string values",
    "list_type": "must be a list",
    "int_type": "must be a whole number (a JSON integer)",
    "int_parsing": "must be a whole number (a JSON integer)",
    "int_parsing_size": "must be a whole number from 0 to 2^63-1",
    "int_from_float": "must be a whole number (a JSON integer)",
    "finite_number": "must be a whole number (a JSON integer)",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


#: Problems listed in one answer: the sender fixes the first ones; a megabyte of bad alerts
#: does not become a larger answer.
MAX_PROBLEMS = 50


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


def _where(loc: tuple[Any, ...]) -> str:
    # A label name comes from the sender: shown as is when it looks like one (Prometheus'
    # [a-zA-Z_][a-zA-Z0-9_]*), else quoted and cut, so the path stays one unambiguous line.
    return ".".join(
        str(p) if isinstance(p, int) or _PLAIN_KEY.fullmatch(str(p)) else short(p)
        for p in loc
    ) or "(top level)"


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
            problems.append(f"{where}: must be {expected} (got {short(got)})")
        elif kind == "string_pattern_mismatch" and where.endswith("fingerprint"):
            problems.append(
                f"{where}: must be Alertmanager's alert fingerprint, 1-64 hex digits "
                f"(got {short(got)})"
            )
        elif kind in _HINTS:
            problems.append(f"{where}: {_HINTS[kind]} (got {type(got).__name__})")
        else:
            # pydantic's own words, put as what the field must be
            msg = str(err["msg"]).removeprefix("Value error, ").replace(
                "Input should be", "must be", 1)
            problems.append(f"{where}: {msg} (got {short(got)})")
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS],
                    f"(top level): {more} more problems not listed; fix the ones above first"]
    return problems


def short(value: Any) -> str:
    """A bounded repr: an answer never echoes a megabyte of input, nor recurses through a
    deeply nested one (a container is shown by its type and size only)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)}"
    text = repr(value[:100] if isinstance(value, str) else value)
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
            415, f"Content-Type must be application/json (got {short(content_type or 'none')}); "
            "Alertmanager's webhook_config sends that", reason="content_type",
        )
    try:
        return _parse(body)
    except RecursionError:
        # json.loads (and repr) recurse once per level: `[[[[...` 100,000 deep must be a 400,
        # not a 500. Alertmanager's payload is 4 levels deep.
        raise PayloadError(
            400, "the body is not valid JSON: it is nested too deeply (an Alertmanager "
            "notification is 4 levels deep)", reason="not_json",
        ) from None


def _parse(body: bytes) -> Notification:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        why = str(exc)
        if "integer string conversion" in why:  # Python's own advice is not the sender's fix
            why = "a number has more than 4300 digits"
        raise PayloadError(400, f"the body is not valid JSON: {why}", reason="not_json") from None
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
            400, f"unsupported payload version {short(version)}; this webhook supports version "
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
