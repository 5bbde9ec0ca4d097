"""Inventory over plain Docker engines (docker-py), one engine = one node.

Per node and refresh: one `info()` (name, ID, labels) and ONE container listing of every
container, in any state, that carries the label `<prefix>.service`; no per-container inspect
(health is parsed from the listing's Status text, e.g. "Up 3 minutes (healthy)").

Node labels (failure domains), field by field: the configuration wins; else the engine's
labels `<prefix>.host`, `<prefix>.rack`, `<prefix>.site`; else host = the node's name,
rack = "unknown", site = "unknown".

A node that cannot be read never raises and never delays the other nodes beyond the
timeout. It is reported with its error, reachable=False when the engine did not answer
(socket missing, connection refused, timeout) and reachable=True when it answered with an
API error; either way the replicas last seen there are kept in the footprint and the node
is listed in `stale_nodes`, because a replica we cannot see has not necessarily stopped.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import requests

from ..config import NodeConfig
from ..model import Footprint, Node, NodeLabels, Replica
from ._describe import describe
from .ports import InventoryResult

log = logging.getLogger(__name__)

ClientFactory = Callable[[str, float], Any]  # (url, timeout) -> docker.DockerClient
#: (node, engine info) -> extra `<prefix>.*` labels that count only where the engine has none
#: (Swarm mode: the swarm node's labels, see swarm_inventory.py)
LabelFallback = Callable[[NodeConfig, Mapping[str, Any]], Mapping[str, str]]

_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def _default_factory(url: str, timeout: float) -> Any:
    import docker  # only the adapters need docker-py

    return docker.DockerClient(base_url=url, timeout=timeout)


def parse_health(status: str) -> str | None:
    """Health from `docker ps` Status text; None when there is no healthcheck."""
    m = _HEALTH.search(status or "")
    if not m:
        return None
    return "starting" if m.group(1) == "health: starting" else m.group(1)


def engine_labels(raw: Any) -> dict[str, str]:
    """Engine labels from `info()["Labels"]` (a list of "key=value")."""
    out: dict[str, str] = {}
    for item in raw or ():
        key, sep, value = str(item).partition("=")
        if sep:
            out[key] = value
    return out


def node_labels(node: NodeConfig, engine: Mapping[str, str], prefix: str) -> NodeLabels:
    """Config first, then the engine's `<prefix>.*` labels, then the documented defaults."""
    cfg = node.labels
    return NodeLabels(
        host=cfg.host or engine.get(f"{prefix}.host") or node.name,
        rack=cfg.rack or engine.get(f"{prefix}.rack") or "unknown",
        site=cfg.site or engine.get(f"{prefix}.site") or "unknown",
    )


def replicas_from_listing(
    listing: Sequence[Mapping[str, Any]], node: str, service_label: str
) -> tuple[Replica, ...]:
    """Replicas from the low-level container list (`client.api.containers(all=True)`)."""
    out = []
    for c in listing:
        labels = c.get("Labels") or {}
        component = labels.get(service_label)
        if not component:
            continue
        names = c.get("Names") or []
        name = names[0].lstrip("/") if names else str(c.get("Id", ""))[:12]
        out.append(Replica(
            container_id=str(c.get("Id", "")),
            name=name,
            component=component,
            node=node,
            state=str(c.get("State") or "unknown"),
            image=str(c.get("Image") or ""),
            health=parse_health(str(c.get("Status") or "")),
            labels=MappingProxyType(dict(labels)),
        ))
    out.sort(key=lambda r: (r.component, r.name))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a node looked like the last time it could be read."""

    node: Node
    replicas: tuple[Replica, ...]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One node's read: what was seen, or why not (and whether the engine answered)."""

    seen: _Seen | None
    error: str | None
    answered: bool = False


