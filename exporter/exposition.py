"""The text exposition format (version 0.0.4) of a snapshot, written straight from `fill()`.

Byte for byte what prometheus_client's `generate_latest` writes for `families_from(snap)` (a
unit test compares them), without building a `Sample` (a namedtuple and a dict) per sample:
at 10,000 replicas that is a few 100,000 samples, and the families would take more memory and
time than everything else the exporter holds. Each family is written into one bytearray, and
the families are compressed one by one, so the text never exists twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

from prometheus_client.utils import floatToGoString

from .metrics import METRICS, SPECS, fill
from .snapshot import Snapshot

GZIP = 31  # zlib wbits for the gzip container


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


class _Text:
    """Sample lines per family; label names sorted, as generate_latest writes them."""

    def __init__(self) -> None:
        self.buf: dict[str, bytearray] = {m.name: bytearray() for m in METRICS}
        # per family: (label name, position in the values given to add), sorted by name
        self.order = {m.name: sorted((n, i) for i, n in enumerate(m.labels)) for m in METRICS}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        order = self.order[name]
        if order:
            inner = ",".join([f'{n}="{_escape(labels[i])}"' for n, i in order])
            self.buf[name] += f"{name}{{{inner}}} {floatToGoString(value)}\n".encode()
        else:
            self.buf[name] += f"{name} {floatToGoString(value)}\n".encode()


def chunks(snap: Snapshot) -> Iterator[bytes]:
    """The exposition of `snap`, family by family (those with samples, in table order)."""
    text = _Text()
    fill(snap, text.add)
    for name in list(text.buf):
        body = text.buf.pop(name)
        if not body:
            continue
        spec = SPECS[name]
        doc = spec.family(snap.interval).documentation.replace("\\", r"\\").replace("\n", r"\n")
        yield f"# HELP {name} {doc}\n# TYPE {name} {spec.kind}\n".encode()
        yield bytes(body)


def render_text(snap: Snapshot) -> bytes:
    return b"".join(chunks(snap))


def render_gzip(snap: Snapshot) -> tuple[bytes, int]:
    """(the exposition as one gzip member, its uncompressed size)."""
    # Level 1: several times faster than the default for a few % more bytes; runs every refresh.
    z = zlib.compressobj(1, zlib.DEFLATED, GZIP)
    parts, size = [], 0
    for chunk in chunks(snap):
        size += len(chunk)
        parts.append(z.compress(chunk))
    parts.append(z.flush())
    return b"".join(parts), size


def gunzip_chunks(data: bytes, piece: int = 1 << 20) -> Iterator[bytes]:
    """Decompress a gzip member in pieces of at most about `piece` bytes of output."""
    z = zlib.decompressobj(GZIP)
    for i in range(0, len(data), piece // 8):
        out = z.decompress(data[i:i + piece // 8])
        if out:
            yield out
    tail = z.flush()
    if tail:
        yield tail
