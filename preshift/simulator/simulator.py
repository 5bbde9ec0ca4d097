"""The running simulator: holds the state, applies changes, watches the scenario file.

HTTP lives in httpapi.py; this class only changes and reads State. All changes go through one
lock and end in a single reference swap, so a reader sees either the old state or the new one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preshift.errors import ConfigError

from .docker_source import ClientFactory, DockerContainers, docker_client
from .scenario import (
    Scenario,
    Signal,
    SignalSpec,
    load_scenario,
    parse_scenario,
    parse_signal_spec,
    resolve_nodes,
)
from .state import (
    Container,
    NodeReadings,
    SelfStats,
    State,
    load_scenario_state,
    node_readings,
    with_override,
)

if TYPE_CHECKING:
    from .httpapi import SimulatorServer

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9732


class Simulator:
    """Simulated telemetry of a set of nodes, driven by a scenario that can change while running.

    `nodes` is used when the scenario lists none; `docker_urls` maps a node to its engine, whose
    containers labelled `preshift.service` then replace the scenario's `containers` for that node.
    `clock` is injectable so tests can move time.
    """

    def __init__(
        self,
        scenario: Scenario,
        nodes: Sequence[str] = (),
        docker_urls: Mapping[str, str] | None = None,
        *,
        scenario_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        reload_interval: float = 1.0,
        docker_interval: float = 2.0,
        docker_client_factory: ClientFactory = docker_client,
    ) -> None:
        self._cli_nodes = tuple(nodes)
        self._docker_urls = dict(docker_urls or {})
        self._path = Path(scenario_path) if scenario_path is not None else None
        # Relative replay paths in a PUT body resolve like those in the file.
        self.base_dir = self._path.parent if self._path else Path.cwd()
        self._clock = clock
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._reloads: Counter[str] = Counter()
        self._reload_errors: Counter[str] = Counter()
        self._scrapes: Counter[str] = Counter()
        self._file_signature = self._signature()
        resolved = resolve_nodes(
            scenario,
            self._cli_nodes,
            tuple(self._docker_urls),
            origin=str(self._path) if self._path else "scenario",
        )
        self._state: State = load_scenario_state(
            None, scenario, resolved, source="file" if self._path else "api", now=clock()
        )
        self._docker = DockerContainers(
            self._docker_urls, interval=docker_interval, client_factory=docker_client_factory
        )
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        nodes: Sequence[str] = (),
        docker_urls: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Simulator:
        """A simulator serving the scenario in `path`, reloaded whenever the file changes."""
        return cls(load_scenario(path), nodes, docker_urls, scenario_path=path, **kwargs)

    # -- reading ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def now(self) -> float:
        return self._clock()

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._state.nodes

    def containers(self, node: str, state: State | None = None) -> tuple[Container, ...]:
        """The node's containers: from its Docker engine if it has one, else from the scenario."""
        if node in self._docker_urls:
            return self._docker.containers(node)
        state = state or self._state
        return tuple(Container(name) for name in state.scenario.containers.get(node, ()))

    def readings(self, node: str) -> NodeReadings:
        """Readings of `node` now; KeyError if the node is unknown."""
        state = self._state
        readings = node_readings(state, node, self._clock(), self.containers(node, state))
        with self._lock:
            self._scrapes[node] += 1
        return readings

    def stats(self) -> SelfStats:
        state = self._state
        with self._lock:
            reloads, errors, scrapes = (
                dict(self._reloads),
                dict(self._reload_errors),
                dict(self._scrapes),
            )
        return SelfStats(
            state=state,
            reloads=reloads,
            reload_errors=errors,
            scrapes=scrapes,
            docker_up=self._docker.up(),
            containers={n: len(self.containers(n, state)) for n in state.nodes},
        )

    # -- changing ---------------------------------------------------------------------------

    def replace_scenario(self, scenario: Scenario, *, source: str = "api") -> State:
        """Serve `scenario` from now on; ConfigError (and no change) if it does not fit."""
        return self._counted(source, "scenario", lambda: scenario)

    def replace_scenario_text(self, text: str, *, origin: str = "scenario") -> State:
        """Parse YAML or JSON text and serve it (the PUT /api/v1/scenario path)."""
        return self._counted(
            "api", origin, lambda: parse_scenario(text, base_dir=self.base_dir, origin=origin)
        )

    def _counted(self, source: str, origin: str, make: Callable[[], Scenario]) -> State:
        """Install the scenario `make` returns; count a reload, or an error on ConfigError."""
        try:
            scenario = make()
            docker_nodes = tuple(self._docker_urls)
            nodes = resolve_nodes(scenario, self._cli_nodes, docker_nodes, origin=origin)
        except ConfigError:
            with self._lock:
                self._reload_errors[source] += 1
            raise
        with self._lock:
            self._state = load_scenario_state(
                self._state, scenario, nodes, source=source, now=self._clock()
            )
            self._reloads[source] += 1
            return self._state

    def override(self, node: str, signal: Signal, text: str) -> SignalSpec:
        """Make one node's signal follow the spec in `text` (YAML/JSON) from now on."""
        spec = parse_signal_spec(
            text, base_dir=self.base_dir, origin=f"override of {node}", field=signal.value
        )
        self._apply_override(node, signal, spec)
        return spec

    def clear_override(self, node: str, signal: Signal) -> None:
        """Return one node's signal to the scenario (on the scenario's clock)."""
        self._apply_override(node, signal, None)

    def _apply_override(self, node: str, signal: Signal, spec: SignalSpec | None) -> None:
        with self._lock:
            if node not in self._state.nodes:
                raise KeyError(node)
            self._state = with_override(self._state, node, signal, spec, now=self._clock())

    # -- the scenario file ------------------------------------------------------------------

    def _signature(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check_file(self) -> bool:
        """Reload the scenario file if it changed; True if a new scenario is now served."""
        signature = self._signature()
        if self._path is None or signature is None or signature == self._file_signature:
            return False
        self._file_signature = signature
        path = self._path
        try:
            self._counted("file", str(path), lambda: load_scenario(path))
        except ConfigError as exc:
            log.error("scenario file not reloaded, still serving the previous one: %s", exc)
            return False
        log.info("scenario reloaded from %s", path)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self._reload_interval):
            try:
                self.check_file()
            except Exception:  # the watcher must outlive any surprise; the log says what it was
                log.exception("scenario file watcher")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background threads (file watcher, Docker listing); idempotent."""
        self._docker.start()
        if self._path is not None and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name="preshift-simulator-watch", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._docker.stop()

    def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> SimulatorServer:
        """Start the background threads and the HTTP server (port 0 picks a free port)."""
        from .httpapi import start_server

        return start_server(self, host, port)