class EngineInventory:
    """Inventory of plain Docker engines, read concurrently."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        label_prefix: str = "preshift",
        timeout: float = 10,
        client_factory: ClientFactory | None = None,
        label_fallback: LabelFallback | None = None,
    ) -> None:
        """`label_fallback` gives failure-domain labels for a node whose configuration and
        engine labels leave a field out (consulted on every read of the node)."""
        self.nodes = tuple(nodes)
        self._fallback = label_fallback
        self.label_prefix = label_prefix
        self.service_label = f"{label_prefix}.service"
        self.timeout = float(timeout)
        self._factory = client_factory or _default_factory
        self._lock = threading.Lock()  # guards the three dicts below, never held across I/O
        self._clients: dict[str, Any] = {}
        self._last: dict[str, _Seen] = {}
        self._busy: set[str] = set()  # nodes whose previous read is still running

    def read(self) -> InventoryResult:
        """Read every node at once; returns within about 3 × timeout whatever happens."""
        with self._lock:
            todo = [n for n in self.nodes if n.name not in self._busy]
            self._busy.update(n.name for n in todo)
        pool = ThreadPoolExecutor(max_workers=max(1, len(todo)),
                                  thread_name_prefix="preshift-inventory")
        futures: dict[str, Future] = {n.name: pool.submit(self._read_node, n) for n in todo}
        pool.shutdown(wait=False)  # a hung engine must not hold up the refresh
        # docker-py's timeout bounds each socket operation of a call; a node makes at most
        # three calls (version negotiation, info, listing), so three timeouts bound it all
        budget = 3 * self.timeout + 1
        deadline = time.monotonic() + budget
        nodes: list[Node] = []
        replicas: list[Replica] = []
        stale: set[str] = set()
        errors: dict[str, str] = {}
        for cfg in self.nodes:
            fut = futures.get(cfg.name)
            if fut is None:
                out = _Outcome(None, "no answer yet to the previous read")
            else:
                try:
                    out = fut.result(timeout=max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    out = _Outcome(None, f"no answer within {budget:g} s")
            if out.seen is not None:
                nodes.append(out.seen.node)
                replicas.extend(out.seen.replicas)
                continue
            errors[cfg.name] = out.error or "unknown error"
            node, kept = self._stale(cfg, errors[cfg.name], out.answered)
            nodes.append(node)
            replicas.extend(kept)
            stale.add(cfg.name)
        footprint = Footprint(taken_at=time.time(), nodes=tuple(nodes),
                              replicas=tuple(replicas), stale_nodes=frozenset(stale))
        return InventoryResult(footprint=footprint, errors=MappingProxyType(errors))

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            _close_quietly(c)

    # -- one node, on a pool thread -------------------------------------------------------

    def _read_node(self, cfg: NodeConfig) -> _Outcome:
        try:
            with self._lock:
                client = self._clients.get(cfg.name)
            if client is None:
                client = self._factory(cfg.url, self.timeout)  # negotiates: raises if down
                with self._lock:
                    self._clients[cfg.name] = client
            info = client.info()
            listing = client.api.containers(all=True, filters={"label": self.service_label})
            labels = engine_labels(info.get("Labels"))
            if self._fallback is not None:  # the engine's own labels win over the fallback's
                labels = {**self._fallback(cfg, info), **labels}
            node = Node(
                name=cfg.name, url=cfg.url, labels=node_labels(cfg, labels, self.label_prefix),
                reachable=True, engine_id=info.get("ID"), hostname=info.get("Name"),
            )
            seen = _Seen(node, replicas_from_listing(listing, cfg.name, self.service_label))
            with self._lock:
                self._last[cfg.name] = seen
            return _Outcome(seen, None)
        except Exception as exc:  # docker-py, requests, sockets: reported, never raised
            message = describe(exc, self.timeout)
            # an HTTP error status (docker.errors.APIError) means the engine did answer
            answered = isinstance(exc, requests.HTTPError) and exc.response is not None
            log.info("node %s (%s) unreachable: %s", cfg.name, cfg.url, message)
            with self._lock:
                client = self._clients.pop(cfg.name, None)
            if client is not None:
                _close_quietly(client)  # recreated (and renegotiated) on the next read
            return _Outcome(None, message, answered)
        finally:
            with self._lock:
                self._busy.discard(cfg.name)

    def _stale(
        self, cfg: NodeConfig, error: str, answered: bool
    ) -> tuple[Node, tuple[Replica, ...]]:
        """The node as last seen, with `error`; its last known replicas, unconfirmed."""
        with self._lock:
            last = self._last.get(cfg.name)
        if last is None:
            fallback = self._fallback(cfg, {}) if self._fallback is not None else {}
            labels = node_labels(cfg, fallback, self.label_prefix)
            return Node(name=cfg.name, url=cfg.url, labels=labels, reachable=answered,
                        error=error), ()
        old = last.node
        node = Node(name=cfg.name, url=cfg.url, labels=old.labels, reachable=answered,
                    engine_id=old.engine_id, hostname=old.hostname, error=error)
        return node, last.replicas


def _close_quietly(obj: Any) -> None:
    try:
        obj.close()
    except Exception:  # closing a broken client may fail: it is dropped either way
        log.debug("close failed", exc_info=True)
