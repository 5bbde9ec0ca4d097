"""Durations as people write them ("15s", "5m", "1h30m", "250ms") or as plain seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Return seconds for `value`; raise ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 5m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"{value!r} is not a duration; write e.g. 250ms, 15s, 5m, 1h30m or seconds"
                ) from None
    else:
        raise ValueError("expected a duration such as 15s, 5m, 1h or a number of seconds")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError("a duration must be a finite number of seconds ≥ 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form: 90 → '1m30s', 0.25 → '250ms'."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"
