"""Inventory in mode swarm: the per-engine inventory plus one read of the swarm manager.

Every refresh reads the manager once (`swarm.read_swarm`: nodes, services, running tasks) and
then every node's engine as in mode docker (the task containers carry `<prefix>.service`, so
replicas are found exactly as on plain engines). The manager adds:

- failure domains: a swarm node's `<prefix>.host/rack/site` labels fill the fields that
  neither the configuration nor the engine's labels give (configuration first, then the
  engine, then Swarm, then the defaults; see docker_engine.node_labels);
- the intended replica count per component: its services' spec replicas, Preshift's
  scale-up spares left out (`swarm.exporter_view`), so a task Swarm is still restarting is
  missing from the running count, not from the intended one.

A manager that cannot be read never raises and never delays the refresh beyond its budget:
the last view read is kept (labels and intended counts), and the error is reported in
`InventoryResult.source_errors["swarm"]`, which the refresh loop turns into a PARTIAL
inventory stage, as for a node it cannot read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import MappingProxyType
from typing import Any

from ..config import NodeConfig
from ._describe import describe
from .docker_engine import ClientFactory, EngineInventory, _close_quietly, _default_factory
from .ports import InventoryResult
from .swarm import ExporterSwarm, SwarmView, exporter_view, read_swarm

log = logging.getLogger(__name__)

#: swarm node labels copied as failure domains (the same keys as the engine labels)
DOMAIN_KEYS = ("host", "rack", "site")


class SwarmInventory:
    """EngineInventory over every node + the swarm manager's view, read once per refresh."""

    def __init__(
        self,
        nodes: Sequence[NodeConfig],
        manager: str,
        label_prefix: str = "preshift",
        timeout: float = 10,
        client_factory: ClientFactory | None = None,
    ) -> None:
        by_name = {n.name: n for n in nodes}
        if manager not in by_name:
            raise ValueError(f"swarm.manager: unknown node {manager!r}")
        self.manager = by_name[manager]
        self.label_prefix = label_prefix
        self.timeout = float(timeout)
        self._factory = client_factory or _default_factory
        self.engines = EngineInventory(nodes, label_prefix, timeout, client_factory,
                                       label_fallback=self._domain_labels)
        self._keys = {f"{label_prefix}.{k}" for k in DOMAIN_KEYS}
        self._lock = threading.Lock()  # guards the fields below, never held across I/O
        self._client: Any = None
        self._view: SwarmView | None = None  # the last good read
        self._summary: ExporterSwarm | None = None
        self._busy = False  # the previous read of the manager is still running

    # -- Inventory ----------------------------------------------------------------------
    def read(self) -> InventoryResult:
        """The manager first (its labels are used for the engines' nodes), then the engines."""
        error = self._read_manager()
        result = self.engines.read()
        with self._lock:
            summary = self._summary
        return InventoryResult(
            footprint=result.footprint, errors=result.errors,
            source_errors=MappingProxyType({"swarm": error} if error else {}),
            intended=summary.intended if summary is not None else None,
        )

    @property
    def swarm(self) -> ExporterSwarm | None:
        """What the last good read of the manager gave (None before the first one)."""
        with self._lock:
            return self._summary

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)
        self.engines.close()

    # -- the manager --------------------------------------------------------------------
    def _read_manager(self) -> str | None:
        """Read the manager within a budget; the error message (the last view kept) or None."""
        with self._lock:
            busy, self._busy = self._busy, True
        if busy:
            return self._kept("no answer yet to the previous read")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preshift-swarm")
        future: Future[SwarmView] = pool.submit(self._fetch)
        pool.shutdown(wait=False)  # a hung manager must not hold up the refresh
        # version negotiation + three list calls, each bounded by the client's timeout
        budget = 4 * self.timeout + 1
        try:
            view = future.result(timeout=budget)
        except FutureTimeout:
            return self._kept(f"no answer within {budget:g} s")
        except Exception as exc:  # docker-py, requests, sockets: reported, never raised
            return self._kept(describe(exc, self.timeout))
        summary = exporter_view(view, self.label_prefix)
        with self._lock:
            self._view, self._summary = view, summary
        return None

    def _fetch(self) -> SwarmView:
        """On the pool thread: one read of the manager (the client is made on first use)."""
        try:
            with self._lock:
                client = self._client
            if client is None:
                client = self._factory(self.manager.url, self.timeout)
                with self._lock:
                    self._client = client
            return read_swarm(client)
        except Exception:
            with self._lock:
                client, self._client = self._client, None
            if client is not None:
                _close_quietly(client)  # recreated (and renegotiated) on the next read
            raise
        finally:
            with self._lock:
                self._busy = False

    def _kept(self, why: str) -> str:
        with self._lock:
            known = self._view is not None
        message = (f"swarm manager {self.manager.name}: {why}; "
                   + ("keeping the last known node labels and intended replica counts"
                      if known else "no swarm view read yet (intended = running replicas)"))
        log.info("%s", message)
        return message

    def _domain_labels(self, cfg: NodeConfig, info: Mapping[str, Any]) -> Mapping[str, str]:
        """The swarm node's `<prefix>.host/rack/site` labels for an engine: by its swarm node
        ID, else by its hostname, else by the configured name (the testbed's hostnames)."""
        with self._lock:
            view = self._view
        if view is None:
            return {}
        node_id = (info.get("Swarm") or {}).get("NodeID")
        node = view.node(node_id) if node_id else None
        for name in (info.get("Name"), cfg.name):
            if node is None and name:
                node = next((n for n in view.nodes if n.hostname == name), None)
        if node is None:
            return {}
        return {k: v for k, v in node.labels.items() if k in self._keys and v}

