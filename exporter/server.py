"""A small threaded WSGI server: /metrics, /api/v1/footprint, a landing page, health checks.

Every answer is read from what was already built: /metrics sends the collector's pre-rendered
text followed by the few runtime metrics of the process (sampled every second by a thread of
their own, see RuntimeText), and the footprint JSON is pre-rendered bytes. Only a client that
accepts nothing but OpenMetrics, or asks for a subset with `name[]`, goes through
prometheus_client's own (slower) rendering.

Why so little per request: the refresh thread runs Python for seconds at a time, and every
time a request's thread releases the GIL (any system call: accept, recv, send, each open/read
of /proc) it waits up to a switch interval to get it back. Rendering the runtime metrics on
the scrape cost ~30 such hand-offs (the /proc reads), and wsgiref sends the status line, each
header block and each body part with a send of its own; so a request costs a handful of
hand-offs instead of ~40: runtime metrics sampled apart, the response sent with one send.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import itertools
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

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


class RuntimeText:
    """The text exposition of `registry` (the process and platform collectors), re-rendered
    every `period` seconds by a daemon thread rather than on each scrape.

    Rendering reads three /proc files and lists /proc/self/fd: ~30 system calls, each a GIL
    hand-off that waits up to a switch interval while a refresh runs (about 30 ms per scrape
    at 10,000 components). Sampled apart, a scrape only picks up bytes; the values are at most
    `period` old. The thread starts on first use and ends once this object is gone."""

    def __init__(self, registry: CollectorRegistry, period: float = 1.0) -> None:
        self._registry, self._period = registry, period
        self._current: tuple[bytes, bytes] | None = None  # (text, gzip member)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def get(self) -> tuple[bytes, bytes]:
        """(text, the same as one gzip member), as of the last sample."""
        current = self._current
        if current is None:
            with self._lock:
                if self._current is None:
                    self.sample()
                    self._start()
                current = self._current
                assert current is not None
        return current

    def sample(self) -> None:
        """Render the registry now (the thread calls this every `period` seconds)."""
        text = generate_latest(self._registry)
        self._current = (text, gzip.compress(text, compresslevel=1, mtime=0))

    def _start(self) -> None:
        # The thread holds a weak reference only, so a dropped app (tests) lets it end.
        self._thread = threading.Thread(target=_sample_forever, args=(weakref.ref(self),),
                                        name="preshift-runtime", daemon=True)
        self._thread.start()


def _sample_forever(ref: weakref.ref[RuntimeText]) -> None:
    while (runtime := ref()) is not None:
        period = runtime._period
        del runtime  # no strong reference while sleeping
        time.sleep(period)
        runtime = ref()
        if runtime is None:
            return
        try:
            runtime.sample()
        except Exception:  # keep the last sample; a broken collector must not end the thread
            log.exception("sampling the runtime metrics failed")


def make_app(
    registry: CollectorRegistry,
    current: Callable[[], Snapshot | None],
    collector: SnapshotCollector | None = None,
    runtime: CollectorRegistry | None = None,
) -> WSGIApp:
    """The WSGI app. `current()` returns the latest snapshot (None before the first). With
    `collector` (registered in `registry`), /metrics sends its pre-rendered exposition followed
    by what `runtime` (the registry's other collectors, see build_registries) renders, sampled
    every second (RuntimeText)."""
    metrics_app = make_wsgi_app(registry)
    others = RuntimeText(runtime if runtime is not None else CollectorRegistry())

    def metrics(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if collector is None or not _wants_text(environ):
            return metrics_app(environ, start_response)
        ours = collector.exposition()
        extra, extra_gzipped = others.get()
        headers = [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            # Two gzip members in a row are one valid gzip stream (RFC 1952, section 2.2).
            body = [ours.gzipped, extra_gzipped]
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


class _SocketBuffer:
    """A write-only file over a socket that sends what it was given in as few sends as it can:
    when `limit` bytes are pending, and on close. wsgiref flushes after the status line, the
    headers and every body part; each send is a GIL hand-off (see the module docstring)."""

    def __init__(self, sock: socket.socket, limit: int = 4 << 20) -> None:
        self._sock, self._limit = sock, limit
        self._pending: list[bytes] = []
        self._size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= self._limit:
            self._send()
        return len(data)

    def flush(self) -> None:
        """Nothing: sending waits for `limit` bytes or close()."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):  # the client went away: nothing left to tell it
            self._send()

    def _send(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._size = [], 0
        if data:
            self._sock.sendall(data)


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.wfile = _SocketBuffer(self.connection)  # type: ignore[assignment]

    def handle(self) -> None:
        """WSGIRequestHandler.handle, writing to our buffer: its ServerHandler flushes after
        every write, which here sends nothing until the response is complete (or large)."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return
        if not self.parse_request():  # an error was sent already
            return
        handler = ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ(),
                                multithread=False)
        handler.request_handler = self  # type: ignore[attr-defined]  # for log_request
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
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
