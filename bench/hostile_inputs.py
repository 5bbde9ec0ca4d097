"""Hostile input for the webhook: the value pools and a fast seeded fuzzer, in one place.

Shared by `tests/unit/test_webhook_hostile.py` (its hypothesis strategies draw from these
pools) and `bench/bench_hostile.py` (100,000 requests from `Fuzzer(seed)`, which hypothesis'
`.example()` is far too slow for). Standard library only, so the benchmark's client needs
nothing else; importable as `bench.hostile_inputs` (tests) or `hostile_inputs` (bench/).

The rule that makes "0 migrations started" a meaningful check: no hostile request names the
planned component (`PLANNED`, "web") exactly in the `component` or `service` label of an
alert. Near misses (`"web\\n"`, `"WEB"`, `"w\\u0435b"` with a Cyrillic e, zero-width or
right-to-left marks, ...) are there on purpose: a layer that trimmed, case-folded or
normalised labels would turn them into "web" and start a migration.

Shell payloads touch files under a canary directory (`{canary}` in the pools): if any of
them ever reached a shell, the benchmark finds the file afterwards.
"""

from __future__ import annotations

import base64
import json
import random
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PLANNED = "web"  # the component the plan moves; never named exactly by a hostile alert
GOOD = "<a valid credential>"  # `Fuzzer.headers(auth=GOOD)`: one of `good_auth(token)`
ALERTS_PATH = "/api/v1/alerts"

# --- value pools ----------------------------------------------------------------------------

#: `{canary}` is replaced by a directory of the caller's (see `label_values`).
SHELL = (
    "$(touch {canary}/dollar)", "`touch {canary}/backtick`", "; touch {canary}/semicolon",
    "| touch {canary}/pipe", "&& touch {canary}/and", "|| touch {canary}/or",
    "\ntouch {canary}/newline\n", "web; touch {canary}/web-semicolon", "web$(touch {canary}/w)",
    "'$(touch {canary}/quoted)'", '"; touch {canary}/dq; "', "$IFS", "${{PATH}}", "$HOME",
    "> /etc/passwd", "< /etc/shadow", "<(id)", "*", "~root", "{{a,b}}", "-rf", "--help",
    "-oProxyCommand=touch {canary}/ssh", "&", "!!", "\\", "'", '"', "\r\nX-Injected: 1",
)
PATH_TRICKS = (
    "../../etc/passwd", "/etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2F..%2F",
    "..\\..\\windows\\win.ini", "file:///etc/passwd", "/proc/self/environ", "/dev/zero",
    "\\\\server\\share", "web/../web", "./web", "web/", "~/.ssh/id_rsa", "/", ".", "..",
    "unix:///var/run/docker.sock", "/var/run/docker.sock", "%00", "web%00", "....//....//",
)
OTHER_INJECTIONS = (
    "'; DROP TABLE notifications; --", '" OR 1=1 --', "%s%s%s%n", "{0.__class__}",
    "{{7*7}}", "<script>alert(1)</script>", "\ndisable server be_web/web-1\n",
    "set server be_web/web-1 state maint", "${jndi:ldap://127.0.0.1/x}", "null", "true", "0",
)
UNICODE_ODDITIES = (
    "\x00", "a\x00b", "\ud800", "\udfff", "a\udc80b", "\ud83d", "\u202eevil", "\u200f",
    "\u200b", "\ufeff", "\ufffe", "\uffff", "\U0010ffff", "\U0001f4a9", "e" + "\u0301" * 200,
    "\u0000\u0001\u001f\u007f", "\x85", "\u2028\u2029", "ℌ𝔢𝔩𝔩𝔬", "١٢٣", "Ω", "ß", "İ",
)
#: "web" as it could be mangled; none of these is "web".
NEAR_MISSES = (
    "WEB", "Web", " web", "web ", "web\n", "\tweb", "web\x00", "\x00web", "web\u200b",
    "\u202eweb", "\ufeffweb", "w\u0435b", "ｗｅｂ", "we\u0301b", "web\r", "web\\", "web-",
    "web.", "web,api", "web*", "we", "webb", "%77eb", "web\ud800",
)
SMALL_INTS = (-1, 0, 1, 2**31, 2**63, 2**64, -(2**63), 10**30)
ODD_FLOATS = (0.5, -0.0, 1e308, -1e308, 1e-308, float("inf"), float("nan"))
BAD_VERSIONS = ("3", "5", 4, "04", "4 ", " 4", "4\n", "４", "", None, [], {}, "v4", 4.0, "4.0")
BAD_STATUSES = ("FIRING", "Resolved", "pending", "", None, 1, "firing ", "firing\n",
                "resolved\x00", "firing\u200b", ["firing"], {"firing": True})
