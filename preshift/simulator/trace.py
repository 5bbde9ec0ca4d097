"""Replay traces: a CSV file read once, when the scenario is validated, into plain tuples.

The maths in `shapes.py` then only looks values up; no file is touched while serving.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Trace:
    """A piecewise-linear series over relative time (seconds from the first row)."""

    times: tuple[float, ...]  # strictly increasing, times[0] == 0
    values: tuple[float, ...]
    cumulative: tuple[float, ...]  # integral of the series from 0 to times[i]
    period: float  # > 0 when the trace loops (the last point is the wrap back to values[0])


def _parse_time(text: str) -> float:
    """Seconds as a number (relative or epoch) or an ISO-8601 timestamp."""
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        # Only differences matter; UTC keeps a DST change from bending the timing.
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def build_trace(points: list[tuple[float, float]], *, loop: bool) -> Trace:
    """Trace from (absolute time, value) points in file order; raises ValueError if unusable."""
    if not points:
        raise ValueError("the trace has no rows")
    t0 = points[0][0]
    times = [t - t0 for t, _ in points]
    values = [v for _, v in points]
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise ValueError(f"timestamps must increase; row {i + 1} is not after row {i}")
    period = 0.0
    if loop and len(times) > 1:
        # The last sample holds for one more step while it slides back to the first value,
        # so a looping trace stays continuous and keeps its natural length.
        times.append(times[-1] + (times[-1] - times[-2]))
        values.append(values[0])
        period = times[-1]
    cumulative = [0.0]
    for i in range(1, len(times)):
        step = (values[i - 1] + values[i]) / 2 * (times[i] - times[i - 1])
        cumulative.append(cumulative[-1] + step)
    return Trace(tuple(times), tuple(values), tuple(cumulative), period)


def read_trace(path: Path, *, time_column: str, value_column: str, loop: bool) -> Trace:
    """Read a CSV trace; raises ValueError naming the file, row and column on bad content."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for column in (time_column, value_column):
                if column not in header:
                    has = ", ".join(header) or "nothing"
                    raise ValueError(f"{path}: no column {column!r}; the header has {has}")
            points: list[tuple[float, float]] = []
            for row in reader:
                line = reader.line_num
                try:
                    t = _parse_time(row[time_column] or "")
                    v = float(row[value_column] or "")
                except ValueError as exc:
                    raise ValueError(
                        f"{path} line {line}: {time_column!r} must be seconds or an ISO-8601 "
                        f"timestamp and {value_column!r} a number ({exc})"
                    ) from None
                if not (math.isfinite(t) and math.isfinite(v)):
                    raise ValueError(f"{path} line {line}: values must be finite")
                points.append((t, v))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return build_trace(points, loop=loop)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
