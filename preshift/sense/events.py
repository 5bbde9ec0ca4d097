"""Failures from Docker's event stream: a pure classifier and a watcher thread per node.

Classification (`FailureClassifier`, no I/O, driven only by the events' own times):

* `die` with a non-zero `exitCode` → "exit_nonzero", EXCEPT when Docker emitted a `kill` for
  the same container within `kill_window` seconds before. Docker emits `kill` only when the
  API asked for it (`docker stop`, `docker kill`, `docker restart`, `docker rm -f`, a Swarm
  task being shut down, a deliberate decommission): the exit is requested, not a failure.
* `oom` → "oom", once per incident: the burst of `oom` events of one incident (each less than
  `kill_window` after the previous one) and the `die` that follows are the same failure.
* `health_status: unhealthy` → "unhealthy" (not while a requested stop is in progress).
* 3 or more failures of the same container within 5 minutes → one extra "restart_loop",
  then no other one for that container during the next 5 minutes.

`FailureWatcher` runs one daemon thread per node. It follows the node's event stream,
reconnects with bounded backoff, and resumes from (a second before) the last event it saw;
events already handled are recognised by (container, action, timeNano) and skipped, so an
outage neither loses nor double counts an event, as long as the engine still holds it
(dockerd keeps only its last 256 events in memory, and loses them when it restarts). An
engine becoming unreachable is one "unreachable" failure per outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import NodeConfig
from ..model import FailureEvent, FailureReason
from ._describe import describe
from .failures import FailureLedger

log = logging.getLogger(__name__)

ClientFactory = Callable[[str, float], Any]  # (url, timeout) -> docker.DockerClient
#: How far before the newest event seen a reconnect asks Docker to replay from.
REPLAY_MARGIN_NS = 1_000_000_000


@dataclass
class _Container:
    last_seen: float = 0.0
    kill_ts: float | None = None  # an API kill not yet followed by its die
    oom_ts: float | None = None  # an oom not yet followed by its die
    failures: deque[float] = field(default_factory=deque)
    loop_ts: float | None = None  # when the last restart_loop was reported


class FailureClassifier:
    """Turns one node's Docker container events (decoded dicts) into FailureEvents."""

    def __init__(
        self,
        node: str,
        label_prefix: str = "preshift",
        *,
        kill_window: float = 60.0,
        loop_window: float = 300.0,
        loop_count: int = 3,
    ) -> None:
        self.node = node
        self.service_label = f"{label_prefix}.service"
        self.kill_window = kill_window
        self.loop_window = loop_window
        self.loop_count = loop_count
        self._containers: dict[str, _Container] = {}
        self._fed = 0

    def feed(self, event: Mapping[str, Any]) -> list[FailureEvent]:
        """The failures that `event` reveals (usually none)."""
        if (event.get("Type") or event.get("type")) != "container":
            return []
        actor = event.get("Actor") or {}
        attrs = actor.get("Attributes") or {}
        component = attrs.get(self.service_label)
        if not component:
            return []
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(actor.get("ID") or event.get("id") or "")
        ts = event_time(event)
        self._fed += 1
        if self._fed % 256 == 0:
            self._prune(ts)
        if action == "destroy":
            self._containers.pop(cid, None)
            return []
        st = self._containers.setdefault(cid, _Container())
        st.last_seen = ts
        reason: FailureReason | None = None
        detail = ""
        if action == "kill":
            st.kill_ts = ts
        elif action == "start":
            st.kill_ts = st.oom_ts = None  # a new run: earlier requests no longer apply
        elif action == "oom":
            # the kernel may OOM-kill many times in one incident and Docker emits an `oom`
            # for each (25 in 0.15 s measured on the testbed): one incident, one failure
            if st.oom_ts is None or ts - st.oom_ts > self.kill_window:
                reason, detail = "oom", "killed: out of memory"
            st.oom_ts = ts
        elif action == "die":
            code = attrs.get("exitCode")
            requested = st.kill_ts is not None and ts - st.kill_ts <= self.kill_window
            after_oom = st.oom_ts is not None and ts - st.oom_ts <= self.kill_window
            st.kill_ts = st.oom_ts = None
            if code not in (None, "0") and not requested and not after_oom:
                reason, detail = "exit_nonzero", f"exit code {code}"
        elif action.startswith("health_status"):
            status = action.partition(":")[2].strip()
            stopping = st.kill_ts is not None and ts - st.kill_ts <= self.kill_window
            if status == "unhealthy" and not stopping:
                reason, detail = "unhealthy", "health check failing"
        if reason is None:
            return []
        replica = str(attrs.get("name", ""))
        out = [FailureEvent(ts=ts, reason=reason, node=self.node, component=component,
                            replica=replica, detail=detail)]
        st.failures.append(ts)
        while st.failures and st.failures[0] <= ts - self.loop_window:
            st.failures.popleft()
        if len(st.failures) >= self.loop_count and (
            st.loop_ts is None or ts - st.loop_ts >= self.loop_window
        ):
            st.loop_ts = ts
            out.append(FailureEvent(
                ts=ts, reason="restart_loop", node=self.node, component=component,
                replica=replica,
                detail=f"{len(st.failures)} failures within {self.loop_window:g} s",
            ))
        return out

    def _prune(self, now: float) -> None:
        """Forget containers silent for long enough that no window can still apply."""
        horizon = now - 2 * max(self.kill_window, self.loop_window)
        for cid in [c for c, st in self._containers.items() if st.last_seen < horizon]:
            del self._containers[cid]