BAD_FINGERPRINTS = ("", "xyz", "g" * 16, "a" * 65, "c0ffee\n", "c0ffee ", " c0ffee", "0x1f",
                    "ａｂ", "٣", None, 12, "c0ffee\x00")
BAD_TIMES = ("", "yesterday", "2026-05-01", "2026-05-01T12:00:00", "2026-05-01T12:00:00Z\n",
             "٢٠٢٦-٠٥-٠١T12:00:00Z", "２０２６-05-01T12:00:00Z", "2026-05-01T12:00:00+0000",
             None, 1714564800, "0001-01-01T00:00:00Z ")
#: Valid, so that the body gets past the checks in front of the one under test.
GOOD_TIMES = ("2026-05-01T12:00:00.123456789Z", "2026-05-01T12:00:00Z", "0001-01-01T00:00:00Z",
              "2026-05-01 12:00:00+02:00", "9999-99-99T99:99:99.9z")

JSON_CONTENT_TYPES = (
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "application/json; charset=latin-1", "application/json;charset=utf-16",
    "application/vnd.alertmanager+json", "application/problem+json", " application/json ",
)
OTHER_CONTENT_TYPES = (
    None, "", "text/plain", "text/json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz", "application/jsonx", "application/xml",
    "json", "*/*", "application/", "application/json\x00", "text/html; charset=utf-8",
)
#: Bad `Authorization` headers; `bad_auth(token)` adds ones built from the real token.
BAD_AUTH = (
    None, "", "Bearer", "Bearer ", "bearer wrong", "Token x", "Basic !!!", "Basic",
    "Basic " + base64.b64encode(b"alertmanager:wrong").decode(), "Basic Og==",
    "Bearer " + "A" * 4000, "Negotiate xyz", "Bearer $(id)", "Bearer ../../etc/passwd",
)
#: Migration ids and requests for the control API (quoted into the path by the caller).
HOSTILE_IDS = (
    "aaaa0001", "..", ".", "../../etc/passwd", "%2e%2e", "a" * 5000, "$(id)", "`id`", "\x00",
    "a\x00b", "\ud800", "web", "web;ls", "*", "%", "é", "\u202e", "1 OR 1=1", "'", '"',
    "abort", "-1", "0", " ", "\n",
)
HOSTILE_VERBS = ("approve", "abort", "rollback", "promote", "APPROVE", "", "..", "%00",
                 "abort\n", "abort/", "approve;rollback")
QUERY_NAMES = ("active", "component", "limit", "unhandled", "since", "", "limit[]", "a" * 300)
QUERY_VALUES = ("true", "false", "1", "0", "yes", "no", "TRUE", "maybe", "", "2", "-1", "1001",
                "999999999999999999999999", "１", "1e3", "0x10", "web", "web\n", "web%0A",
                "../etc", "$(id)", "\x00", "\ud800", "é" * 100, "a" * 10000)
HOSTILE_PATHS = ("/api/v1/alerts/", "/api/v1//alerts", "/api/v1/alerts/../alerts",
                 "/api/v1/%61lerts", "/API/V1/ALERTS", "/api/v1/alerts%00",
                 "/../../etc/passwd", "/api/v1/alerts;x=1", "/api/v2/alerts")


def label_values(canary: str) -> tuple[str, ...]:
    """Every hostile label value, the shell payloads aimed at files under `canary`."""
    return (*[s.format(canary=canary) for s in SHELL], *PATH_TRICKS, *OTHER_INJECTIONS,
            *UNICODE_ODDITIES, *NEAR_MISSES)


