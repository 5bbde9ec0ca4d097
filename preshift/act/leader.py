"""One executor at a time: an exclusive `flock` on `<journal>.lock`.

Every gunicorn worker runs an executor thread that tries to take the lock; the one that
holds it acts, the others keep trying. The kernel releases the lock when its holder dies
(even by kill -9), so a restarted webhook takes over without a stale-lease timeout.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LeaderLock:
    """Non-blocking exclusive lock on a file next to the journal."""

    def __init__(self, journal_path: str | Path) -> None:
        self.path = Path(f"{journal_path}.lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process holds it now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
