"""A small threaded WSGI server: /metrics, /api/v1/footprint, a landing page, health checks.

Every answer is read from what the refresh loop already built: /metrics sends the collector's
pre-rendered text (plus the few runtime metrics of the process, rendered per scrape) and the
footprint JSON is pre-rendered bytes. Only a client that accepts nothing but OpenMetrics, or
asks for a subset with `name[]`, goes through prometheus_client's own (slower) rendering.
"""

from __future__ import annotations

import gzip
import html
import itertools
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    generate_latest,
    gzip_accepted,
)

from preshift import __version__

from .collector import SnapshotCollector
from .exposition import gunzip_chunks
from .snapshot import Snapshot

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PAGES = (
    ("/metrics", "metrics (Prometheus text format)"),
    ("/api/v1/footprint", "current footprint (JSON)"),
    ("/-/healthy", "liveness"),
    ("/-/ready", "readiness: 200 once the first refresh is done"),
)


def _landing() -> bytes:
    links = "\n".join(
        f'<li><a href="{path}">{html.escape(path)}</a>: {html.escape(text)}</li>'
        for path, text in PAGES
    )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Preshift exporter</title>"
        f"</head>\n<body><h1>Preshift exporter</h1>\n<p>version {html.escape(__version__)}</p>"
        f"\n<ul>\n{links}\n</ul>\n</body></html>\n"
    ).encode()


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode() + b"\n"


def _wants_text(environ: dict[str, Any]) -> bool:
    """True unless the client accepts only OpenMetrics or asks for a subset (`name[]`)."""
    if "name[]" in environ.get("QUERY_STRING", ""):
        return False
    accept = environ.get("HTTP_ACCEPT", "")
    if not accept.strip():
        return True
    types = {part.split(";")[0].strip() for part in accept.split(",")}
    return bool(types & {"text/plain", "text/*", "*/*"})


def make_app(
    registry: CollectorRegistry,
    current: Callable[[], Snapshot | None],
    collector: SnapshotCollector | None = None,
    runtime: CollectorRegistry | None = None,
) -> WSGIApp:
    """The WSGI app. `current()` returns the latest snapshot (None before the first). With
    `collector` (registered in `registry`), /metrics sends its pre-rendered exposition followed
    by what `runtime` (the registry's other collectors, see build_registries) renders."""
    metrics_app = make_wsgi_app(registry)
    others = runtime if runtime is not None else CollectorRegistry()

    def metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if collector is None or not _wants_text(environ):
            return metrics_app(environ, start_response)
        ours = collector.exposition()
        extra = generate_latest(others)
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            # Two gzip members in a row are one valid gzip stream (RFC 1952, section 2.2).
            body = [ours.gzipped, gzip.compress(extra, compresslevel=1, mtime=0)]
            headers.append(("Content-Encoding", "gzip"))
            headers.append(("Content-Length", str(sum(len(b) for b in body))))
            start_response("200 OK", headers)
            return body
        headers.append(("Content-Length", str(ours.size + len(extra))))
        start_response("200 OK", headers)
        return itertools.chain(gunzip_chunks(ours.gzipped), (extra,))
    landing = _landing()
    not_ready = _json({"error": "no snapshot yet: the first refresh has not finished"})

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        known = path in ("/", "/metrics", "/api/v1/footprint", "/-/healthy", "/-/ready")
        if not known:
            return _send(start_response, "404 Not Found", b"not found\n", "text/plain")
        if environ.get("REQUEST_METHOD") != "GET":
            return _send(start_response, "405 Method Not Allowed", b"use GET\n", "text/plain",
                         [("Allow", "GET")])
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/":
            return _send(start_response, "200 OK", landing, "text/html; charset=utf-8")
        if path == "/-/healthy":
            return _send(start_response, "200 OK", b"OK\n", "text/plain")
        snap = current()
        if path == "/-/ready":
            if snap is None:
                return _send(start_response, "503 Service Unavailable", b"not ready\n",
                             "text/plain")
            return _send(start_response, "200 OK", b"OK\n", "text/plain")
        if snap is None:
            return _send(start_response, "503 Service Unavailable", not_ready, "application/json",
                         [("Retry-After", "5")])
        return _send(start_response, "200 OK", snap.footprint_json, "application/json")

    return app


def _send(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response(status, headers + (extra or []))
    return [body]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never blocks shutdown
    allow_reuse_address = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ExporterServer:
    """Serves `app` on host:port in a background thread; `port=0` picks a free port."""

    def __init__(self, app: WSGIApp, host: str, port: int) -> None:
        host = host.strip("[]")  # "[::]" from a HOST:PORT string
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self._httpd = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="preshift-http", daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close the socket; in-flight requests finish in daemon threads."""
        if self._thread is not None:
            self._httpd.shutdown()  # returns within one poll_interval
            self._thread.join(timeout)
        self._httpd.server_close()
