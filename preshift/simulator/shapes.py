"""The maths: spec + time → value. Pure, closed-form, no I/O and no clock.

`t` is seconds since the spec took effect (the scenario was loaded or the override was made).
Before 0 a shape holds its value at 0. Each shape also has a closed-form integral, so the
5- and 15-minute averages behind node_load5/node_load15 cost two evaluations, not a loop.

A timeline is the history of one node's signal: the specs it followed, newest last. The
averages read across the boundaries, so an override bends node_load15 slowly, as on a real host.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from .scenario import Ramp, SignalSpec, Spikes
from .trace import Trace

NOISE_BUCKET_SECONDS = 1.0  # noise is constant within a bucket, so two reads in a row agree


def _ramp(r: Ramp, t: float) -> float:
    if t < r.start:
        return r.from_
    if r.over == 0 or t >= r.start + r.over:
        return r.to
    return r.from_ + (r.to - r.from_) * (t - r.start) / r.over


def _ramp_integral(r: Ramp, t: float) -> float:
    before = min(t, r.start)
    during = min(max(t - r.start, 0.0), r.over)
    after = max(t - r.start - r.over, 0.0)
    total = r.from_ * before + r.to * after
    if r.over > 0:
        total += r.from_ * during + (r.to - r.from_) * during * during / (2 * r.over)
    return total


def _spike_phase(s: Spikes, t: float) -> tuple[int, float]:
    """(whole periods since the first spike, seconds into the current period)."""
    u = max(t - s.start, 0.0)
    n = math.floor(u / s.every)
    return n, u - n * s.every


def _spikes(s: Spikes, t: float) -> float:
    if t < s.start:
        return s.base
    _, phase = _spike_phase(s, t)
    return s.base + s.height if phase < s.width else s.base


def _spikes_integral(s: Spikes, t: float) -> float:
    n, phase = _spike_phase(s, t)
    return s.base * t + s.height * (n * s.width + min(phase, s.width))


def trace_value(tr: Trace, pos: float) -> float:
    """Linear interpolation at `pos` seconds into the trace; holds the last value unless looping."""
    if tr.period > 0:
        pos %= tr.period
    if pos <= 0:
        return tr.values[0]
    if pos >= tr.times[-1]:
        return tr.values[-1]
    i = bisect_right(tr.times, pos) - 1
    t0, t1 = tr.times[i], tr.times[i + 1]
    v0, v1 = tr.values[i], tr.values[i + 1]
    return v0 + (v1 - v0) * (pos - t0) / (t1 - t0)


def trace_integral(tr: Trace, pos: float) -> float:
    """Integral of the trace from 0 to `pos` (pos >= 0)."""
    laps = 0
    if tr.period > 0:
        laps = math.floor(pos / tr.period)
        pos -= laps * tr.period
    whole = laps * tr.cumulative[-1]
    if pos >= tr.times[-1]:
        return whole + tr.cumulative[-1] + tr.values[-1] * (pos - tr.times[-1])
    i = bisect_right(tr.times, pos) - 1
    mean = (tr.values[i] + trace_value(tr, pos)) / 2
    return whole + tr.cumulative[i] + mean * (pos - tr.times[i])


def base_value(spec: SignalSpec, t: float) -> float:
    """The noiseless value `t` seconds after the spec took effect."""
    t = max(t, 0.0)
    if spec.steady is not None:
        return spec.steady
    if spec.ramp is not None:
        return _ramp(spec.ramp, t)
    if spec.spikes is not None:
        return _spikes(spec.spikes, t)
    assert spec.replay is not None  # SignalSpec guarantees exactly one shape
    return trace_value(spec.replay.trace, t * spec.replay.speed)


def integral(spec: SignalSpec, t: float) -> float:
    """Integral of the noiseless value from 0 to `t`; before 0 the value at 0 holds."""
    if t <= 0:
        return base_value(spec, 0.0) * t
    if spec.steady is not None:
        return spec.steady * t
    if spec.ramp is not None:
        return _ramp_integral(spec.ramp, t)
    if spec.spikes is not None:
        return _spikes_integral(spec.spikes, t)
    assert spec.replay is not None
    speed = spec.replay.speed
    return trace_integral(spec.replay.trace, t * speed) / speed


def gaussian(seed: int, key: str, bucket: int) -> float:
    """A standard normal draw fixed by (seed, key, bucket), the same in every process."""
    # hashlib, not hash(): str hashes are salted per process, which would break reproducibility.
    digest = hashlib.blake2b(f"{seed}|{key}|{bucket}".encode(), digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64  # (0, 1], keeps log() finite
    u2 = int.from_bytes(digest[8:], "big") / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def value(spec: SignalSpec, t: float, *, seed: int, key: str) -> float:
    """The value with noise; `key` names the series (e.g. "n2/temperature_celsius")."""
    v = base_value(spec, t)
    if spec.noise:
        v += spec.noise * gaussian(seed, key, math.floor(t / NOISE_BUCKET_SECONDS))
    return v


@dataclass(frozen=True, slots=True)
class Segment:
    """A spec followed from `since` (epoch seconds), with its time 0 at `origin`."""

    since: float
    origin: float
    spec: SignalSpec


Timeline = tuple[Segment, ...]


def segment_index(timeline: Sequence[Segment], now: float) -> int:
    """Index of the segment in force at `now` (the first one if `now` precedes them all)."""
    for i in range(len(timeline) - 1, 0, -1):
        if timeline[i].since <= now:
            return i
    return 0


def timeline_value(timeline: Sequence[Segment], now: float, *, seed: int, key: str) -> float:
    seg = timeline[segment_index(timeline, now)]
    return value(seg.spec, now - seg.origin, seed=seed, key=key)


def timeline_mean(timeline: Sequence[Segment], now: float, window: float) -> float:
    """Noiseless average over (now - window, now], across segment boundaries."""
    start = now - window
    total = 0.0
    for i, seg in enumerate(timeline):
        lo = seg.since if i > 0 else -math.inf  # the oldest segment reaches back for ever
        hi = timeline[i + 1].since if i + 1 < len(timeline) else math.inf
        a, b = max(lo, start), min(hi, now)
        if b > a:
            total += integral(seg.spec, b - seg.origin) - integral(seg.spec, a - seg.origin)
    return total / window


def trim(timeline: Sequence[Segment], now: float, keep_seconds: float) -> Timeline:
    """Drop segments that ended more than `keep_seconds` ago; averages never look that far."""
    first = segment_index(timeline, now - keep_seconds)
    return tuple(timeline[first:])