def event_time(event: Mapping[str, Any]) -> float:
    """Seconds since the epoch (timeNano / 1e9, else the whole-second `time`)."""
    nano = event.get("timeNano")
    if nano:
        return int(nano) / 1e9
    return float(event.get("time") or 0.0)


def classify(
    events: Iterable[Mapping[str, Any]], node: str, label_prefix: str = "preshift", **kw: Any
) -> list[FailureEvent]:
    """Pure: the failures in a sequence of one node's events, in order."""
    c = FailureClassifier(node, label_prefix, **kw)
    return [f for ev in events for f in c.feed(ev)]


def _default_factory(url: str, timeout: float) -> Any:
    import docker  # only the adapters need docker-py

    return docker.DockerClient(base_url=url, timeout=timeout)


class _Seen:
    """The identities of the last `size` events handled (a bounded set)."""

    def __init__(self, size: int = 4096) -> None:
        self._set: set[tuple[str, str, int]] = set()
        self._order: deque[tuple[str, str, int]] = deque()
        self._size = size

    def add(self, ident: tuple[str, str, int]) -> bool:
        """False when `ident` was already there."""
        if ident in self._set:
            return False
        self._set.add(ident)
        self._order.append(ident)
        if len(self._order) > self._size:
            self._set.discard(self._order.popleft())
        return True


def _since_arg(nano: int) -> str:
    """Docker's `since` as seconds.nanoseconds (a float would lose the nanoseconds)."""
    return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"


