"""The frozen result of one background refresh, and the JSON rendered from it once.

A scrape or an API request only reads a Snapshot; it never computes anything. The JSON of
/api/v1/footprint is rendered here, when the snapshot is built (see docs/exporter-api.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from preshift.assess import PARTS, Assessment
from preshift.config import Config
from preshift.model import Footprint, Node, NodeLabels, Replica
from preshift.sense.ports import FailureCounts, SignalStats

from .document import assessment_sections

STAGES: tuple[str, ...] = ("inventory", "signals", "failures", "assess")
#: Parts of the assess stage, timed separately (in the stage duration metric only).
ASSESS_PARTS: tuple[str, ...] = tuple(f"assess_{p}" for p in PARTS)
SOURCES: tuple[str, ...] = ("docker", "prometheus")
#: The version of the /api/v1/footprint document; bump it on an incompatible change.
API_VERSION = 1


class Status(StrEnum):
    """How a stage of the last refresh went."""

    OK = "ok"
    """All of its data is fresh."""
    PARTIAL = "partial"
    """Part of its data is fresh; the rest is the last good data (a node or signal failed)."""
    FAILED = "failed"
    """Nothing fresh: the stage raised, or every node / signal failed; last good data kept."""


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """What one stage of the last refresh did."""

    status: Status
    duration: float  # seconds spent in the stage by the last refresh
    last_success: float  # wall time the stage last produced fresh data (ok or partial); 0 = never
    error: str | None = None  # the message behind a partial or failed status

    @property
    def stale(self) -> bool:
        return self.status is not Status.OK


def placeholder_footprint(config: Config) -> Footprint:
    """The footprint before any inventory read: every configured node, none confirmed."""
    nodes = tuple(
        Node(
            name=n.name,
            url=n.url,
            # Same fallbacks as the inventory: host = node name, rack/site "unknown".
            labels=NodeLabels(
                host=n.labels.host or n.name,
                rack=n.labels.rack or "unknown",
                site=n.labels.site or "unknown",
            ),
            reachable=False,
            error="not read yet",
        )
        for n in config.nodes
    )
    return Footprint(taken_at=0.0, nodes=nodes, replicas=(), stale_nodes=frozenset())


EMPTY_SIGNAL_STATS = SignalStats(series=0, points=0, fetched=0)
EMPTY_FAILURES = FailureCounts(by_component={}, by_node={}, last_event_ts=0.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the exporter serves until the next refresh. Never mutated."""

    taken_at: float  # wall time the refresh started (every timestamp of it uses this one)
    interval: float  # configured refresh interval, seconds (for HELP texts)
    footprint: Footprint
    node_errors: Mapping[str, str]  # node -> why it was not read
    failures: FailureCounts
    signals: SignalStats
    signal_series: Mapping[str, int]  # signal -> series held (every configured signal present)
    signal_points: Mapping[str, int]  # signal -> points held
    stages: Mapping[str, StageOutcome]  # one per STAGES
    duration: float  # seconds the whole refresh took
    refreshes: int  # refreshes done since start, this one included
    errors_total: Mapping[str, int]  # stage -> refreshes in which it failed or partly failed
    last_success: float  # wall time of the last refresh in which no stage failed; 0 = never
    sources_up: Mapping[str, bool]  # one per SOURCES
    components: tuple[str, ...]  # every component known so far (configured or ever seen)
    seen_pairs: frozenset[tuple[str, str]]  # (component, node) where a replica was ever seen
    # False while the failure counters wait for their restore from Prometheus: exporting
    # them then would show the restored baseline as a jump (a burst of phantom failures).
    failures_restored: bool = True
    # The last good assessment (None before the first); when the assess stage is not OK it
    # is older than this snapshot and served as stale: its plan is never recomputed from
    # stale inputs (see docs/assess.md).
    assessment: Assessment | None = None
    assess_timings: Mapping[str, float] = field(default_factory=dict)  # ASSESS_PARTS -> s
    risk_tolerance: float = 0.2
    footprint_json: bytes = field(default=b"", repr=False)

    @property
    def stale(self) -> bool:
        """True when any part is the last good data rather than fresh."""
        return any(s.stale for s in self.stages.values())

    @property
    def up(self) -> bool:
        """True when no stage of this refresh failed outright."""
        return all(s.status is not Status.FAILED for s in self.stages.values())

    def with_json(self) -> Snapshot:
        """A copy carrying its pre-rendered /api/v1/footprint body."""
        # Encoded piece by piece: one "".join(...).encode() of the whole document (~10 MB at
        # 10,000 components) is two C calls holding the GIL ~10 ms; joining bytes is a copy.
        doc = footprint_document(self)
        pieces = [piece.encode() for piece in json_chunks(doc)]
        pieces.append(b"\n")
        let_go(doc)
        return replace(self, footprint_json=b"".join(pieces))