def bad_auth(token: str) -> tuple[str | None, ...]:
    return (*BAD_AUTH, f"Bearer {token}x", f"Bearer {token[:-1]}", f"Basic {token}",
            "Basic " + base64.b64encode(token.encode()).decode(), f"Bearer{token}",
            f"Bearer {token.upper()}", f"Bearer {token} {token}")


def good_auth(token: str) -> tuple[str, ...]:
    """Valid headers in the spellings the checker allows (scheme in any case, padding)."""
    return (f"Bearer {token}", f"bearer {token}", f"BEARER   {token}  ")


# --- payloads -------------------------------------------------------------------------------


def alert(component: str, fingerprint: str, *, status: str = "firing",
          starts_at: str = "2026-05-01T12:00:00.123456789Z",
          labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One Alertmanager v4 alert for `component` (the shape Alertmanager sends)."""
    return {
        "status": status,
        "labels": {"alertname": "PreshiftFootprintDiscrepancy", "component": component,
                   "preshift_action": "migrate", "severity": "warning", **(labels or {})},
        "annotations": {"summary": f"Replicas of {component} are not where Preshift wants them"},
        "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x", "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager v4 notification around `alerts`."""
    return {
        "version": "4", "groupKey": '{}:{alertname="PreshiftFootprintDiscrepancy"}',
        "truncatedAlerts": 0, "status": status, "receiver": "preshift-webhook",
        "groupLabels": {"alertname": "PreshiftFootprintDiscrepancy"}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "notification_reason": "new_alerts", "alerts": list(alerts),
    }


def component_of(labels: Any) -> str | None:
    """The component an alert's labels name, as `preshift.act.intake.component_of` reads it
    (None when `labels` is not an object of the usual shape)."""
    if not isinstance(labels, Mapping):
        return None
    value = labels.get("component") or labels.get("service")
    return value if isinstance(value, str) else None


def names_planned(doc: Any) -> bool:
    """True when a JSON document has an alert whose labels name `PLANNED` exactly."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("alerts"), list):
        return False
    return any(isinstance(a, Mapping) and component_of(a.get("labels")) == PLANNED
               for a in doc["alerts"])


def dumps(doc: Any, style: int = 0) -> bytes:
    """JSON bytes in one of several encodings: 0 ASCII escapes (lone surrogates become
    `\\ud800`), 1 UTF-8 with raw characters (lone surrogates as invalid bytes), 2 UTF-16,
    3 with a UTF-8 byte order mark, 4 pretty-printed."""
    if style == 1:
        return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if style == 2:
        return json.dumps(doc).encode("utf-16")
    if style == 3:
        return b"\xef\xbb\xbf" + json.dumps(doc).encode()
    if style == 4:
        return json.dumps(doc, indent=2).encode()
    return json.dumps(doc).encode()


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]", closed: bool = True) -> bytes:
    """`[[[...]]]` `depth` levels deep (or `{"a":{"a":...`), closed or not."""
    return opener * depth + (b"1" + closer * depth if closed else b"")


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request: `path` is percent-encoded ASCII, header values are latin-1 safe."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    kind: str = ""  # what the generator meant to test, for the figures
    chunked: bool = False  # send the body with Transfer-Encoding: chunked (no length)
    alerts_sent: int = 0  # alerts in the body when it is a well-formed notification
    #: what the generator knows: "auth_ok" (a valid credential), "json_ct" (a JSON type)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:  # bounded: a failing example's body may be a megabyte
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return (f"Request({self.method} {self.path[:200]!r}, headers={dict(self.headers)!r}, "
                f"body[{len(self.body)}]={body!r}, kind={self.kind!r}, extra={self.extra!r})")


def quote_path_part(value: str) -> str:
    """Percent-encode a path segment, lone surrogates included (as CESU-8 bytes)."""
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")


def query_string(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{quote_path_part(k)}={quote_path_part(v)}" for k, v in pairs)


def header_safe(value: str) -> str:
    """What can go into an HTTP header value: latin-1, no CR/LF/NUL."""
    return "".join(c if 0x20 <= ord(c) <= 0xFF and c != "\x7f" else "?" for c in value)


class Fuzzer:
    """A fast seeded generator of hostile requests: the same seed, the same requests.

    `token` is the webhook's bearer token (most requests are authenticated, so that the body
    is what gets tested); `max_body` the webhook's limit (some bodies go past it); `canary` the
    directory the shell payloads would touch files in.
    """

    #: (kind, weight): the request mix.
    MIX = (("mutated_v4", 340), ("hostile_labels_v4", 200), ("random_json", 100),
           ("raw_bytes", 80), ("deep_nesting", 30), ("oversized", 3), ("content_type", 50),
           ("bad_auth", 60), ("method_path", 30), ("control", 107))

    def __init__(self, seed: int, token: str, max_body: int, canary: str) -> None:
        self.r = random.Random(seed)
        self.token = token
        self.max_body = max_body
        self.labels = label_values(canary)
        self.components = (*NEAR_MISSES, *[s.format(canary=canary) for s in SHELL],
                           *PATH_TRICKS, *UNICODE_ODDITIES, "", "api", "db")
        self.bad_auth = bad_auth(token)
        self.good_auth = good_auth(token)
        self._kinds = [k for k, _ in self.MIX]
        self._weights = [w for _, w in self.MIX]
        self.n = 0

    # building blocks ----------------------------------------------------------------------

    def text(self) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.6:
            return r.choice(self.labels)
        if pick < 0.75:
            return "".join(chr(r.choice((r.randrange(0x20, 0x7f), r.randrange(0, 0x110000))))
                           for _ in range(r.randrange(0, 24)))
        if pick < 0.85:
            return r.choice(self.labels) + r.choice(self.labels)
        if pick < 0.995:
            return r.choice("aZ$`;./\u0301\x00") * r.choice((100, 1000, 10_000))
        return "A" * 100_000

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, biased to the odd ones."""
        r = self.r
        pick = r.random()
        if depth > 3 or pick < 0.35:
            return self.text()
        if pick < 0.45:
            return r.choice(SMALL_INTS)
        if pick < 0.5:
            return r.choice(ODD_FLOATS)
        if pick < 0.55:
            return r.choice((None, True, False))
        if pick < 0.78:
            return [self.value(depth + 1) for _ in range(r.randrange(0, 5))]
        return {self.text()[:200]: self.value(depth + 1) for _ in range(r.randrange(0, 5))}

    def fingerprint(self) -> str:
        return f"{self.r.getrandbits(64):016x}"

    def hostile_alert(self) -> dict[str, Any]:
        """A well-formed alert whose labels are all hostile (never naming PLANNED)."""
        r = self.r
        labels = {self.text()[:100]: self.text() for _ in range(r.randrange(0, 4))}
        labels["alertname"] = r.choice(self.labels)
        comp = r.choice(self.components)
        if r.random() < 0.8:
            labels["component"] = comp
        else:
            labels.pop("component", None)
            labels["service"] = comp
        if component_of(labels) == PLANNED:  # a random key may have been "component"
            labels["component"] = r.choice(NEAR_MISSES)
        return alert(comp, self.fingerprint(), status=r.choice(("firing", "resolved")),
                     starts_at=r.choice(GOOD_TIMES), labels=labels) | {"labels": labels}

    def mutate(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Remove, add or mistype fields of a notification or of its alerts."""
        r = self.r
        for _ in range(r.randrange(1, 4)):
            target = doc
            if doc.get("alerts") and isinstance(doc["alerts"], list) and r.random() < 0.6:
                a = r.choice(doc["alerts"])
                if isinstance(a, dict):
                    target = a
            op = r.random()
            keys = list(target)
            if op < 0.25 and keys:
                del target[r.choice(keys)]
            elif op < 0.45:
                target[self.text()[:100]] = self.value()
            elif op < 0.7 and keys:
                target[r.choice(keys)] = self.value()
            elif op < 0.8:
                doc["version"] = r.choice(BAD_VERSIONS)
            elif op < 0.9:
                target["status"] = r.choice(BAD_STATUSES)
            elif op < 0.95 and target is not doc:
                target["fingerprint"] = r.choice(BAD_FINGERPRINTS)
            elif target is not doc:
                target[r.choice(("startsAt", "endsAt"))] = r.choice(BAD_TIMES)
        return doc

    def v4(self, n_alerts: int | None = None) -> dict[str, Any]:
        r = self.r
        n = r.choice((0, 1, 1, 1, 2, 3, 10)) if n_alerts is None else n_alerts
        doc = notification(*(self.hostile_alert() for _ in range(n)),
                           status=r.choice(("firing", "resolved")))
        for key in ("groupKey", "receiver", "externalURL"):
            if r.random() < 0.3:
                doc[key] = self.text()
        if r.random() < 0.3:
            doc["commonLabels"] = {self.text()[:50]: self.text()}
        return doc

    def headers(self, content_type: str | None = "application/json",
                auth: str | None = GOOD) -> dict[str, str]:
        h: dict[str, str] = {}
        a = self.r.choice(self.good_auth) if auth == GOOD else auth
        if a is not None:
            h["Authorization"] = header_safe(a)
        if content_type is not None:
            h["Content-Type"] = header_safe(content_type)
        return h

    # requests -----------------------------------------------------------------------------

    def request(self) -> Request:
        """The next hostile request."""
        self.n += 1
        kind = self.r.choices(self._kinds, self._weights)[0]
        req = getattr(self, f"_{kind}")()
        return req

    def requests(self, n: int) -> list[Request]:
        return [self.request() for _ in range(n)]

    def _post(self, kind: str, body: bytes, *, content_type: str | None = "application/json",
              auth: str | None = GOOD, alerts_sent: int = 0) -> Request:
        chunked = self.r.random() < 0.05
        return Request("POST", ALERTS_PATH, self.headers(content_type, auth), body, kind,
                       chunked=chunked, alerts_sent=alerts_sent,
                       extra={"auth_ok": auth == GOOD,
                              "json_ct": content_type in JSON_CONTENT_TYPES})

    def _mutated_v4(self) -> Request:
        doc = self.mutate(self.v4())
        return self._post("mutated_v4", dumps(doc, self.r.choice((0, 0, 0, 1, 4))))

    def _hostile_labels_v4(self) -> Request:
        doc = self.v4()
        n = len(doc["alerts"])
        return self._post("hostile_labels_v4", dumps(doc, self.r.choice((0, 0, 1, 2, 3))),
                          alerts_sent=n)

    def _random_json(self) -> Request:
        return self._post("random_json", dumps(self.value(), self.r.choice((0, 1))))

    def _raw_bytes(self) -> Request:
        r = self.r
        base = bytearray(dumps(self.v4(1)))
        pick = r.random()
        if pick < 0.25:
            body = bytes(base[:r.randrange(0, len(base))])  # truncated
        elif pick < 0.5:
            for _ in range(r.randrange(1, 8)):
                base[r.randrange(len(base))] = r.randrange(256)
            body = bytes(base)
        elif pick < 0.65:
            body = bytes(r.getrandbits(8) for _ in range(r.randrange(0, 2000)))
        elif pick < 0.75:
            body = bytes(base).replace(b'"version": "4"', b'"version": "4", "version": "3"', 1)
        elif pick < 0.85:
            body = r.choice((b"", b"null", b"[]", b"{}", b'"x"', b"0", b"NaN", b"-Infinity",
                             b"1" * 5000, b"{" * 10, b"\xff\xfe\x00", b"\x00" * 100,
                             b'{"version": "4"} trailing', b'{"a": 1e999999}'))
        else:
            body = bytes(base) + r.choice((b"\x00", b" garbage", b"\n{}", b"]"))
        return self._post("raw_bytes", body)

    def _deep_nesting(self) -> Request:
        r = self.r
        depth = r.choice((500, 990, 1000, 5000, 100_000))
        opener, closer = r.choice(((b"[", b"]"), (b'{"a":', b"}")))
        inner = nested(depth, opener, closer, closed=r.random() < 0.7)
        pick = r.random()
        if pick < 0.5:
            body = inner
        else:  # inside a field of an otherwise good notification
            field_ = r.choice((b'"alerts"', b'"groupLabels"', b'"extra"', b'"status"'))
            body = (b'{"version": "4", "status": "firing", ' + field_ + b": " + inner
                    + (b', "alerts": []}' if field_ != b'"alerts"' else b"}"))
        return self._post("deep_nesting", body)

    def _oversized(self) -> Request:
        r = self.r
        size = self.max_body + r.choice((1, 2, 1000, self.max_body))
        body = b'{"version": "4", "pad": "' + b"A" * size + b'"}'
        return self._post("oversized", body)

    def _content_type(self) -> Request:
        r = self.r
        ctype = r.choice(OTHER_CONTENT_TYPES + JSON_CONTENT_TYPES)
        doc = self.v4(1)
        return self._post("content_type", dumps(doc), content_type=ctype,
                          alerts_sent=1 if ctype in JSON_CONTENT_TYPES else 0)

    def _bad_auth(self) -> Request:
        # a body that would be accepted with a good token: the 401 must come first
        doc = self.v4(1)
        return self._post("bad_auth", dumps(doc), auth=self.r.choice(self.bad_auth))

    def _method_path(self) -> Request:
        r = self.r
        body = dumps(self.v4(1))
        extra = {"auth_ok": True, "json_ct": True}
        if r.random() < 0.5:
            method = r.choice(("GET", "PUT", "DELETE", "PATCH", "HEAD"))
            return Request(method, ALERTS_PATH, self.headers(), body, "method_path", extra=extra)
        return Request("POST", r.choice(HOSTILE_PATHS), self.headers(), body, "method_path",
                       extra=extra)

    def _control(self) -> Request:
        r = self.r
        auth = GOOD if r.random() < 0.85 else r.choice(self.bad_auth)
        headers = self.headers(None, auth)
        extra = {"auth_ok": auth == GOOD}
        pick = r.random()
        mid = quote_path_part(r.choice((*HOSTILE_IDS, self.text()[:300])))
        if pick < 0.45:
            verb = quote_path_part(r.choice(HOSTILE_VERBS))
            path = f"/api/v1/migrations/{mid}/{verb}"
            return Request("POST", path, headers, b"", "control", extra=extra)
        if pick < 0.6:
            path = f"/api/v1/migrations/{mid}"
            return Request("GET", path, headers, b"", "control", extra=extra)
        path = r.choice(("/api/v1/migrations", "/api/v1/notifications", "/-/ready",
                         "/-/healthy"))
        pairs = [(r.choice(QUERY_NAMES), r.choice(QUERY_VALUES))
                 for _ in range(r.choice((0, 1, 2, 3, 50)))]
        return Request("GET", f"{path}?{query_string(pairs)}", headers, b"", "control",
                       extra=extra)


# --- what the journal makes of it -----------------------------------------------------------


@dataclass
class IntakeReplay:
    """What `preshift.act.intake.Intake` did with every journaled notification."""

    notifications: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    migrations: list[Any] = field(default_factory=list)


def replay_intake(journal: Any, config: Any, runtime: Any, plans: Any,
                  clock: Callable[[], float]) -> IntakeReplay:
    """Run the real Intake over every notification in `journal` (a preshift Journal), oldest
    first, as the executor would (without marking them handled: the check must not change
    what it checks). Exceptions propagate: a crash on hostile data is a finding."""
    from preshift.act.intake import Intake

    intake = Intake(config, journal, runtime, plans, clock=clock)
    before = {m.id for m in journal.migrations(limit=1_000_000)}
    out = IntakeReplay()
    for n in reversed(journal.notifications(limit=10_000_000)):  # oldest first
        out.notifications += 1
        outcome = intake.handle(n)
        out.outcomes[outcome.split(":", 1)[0]] += 1
    out.migrations = [m for m in journal.migrations(limit=1_000_000) if m.id not in before]
    return out


def hostile_count(requests: Sequence[Request]) -> Counter[str]:
    return Counter(r.kind for r in requests)