class FailureWatcher:
    """Follow every node's container events and record failures in `ledger`."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        ledger: FailureLedger,
        label_prefix: str = "preshift",
        client_factory: ClientFactory | None = None,
        since: float | None = None,
        *,
        timeout: float = 10.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        renew_every: float = 600.0,
    ) -> None:
        self.nodes = tuple(nodes)
        self.ledger = ledger
        self.label_prefix = label_prefix
        self.timeout = timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.renew_every = renew_every  # re-open long-lived streams: a dead TCP peer is silent
        self._factory = client_factory or _default_factory
        self._since = since
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, Any] = {}
        self._start_nano = 0
        self._cursor: dict[str, int] = {}  # node -> timeNano of the newest event seen
        self._seen: dict[str, _Seen] = {}  # node -> recently handled events
        self._reachable: dict[str, bool | None] = {n.name: None for n in self.nodes}

    def start(self) -> None:
        if self._threads:
            return
        self._start_nano = int((time.time() if self._since is None else self._since) * 1e9)
        for node in self.nodes:
            self._cursor[node.name] = self._start_nano
            self._seen[node.name] = _Seen()
            t = threading.Thread(target=self._run, args=(node,), daemon=True,
                                 name=f"preshift-events-{node.name}")
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every stream and wait (at most `timeout` s in all) for the threads to end."""
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            _close_quietly(stream)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def reachable(self) -> dict[str, bool | None]:
        """Per node: True/False as last seen by a stream, None before the first attempt."""
        with self._lock:
            return dict(self._reachable)

    def mark_unreachable(self, node: str, detail: str = "") -> None:
        """The refresh loop saw `node` fail: record one "unreachable" per outage and
        re-open the stream (a hung connection would otherwise stay silent forever)."""
        self._set_reachable(node, False, detail)
        with self._lock:
            stream = self._streams.get(node)
        if stream is not None:
            _close_quietly(stream)

    def mark_reachable(self, node: str) -> None:
        """The refresh loop read `node` fine: the outage, if any, is over."""
        self._set_reachable(node, True)

    # -- per-node thread ------------------------------------------------------------------

    def _set_reachable(self, node: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            if node not in self._reachable:
                return
            before = self._reachable[node]
            self._reachable[node] = ok
        # only a transition from reachable counts: an engine already down when Preshift
        # started was counted by the previous process (its counters are restored)
        if before is True and not ok:
            self.ledger.record(FailureEvent(ts=time.time(), reason="unreachable", node=node,
                                            detail=detail or "engine unreachable"))

    def _run(self, node: NodeConfig) -> None:
        classifier = FailureClassifier(node.name, self.label_prefix)
        backoff = self.min_backoff
        while not self._stop.is_set():
            opened = time.monotonic()
            error = self._follow(node, classifier)
            if self._stop.is_set():
                break
            if error is not None:
                log.info("events from node %s: %s; retrying in %.1f s", node.name, error, backoff)
                self._set_reachable(node.name, False, error)
            elif time.monotonic() - opened >= 1.0:
                backoff = self.min_backoff  # a healthy stream that ended: reconnect at once
                continue
            # a failure, or a stream that ends at once: wait, doubling up to max_backoff
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _follow(self, node: NodeConfig, classifier: FailureClassifier) -> str | None:
        """Open one stream and consume it until it ends; returns an error text or None."""
        client = stream = timer = None
        try:
            client = self._factory(node.url, self.timeout)  # negotiates: raises if down
            with self._lock:
                # dockerd stamps an event before it takes its lock, so two events may come
                # a little out of order: re-read a margin and skip what was handled
                since = _since_arg(max(self._start_nano,
                                       self._cursor[node.name] - REPLAY_MARGIN_NS))
            stream = client.events(
                decode=True, since=since,
                filters={"type": "container", "label": self.service_label},
            )
            with self._lock:
                self._streams[node.name] = stream
            if self._stop.is_set():
                return None
            self._set_reachable(node.name, True)
            timer = threading.Timer(self.renew_every, _close_quietly, args=(stream,))
            timer.daemon = True
            timer.start()
            for event in stream:
                if self._stop.is_set():
                    break
                if not isinstance(event, dict):
                    continue
                try:
                    self._handle(node.name, classifier, event)
                except Exception:  # one odd event must not tear the stream down (and loop)
                    log.exception("node %s: cannot handle event %.200r", node.name, event)
            return None
        except Exception as exc:  # docker-py, requests, sockets: all mean "not connected"
            return describe(exc, self.timeout)
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                if self._streams.get(node.name) is stream:
                    self._streams.pop(node.name, None)
            if stream is not None:
                _close_quietly(stream)
            if client is not None:
                _close_quietly(client)

    @property
    def service_label(self) -> str:
        return f"{self.label_prefix}.service"

    def _handle(self, node: str, classifier: FailureClassifier, event: dict[str, Any]) -> None:
        nano = int(event.get("timeNano") or int(event.get("time") or 0) * 1_000_000_000)
        ident = (str(event.get("id") or (event.get("Actor") or {}).get("ID") or ""),
                 str(event.get("Action") or event.get("status") or ""), nano)
        with self._lock:
            if not self._seen[node].add(ident):
                return  # replayed after a reconnect: already handled
            self._cursor[node] = max(self._cursor[node], nano)
        for failure in classifier.feed(event):
            self.ledger.record(failure)


def _close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:  # closing a dead connection may fail: it is closed either way
        log.debug("close failed", exc_info=True)
