"""ETS fits in a child process, so the exporter process stays small and answers scrapes at once.

Why: each fit is ~7 ms of C++ that holds the GIL; in the exporter's own process the fits
stalled the HTTP thread behind them (p99 of /metrics about 0.6 s during a refresh at 10,000
components), and statsforecast's imports would add to its RSS. The child does the fits; the
refresh thread waits on a pipe, which releases the GIL. The child loads statsforecast's ETS
code alone (see preshift.score.ets_fit: no pandas, scipy or statsmodels), about 30 MiB of RSS
instead of the ~180 MiB of a Python that imports statsforecast.

`ProcessFitter` is a `Fitter` (y → EtsParams) for `Forecaster(fitter=...)`. The child is
`python -m exporter.fitworker`, started on the first fit; it exits when its stdin closes. A
fit that errors comes back as an exception (the forecaster keeps the series' current model);
a child that dies or does not answer within `timeout` is killed and started again on the next
fit. Protocol on stdin/stdout: a request is a uint32 count then that many float64; an answer is
one int8 (0 ok, else error) then 7 float64 (kind, alpha, beta, phi, sigma2, level, trend).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from preshift.score.ets_model import EtsParams, ModelKind

log = logging.getLogger(__name__)

_COUNT = struct.Struct("<I")
_ANSWER = struct.Struct("<b7d")
ROOT = Path(__file__).resolve().parents[1]  # holds the exporter and preshift packages
NICE = 10  # added to the child's niceness (see _serve)


class ProcessFitter:
    """Fits series in one long-lived child process (thread-safe; one fit at a time)."""

    def __init__(self, timeout: float = 10.0, start_timeout: float = 60.0) -> None:
        self.timeout, self.start_timeout = timeout, start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._fresh = False  # the child has not answered yet (it is loading the ETS code)
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __call__(self, y: npt.NDArray[np.float64]) -> EtsParams:
        request = _COUNT.pack(y.size) + np.ascontiguousarray(y, dtype="<f8").tobytes()
        with self._lock:
            try:
                answer = self._ask(request)
            except OSError:  # the child died (killed, crashed) before or while answering:
                answer = self._ask(request)  # once more, with a new one
        status, kind, *rest = _ANSWER.unpack(answer)
        if status != 0:
            raise ValueError("fit worker: the fit failed")
        return EtsParams(ModelKind(int(kind)), *rest)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the child (close its stdin, then kill it if it lingers)."""
        with self._lock:
            if self._proc is not None:
                self._stop(self._proc, timeout)

    # -- internals ----------------------------------------------------------------------------

    def _ask(self, request: bytes) -> bytes:
        proc = self._running()
        assert proc.stdin is not None
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
            answer = self._read(proc, _ANSWER.size,
                                self.start_timeout if self._fresh else self.timeout)
        except TimeoutError as exc:  # stuck: kill it; the next fit starts a new one
            self._stop(proc, 0.0)
            raise RuntimeError(f"fit worker: {exc}") from exc
        except OSError:
            self._stop(proc, 0.0)
            raise
        self._fresh = False
        return answer

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "exporter.fitworker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env=env, close_fds=True,
            )
            self._fresh = True
            log.info("fit worker started (pid %d)", self._proc.pid)
        return self._proc

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], size: int, timeout: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        while len(buf) < size:
            ready, _, _ = select.select([fd], [], [], timeout)  # waits without the GIL
            if not ready:
                raise TimeoutError(f"no answer within {timeout:g} s")
            chunk = os.read(fd, size - len(buf))
            if not chunk:
                raise OSError(f"the worker exited (code {proc.poll()})")
            buf += chunk
        return buf

    def _stop(self, proc: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:  # a broken pipe: the child is gone already
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if self._proc is proc:
            self._proc = None


def _serve() -> int:
    """The child: answer fit requests on stdin until it closes."""
    # The pipe is the protocol: anything a library prints goes to stderr instead.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the exporter; it closes us
    # Fits are background work that a budget already bounds; a scrape is waited for. When the
    # CPUs are busy (2 cores: the fits, the refresh thread, the HTTP thread, Prometheus...),
    # the scheduler should run the exporter's threads first: /metrics p99 during the fits rose
    # to 40-80 ms (max 0.5 s) at a load average of 4-6 with the worker at the same priority.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    from preshift.score.ets_fit import fit_auto_ets  # statsforecast's ETS lives here only

    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(_COUNT.size)
        if len(head) < _COUNT.size:
            return 0  # the exporter closed the pipe
        (count,) = _COUNT.unpack(head)
        body = stdin.read(8 * count)
        if len(body) < 8 * count:
            return 0
        y = np.frombuffer(body, dtype="<f8")
        try:
            p = fit_auto_ets(y)
            answer = _ANSWER.pack(0, int(p.kind), p.alpha, p.beta, p.phi, p.sigma2, p.level,
                                  p.trend)
        except Exception:  # any failure: the parent keeps the series' current model
            answer = _ANSWER.pack(1, 0, *([float("nan")] * 6))
        stdout.write(answer)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(_serve())
