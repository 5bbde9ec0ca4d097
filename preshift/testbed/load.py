"""A bounded HTTP load generator (test equipment, for tests and the demo): N threads, a fixed
total AND a deadline.

Every request opens a NEW TCP connection (http.client, `Connection: close`), so a traffic
layer's weights and drains act on each request, as they would on many clients. Only for
loopback frontends (the testbed's HAProxy) or testbed node addresses.

    with Load("127.0.0.1", 19500, "/cgi-bin/slow", total=300, threads=6) as load:
        ...                             # shift weights while it runs
    summary = load.summary()            # statuses, failures, bodies (which node served)
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it ended (monotonic s since start), its status or error kind, and
    the first line of its body."""

    t: float
    status: int | None
    error: str | None
    body: str

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """'200', '503' or 'error:<kind>'."""
        return f"error:{self.error}" if self.error else str(self.status)


@dataclass(frozen=True)
class Summary:
    total: int
    failures: int  # errors and non-2xx answers
    statuses: dict[str, int]  # outcome -> count
    bodies: dict[str, int]  # first body line of 2xx answers -> count (which node served)
    slices: list[dict[str, int]] = field(default_factory=list)  # per slice: body/outcome -> n
    duration: float = 0.0
    stopped_early: bool = False  # by the deadline or stop(), before `total` was reached

    @property
    def rate(self) -> float:
        return self.total / self.duration if self.duration > 0 else 0.0


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, http.client.IncompleteRead):
        return "truncated"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "disconnected"
    return type(exc).__name__


class Load:
    """Send `total` GET requests from `threads` threads, stopping at `deadline` seconds at
    the latest. `interval` paces each thread (seconds between its requests)."""

    def __init__(self, host: str, port: int, path: str = "/", *, total: int = 300,
                 threads: int = 3, deadline: float = 60.0, timeout: float = 3.0,
                 interval: float = 0.0, slice_seconds: float = 1.0) -> None:
        if not host.startswith("127.") and not host.startswith("198.18."):
            raise ValueError(f"load only goes to loopback or testbed addresses, not {host}")
        if total < 1 or threads < 1 or deadline <= 0:
            raise ValueError("total, threads and deadline must be positive")
        self.host, self.port, self.path = host, port, path
        self.total, self.threads, self.deadline = total, threads, deadline
        self.timeout, self.interval, self.slice_seconds = timeout, interval, slice_seconds
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._issued = 0
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._t0 = 0.0
        self._t_end: float | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> Load:
        self._t0 = time.monotonic()
        self._workers = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
                         for i in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        """Ask the threads to stop after their current request, and wait for them."""
        self._stop.set()
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until all threads are done (at most `timeout` s); True if they are."""
        end = time.monotonic() + (self.deadline + self.timeout + 5 if timeout is None
                                  else timeout)
        for w in self._workers:
            w.join(max(0.0, end - time.monotonic()))
        done = not any(w.is_alive() for w in self._workers)
        if done and self._t_end is None:
            self._t_end = time.monotonic()
        return done

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.wait()
        else:
            self.stop()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._samples)

    def samples(self) -> list[Sample]:
        with self._lock:
            return sorted(self._samples, key=lambda s: s.t)

    # ------------------------------------------------------------------ work
    def _claim(self) -> bool:
        with self._lock:
            if self._issued >= self.total:
                return False
            self._issued += 1
            return True

    def _run(self) -> None:
        end = self._t0 + self.deadline
        while not self._stop.is_set() and time.monotonic() < end and self._claim():
            sample = self._one()
            with self._lock:
                self._samples.append(sample)
            if self.interval:
                self._stop.wait(self.interval)

    def _one(self) -> Sample:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        status: int | None = None
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            resp = conn.getresponse()
            status = resp.status
            body = resp.read().decode(errors="replace")
            first = body.splitlines()[0].strip() if body.strip() else ""
            return Sample(time.monotonic() - self._t0, status, None, first)
        except (OSError, http.client.HTTPException) as exc:
            return Sample(time.monotonic() - self._t0, status, _error_kind(exc), "")
        finally:
            conn.close()

    # ------------------------------------------------------------------ results
    def summary(self) -> Summary:
        samples = self.samples()
        statuses = Counter(s.outcome for s in samples)
        bodies = Counter(s.body for s in samples if s.ok)
        n_slices = int(samples[-1].t // self.slice_seconds) + 1 if samples else 0
        slices: list[Counter[str]] = [Counter() for _ in range(n_slices)]
        for s in samples:
            slices[int(s.t // self.slice_seconds)][s.body if s.ok else s.outcome] += 1
        end = self._t_end if self._t_end is not None else time.monotonic()
        return Summary(
            total=len(samples),
            failures=sum(1 for s in samples if not s.ok),
            statuses=dict(statuses),
            bodies=dict(bodies),
            slices=[dict(c) for c in slices],
            duration=end - self._t0 if self._t0 else 0.0,
            stopped_early=len(samples) < self.total,
        )
