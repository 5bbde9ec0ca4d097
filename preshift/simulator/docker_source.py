"""Which containers run on each node, read from its Docker engine in a background thread.

Only containers labelled `preshift.service` count. A scrape reads the last listing and never
waits for an engine; a failing engine keeps its last listing and is reported as down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .state import Container

log = logging.getLogger(__name__)

SERVICE_LABEL = "preshift.service"

ClientFactory = Callable[[str], Any]  # base URL -> docker.DockerClient (or anything alike)


def docker_client(url: str, timeout: float = 5.0) -> Any:
    """The default client factory; docker is imported here so nothing else pays for it."""
    import docker

    return docker.DockerClient(base_url=url, timeout=timeout)


class DockerContainers:
    """Lists labelled containers per node every `interval` seconds, in one daemon thread."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        interval: float = 2.0,
        client_factory: ClientFactory = docker_client,
    ) -> None:
        self.urls = dict(urls)
        self.interval = interval
        self._factory = client_factory
        self._clients: dict[str, Any] = {}
        self._listing: Mapping[str, tuple[Container, ...]] = MappingProxyType({})
        self._up: Mapping[str, bool] = MappingProxyType({})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def containers(self, node: str) -> tuple[Container, ...]:
        return self._listing.get(node, ())

    def up(self) -> Mapping[str, bool]:
        """Whether the last listing of each engine succeeded (False before the first one)."""
        return {node: self._up.get(node, False) for node in self.urls}

    def refresh(self) -> None:
        """List every engine once and swap the results in (the thread calls this)."""
        listing = dict(self._listing)
        up = {}
        for node, url in self.urls.items():
            if self._stop.is_set():
                return
            try:
                listing[node] = self._list(node, url)
                up[node] = True
            except Exception as exc:  # any engine failure: keep the last listing, report down
                if self._up.get(node, True):  # log when an engine goes down, not every 2 s
                    log.warning("docker engine of %s (%s): %s", node, url, exc)
                _close(self._clients.pop(node, None))  # reconnect next time
                up[node] = False
            else:
                if self._up.get(node) is False:
                    log.info("docker engine of %s (%s) answers again", node, url)
        self._listing = MappingProxyType(listing)
        self._up = MappingProxyType(up)

    def _list(self, node: str, url: str) -> tuple[Container, ...]:
        client = self._clients.get(node)
        if client is None:
            client = self._clients[node] = self._factory(url)
        found = client.containers.list(filters={"label": SERVICE_LABEL}, ignore_removed=True)
        result = []
        for c in found:
            memory = (c.attrs.get("HostConfig") or {}).get("Memory") or None
            result.append(Container(c.name, int(memory) if memory else None))
        return tuple(sorted(result))

    def start(self) -> None:
        if self._thread is None and self.urls:
            self._thread = threading.Thread(
                target=self._run, name="preshift-simulator-docker", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self.refresh()
                if self._stop.wait(self.interval):
                    return
        finally:
            # Closed here, by the only thread that uses them, even if stop() gave up waiting.
            for client in self._clients.values():
                _close(client)
            self._clients.clear()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop listing; waits at most `timeout` for a slow engine call (the thread is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)


def _close(client: Any) -> None:
    if client is not None:
        with contextlib.suppress(Exception):  # closing a broken client is best effort
            client.close()
