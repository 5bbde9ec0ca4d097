"""HTTP adapter of the simulator (stdlib ThreadingHTTPServer): metrics and the control API.

GET    /metrics/<node>                 node_exporter-style text of one node, no node label
GET    /metrics                        the simulator's own metrics
GET    /api/v1/scenario                the scenario being served, as JSON
PUT    /api/v1/scenario                replace it (YAML or JSON body); 400 names the bad field
GET    /api/v1/nodes                   node names
GET    /api/v1/nodes/<node>            each signal's spec, override flag and current value
PUT    /api/v1/nodes/<node>/<signal>   override one signal, e.g. {"steady": 90}
DELETE /api/v1/nodes/<node>/<signal>   return it to the scenario
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from preshift.errors import ConfigError

from .metrics import NodeCollector, node_families, self_families
from .scenario import Signal
from .simulator import Simulator
from .state import signal_value

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_SIGNALS = {s.value: s for s in Signal}


class _NotFound(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class _MethodNotAllowed(Exception):
    def __init__(self, allow: str) -> None:
        self.allow = allow


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the process alive at shutdown
    simulator: Simulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "preshift-simulator"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, **headers: str) -> None:
        body = json.dumps(payload, indent=2).encode() + b"\n"
        self._send(status, body, "application/json", **headers)

    def _error(self, status: int, message: str, **headers: str) -> None:
        self._json(status, {"error": message}, **headers)

    def _body(self) -> str:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        if int(length) > MAX_BODY_BYTES:
            raise _BadRequest(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body exceeds {MAX_BODY_BYTES} bytes"
            )
        raw = self.rfile.read(int(length))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "the body must be UTF-8 text") from None

    def _dispatch(self) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        try:
            self._route(parts)
        except _NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc) or f"no such resource: {self.path}")
        except _MethodNotAllowed as exc:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"use {exc.allow} here", Allow=exc.allow)
        except _BadRequest as exc:
            self._error(exc.status, exc.message)
        except ConfigError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # a bug: answer 500 and log it, rather than drop the connection
            log.exception("%s %s", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the simulator log")

    do_GET = do_PUT = do_DELETE = do_POST = do_HEAD = _dispatch

    # -- routes -----------------------------------------------------------------------------

    def _route(self, parts: list[str]) -> None:
        sim = self.server.simulator
        method = "GET" if self.command == "HEAD" else self.command
        match parts:
            case ["metrics"]:
                _allow(method, "GET")
                text = generate_latest(NodeCollector(self_families(sim.stats())))
                self._send(200, text, CONTENT_TYPE_PLAIN_0_0_4)
            case ["metrics", node]:
                _allow(method, "GET")
                try:
                    readings = sim.readings(node)
                except KeyError:
                    raise _NotFound(_unknown_node(sim, node)) from None
                text = generate_latest(NodeCollector(node_families(readings)))
                self._send(200, text, CONTENT_TYPE_PLAIN_0_0_4)
            case ["api", "v1", "scenario"]:
                _allow(method, "GET, PUT")
                state = sim.state
                if method == "PUT":
                    state = sim.replace_scenario_text(self._body(), origin="PUT /api/v1/scenario")
                self._json(200, state.scenario.to_document())
            case ["api", "v1", "nodes"]:
                _allow(method, "GET")
                self._json(200, {"nodes": list(sim.nodes)})
            case ["api", "v1", "nodes", node]:
                _allow(method, "GET")
                self._json(200, _node_view(sim, node))
            case ["api", "v1", "nodes", node, name]:
                _allow(method, "PUT, DELETE")
                if node not in sim.nodes:
                    raise _NotFound(_unknown_node(sim, node))
                signal = _SIGNALS.get(name)
                if signal is None:
                    raise _NotFound(f"unknown signal {name!r}; signals are {', '.join(_SIGNALS)}")
                try:
                    if method == "PUT":
                        sim.override(node, signal, self._body())
                    else:
                        sim.clear_override(node, signal)
                except KeyError:  # the node vanished with a scenario swapped in meanwhile
                    raise _NotFound(_unknown_node(sim, node)) from None
                self._json(200, _node_view(sim, node)["signals"][signal.value])
            case []:
                _allow(method, "GET")
                self._send(200, (__doc__ or "").encode(), "text/plain; charset=utf-8")
            case _:
                raise _NotFound()


def _allow(method: str, allowed: str) -> None:
    if method not in allowed.split(", "):
        raise _MethodNotAllowed(allowed)


def _unknown_node(sim: Simulator, node: str) -> str:
    return f"unknown node {node!r}; nodes are {', '.join(sim.nodes)}"


def _node_view(sim: Simulator, node: str) -> dict[str, Any]:
    state = sim.state
    if node not in state.nodes:
        raise _NotFound(_unknown_node(sim, node))
    now = sim.now()
    signals = {}
    for signal in Signal:
        key = (node, signal)
        spec = state.overrides.get(key) or state.scenario.spec_for(node, signal)
        signals[signal.value] = {
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "overridden": key in state.overrides,
            "value": signal_value(state, node, signal, now),
        }
    containers = [c._asdict() for c in sim.containers(node, state)]
    return {"node": node, "signals": signals, "containers": containers}


class SimulatorServer:
    """A running simulator HTTP server; `shutdown()` stops it and the simulator's threads."""

    def __init__(self, simulator: Simulator, httpd: _Server, thread: threading.Thread) -> None:
        self.simulator = simulator
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        self.simulator.stop()

    def __enter__(self) -> SimulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_server(simulator: Simulator, host: str, port: int) -> SimulatorServer:
    """Bind, start serving in a daemon thread, and start the simulator's background threads."""
    httpd = _Server((host, port), _Handler)
    httpd.simulator = simulator
    simulator.start()
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="preshift-simulator-http",
        daemon=True,
    )
    thread.start()
    return SimulatorServer(simulator, httpd, thread)
