"""`Traffic` over HAProxy's runtime API (the admin `stats socket`), HAProxy 2.4+.

One short connection per command: HAProxy answers a non-interactive connection and closes
it. HAProxy reports errors as plain text ("No such backend.", "No such server.", ...), so
each command's answer is matched against what success looks like and anything else
becomes an ActionError quoting HAProxy. Tested with Debian's HAProxy 2.6.12, where `add
server`/`del server` need no experimental mode; the backend must use a dynamic balance
algorithm (roundrobin, leastconn, random) for weights other than 0%/100%.
"""

from __future__ import annotations

import csv
import socket
from pathlib import Path

from ..errors import ActionError, SourceError
from .ports import Server

# Answers that mean success (HAProxy prints nothing for most successful commands).
_OK_PREFIXES = ("New server registered.", "Server deleted.", "IP changed from", "no need to change")
_NO_SERVER = "No such server."
_NO_CHECK = "Health check was not configured"
# A server's check settings when added at run time: fast enough for a canary step.
ADD_SERVER_CHECK = "check inter 500ms fall 2 rise 1"
MAX_ANSWER = 16 << 20  # `show stat` of a big config is a few MB; never read without bound


class HAProxy:
    """One HAProxy instance, reached through its admin socket (`level admin`)."""

    def __init__(self, socket_path: str | Path, timeout: float = 2.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = float(timeout)

    # ------------------------------------------------------------------ transport
    def command(self, line: str) -> str:
        """Send one command, return HAProxy's whole answer (stripped). Socket failures
        raise OSError; callers turn them into SourceError/ActionError."""
        if "\n" in line or ";" in line:
            # `;` chains commands in the runtime API: never let a name smuggle one in
            raise ActionError(f"HAProxy command must be one line without ';': {line!r}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
            s.sendall(line.encode() + b"\n")
            chunks, size = [], 0
            while size < MAX_ANSWER:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        return b"".join(chunks).decode(errors="replace").strip()

    def _change(self, line: str, *, tolerate: tuple[str, ...] = ()) -> str:
        """Run a command that changes something; raise ActionError unless it succeeded."""
        try:
            answer = self.command(line)
        except OSError as exc:
            raise ActionError(
                f"HAProxy at {self.socket_path}: {line!r} failed: {_os_reason(exc)}",
                retriable=True,
            ) from exc
        if not answer or answer.startswith(_OK_PREFIXES) or answer.startswith(tolerate):
            return answer
        first = answer.splitlines()[0]
        # "Server still has connections", "Only servers in maintenance..." pass with time
        retriable = not first.startswith(("No such", "Unknown command", "Require", "Absolute"))
        raise ActionError(f"HAProxy refused {line!r}: {first}", retriable=retriable)

    # ------------------------------------------------------------------ reading
    def stats(self) -> list[dict[str, str]]:
        """Every row of `show stat`, keyed by the CSV header's field names."""
        try:
            text = self.command("show stat")
        except OSError as exc:
            raise SourceError(f"HAProxy at {self.socket_path}", _os_reason(exc)) from exc
        if not text.startswith("# "):
            raise SourceError(f"HAProxy at {self.socket_path}",
                              f"unexpected answer to 'show stat': {text[:200]!r}",
                              retriable=False)
        lines = text[2:].splitlines()
        return [row for row in csv.DictReader(lines) if row.get("pxname")]

    def servers(self, backend: str) -> dict[str, Server]:
        rows = [r for r in self.stats() if r["pxname"] == backend]
        if not rows:
            raise SourceError(f"HAProxy at {self.socket_path}",
                              f"no backend {backend!r} (see traffic.backends)", retriable=False)
        out = {}
        for r in rows:
            if r["svname"] in ("BACKEND", "FRONTEND"):
                continue
            host, _, port = (r.get("addr") or "").rpartition(":")
            out[r["svname"]] = Server(
                name=r["svname"],
                address=host.strip("[]"),
                port=_int(port),
                weight=_int(r.get("weight")),
                status=r.get("status") or "",
                sessions=_int(r.get("scur")),
                requests=_int(r.get("stot")),
                failures=sum(_int(r.get(k)) for k in ("hrsp_5xx", "eresp", "econ")),
            )
        return out

    # ------------------------------------------------------------------ changing
    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        target = f"{backend}/{name}"
        existing = self._servers_for_change(backend).get(name)
        fresh = existing is None
        if fresh:
            answer = self._change(
                f"add server {target} {_addr(address)}:{int(port)} weight 0 {ADD_SERVER_CHECK}",
                tolerate=("Already exists",),  # a concurrent add won the race: re-point below
            )
            existing = None if answer.startswith("New server") else self.servers(backend)[name]
        if existing is not None and (existing.address, existing.port) != (address, int(port)):
            # a different instance behind an old name: no traffic until it is shifted again
            fresh = True
            self._change(f"set server {target} weight 0")
            self._change(f"set server {target} addr {address} port {int(port)}")
        checked = not self._change(f"enable health {target}", tolerate=(_NO_CHECK,))
        self._change(f"enable server {target}")  # leaves MAINT (and DRAIN)
        if fresh and checked:
            # HAProxy assumes a server leaving MAINT is UP ("UP 1/2") until `fall` checks
            # fail; forced DOWN, it shows UP only once `rise` checks passed
            self._change(f"set server {target} health down")

    def set_weight(self, backend: str, name: str, weight: int) -> None:
        if not 0 <= int(weight) <= 256:
            raise ActionError(f"weight {weight} for {backend}/{name}: use 0..256")
        self._change(f"set server {backend}/{name} weight {int(weight)}")

    def drain(self, backend: str, name: str) -> None:
        self._change(f"set server {backend}/{name} state drain")

    def ready(self, backend: str, name: str) -> None:
        self._change(f"set server {backend}/{name} state ready")

    def remove_server(self, backend: str, name: str) -> None:
        target = f"{backend}/{name}"
        if self._change(f"set server {target} state maint", tolerate=(_NO_SERVER,)):
            return  # already gone
        self._change(f"del server {target}", tolerate=(_NO_SERVER,))

    def _servers_for_change(self, backend: str) -> dict[str, Server]:
        """servers(), with reading errors reported as the failed change they block."""
        try:
            return self.servers(backend)
        except SourceError as exc:
            raise ActionError(str(exc), retriable=exc.retriable) from exc


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _addr(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "socket not found: is HAProxy running with this stats socket?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: HAProxy is not listening on the socket"
    if isinstance(exc, PermissionError):
        return "permission denied on the socket"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return exc.strerror or str(exc) or type(exc).__name__