def json_chunks(value: Any, chunk: int = 500) -> Iterator[str]:
    """Compact JSON of `value`, in pieces: a dict or list of more than `chunk` entries is
    encoded `chunk` entries at a time. json.dumps holds the GIL for a whole call (0.2 s for
    the document at 10,000 components; ~3 ms for 500 components' entries), which would stall
    a scrape served meanwhile."""
    def dumps(v: Any) -> str:
        return json.dumps(v, separators=(",", ":"))

    def big(v: Any) -> bool:
        return isinstance(v, dict | list) and len(v) > chunk

    def heavy(v: Any) -> bool:  # holds a big container somewhere
        if isinstance(v, dict):
            return big(v) or any(map(heavy, v.values()))
        return isinstance(v, list) and (big(v) or any(map(heavy, v)))

    if isinstance(value, dict) and heavy(value):
        yield "{"
        if big(value):
            items = list(value.items())
            for i in range(0, len(items), chunk):
                yield ("," if i else "") + dumps(dict(items[i:i + chunk]))[1:-1]
        else:
            for i, (k, v) in enumerate(value.items()):
                yield ("," if i else "") + dumps(k) + ":"
                yield from json_chunks(v, chunk)
        yield "}"
    elif isinstance(value, list) and heavy(value):
        yield "["
        if big(value):
            for i in range(0, len(value), chunk):
                yield ("," if i else "") + dumps(value[i:i + chunk])[1:-1]
        else:
            for i, v in enumerate(value):
                yield ("," if i else "")
                yield from json_chunks(v, chunk)
        yield "]"
    else:
        yield dumps(value)


def let_go(value: Any, big: int = 64) -> None:
    """Empty a nested document (dicts and lists) one entry at a time, so that it is freed in
    small steps. Dropping the last reference to the document at 10,000 components frees
    ~10^5 objects in one C call (~10 ms with the GIL held); emptied here, the interpreter can
    switch threads between entries."""
    stack = [value]
    while stack:
        item = stack.pop()
        while item:
            entry = item.popitem()[1] if isinstance(item, dict) else item.pop()
            if isinstance(entry, dict | list) and len(entry) > big:
                stack.append(entry)
            del entry  # a small one is freed here, between two bytecodes


def footprint_document(snap: Snapshot) -> dict[str, Any]:
    """The /api/v1/footprint document as plain data (shape documented in docs/exporter-api.md).

    Every dict and list in it is new (none is shared with the snapshot): with_json() empties
    it with let_go() once encoded."""
    fp = snap.footprint
    node_names = [n.name for n in fp.nodes]
    nodes = [
        {
            "name": n.name,
            "host": n.labels.host,
            "rack": n.labels.rack,
            "site": n.labels.site,
            "reachable": n.reachable,
            "stale": n.name in fp.stale_nodes,
            "engine_id": n.engine_id,
            "error": n.error or snap.node_errors.get(n.name),
        }
        for n in fp.nodes
    ]
    counts = fp.running_counts()
    by_component: dict[str, list[Replica]] = {}
    for r in sorted(fp.replicas, key=lambda r: (r.node, r.name)):
        by_component.setdefault(r.component, []).append(r)
    components: dict[str, Any] = {}
    for comp in snap.components:  # known components stay listed, even with no replica left
        replicas = by_component.get(comp, [])
        components[comp] = {
            "replicas": [
                {"name": r.name, "node": r.node, "state": r.state, "health": r.health}
                for r in replicas
            ],
            "running_by_node": {node: counts.get((comp, node), 0) for node in node_names},
        }
    return {
        "version": API_VERSION,
        "generated_at": snap.taken_at,
        "stale": snap.stale,
        "nodes": nodes,
        "components": components,
        **assessment_sections(snap.assessment, snap.stages["assess"].stale),
        "errors": {
            "stages": {name: snap.stages[name].error for name in STAGES},
            "nodes": dict(sorted(snap.node_errors.items())),
            "signals": dict(sorted(snap.signals.errors.items())),
        },
        "sources_up": {name: snap.sources_up.get(name, False) for name in SOURCES},
        "stages": {
            name: {
                "status": str(snap.stages[name].status),
                "duration_seconds": snap.stages[name].duration,
                "last_success": snap.stages[name].last_success,
            }
            for name in STAGES
        },
    }
