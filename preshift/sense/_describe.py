"""Turn a foreign exception (requests, urllib3, docker-py, socket) into a short human message.

Libraries wrap the real cause several layers deep ("Error while fetching server API version:
('Connection aborted.', FileNotFoundError(2, ...))"). Operators need the cause, not the wrapping.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import requests
import urllib3.exceptions


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (cause, context, exception args, urllib3's `.reason`)."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 50:  # bounded: chains are short, but never trust a cycle
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]
        stack.extend(x for x in nested if isinstance(x, BaseException))


_TIMEOUTS = (
    TimeoutError,
    socket.timeout,
    requests.Timeout,
    urllib3.exceptions.TimeoutError,
)


def describe(exc: BaseException, timeout: float | None = None) -> str:
    """The most useful one-line reason found anywhere in `exc`'s chain."""
    chain = list(_chain(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    for e in chain:
        if isinstance(e, FileNotFoundError):
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            return f"socket not found{where}: is the engine running?"
    if any(isinstance(e, _TIMEOUTS) for e in chain):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "cannot resolve the host name"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain):
        return "connection reset by the server"
    if any(isinstance(e, requests.exceptions.SSLError) for e in chain):
        return f"TLS error: {_first_line(exc)}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."
