"""Leftover removal and detection: mounts, cgroups, directories, stray processes.

Everything is found by the prefix's own names (dirs base_dir/prefix and run_dir/prefix,
cgroups preshift-<prefix>-n<i>), so a crashed or killed run is cleaned as well as a live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import TestbedError
from .procs import cmdline, run
from .spec import TestbedSpec

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
# Dirs outside ours that the daemons create whatever their config says, children first:
# containerd 1.6 shims put their sockets in /run/containerd/s; dockerd 20.10 always uses
# /run/docker/plugins as plugin exec root; `ip netns add` creates (and bind-mounts) /run/netns.
SHARED_DIRS = (
    Path("/run/containerd/s"), Path("/run/containerd"),
    Path("/run/docker/plugins"), Path("/run/docker"),
    NETNS_DIR,
)
#: In run_dir: shared dirs that did not exist before a testbed started (JSON list).
LEDGER_NAME = ".shared-dirs.json"


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _under(path: str, roots: tuple[Path, ...]) -> bool:
    return any(path == str(r) or path.startswith(f"{r}/") for r in roots)


def mounts_under(roots: tuple[Path, ...]) -> list[str]:
    """Mount points below `roots`, deepest first (the order to unmount them in)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if _under(point, roots):
                found.append(point)
    return sorted(found, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_all(roots: tuple[Path, ...], passes: int = 5) -> None:
    """Lazily unmount everything below `roots` (overlays, shm, netns binds), deepest first.
    Several passes, because mounts can be stacked on one mount point."""
    for _ in range(passes):
        points = mounts_under(roots)
        if not points:
            return
        for point in points:
            run(["umount", "-l", point], check=False)
    if mounts_under(roots):
        raise TestbedError(f"could not unmount: {', '.join(mounts_under(roots))}")


def _cgroup_dirs(spec: TestbedSpec) -> list[Path]:
    found = []
    seen = set()
    for hierarchy in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        real = hierarchy.resolve()
        if real in seen or not real.is_dir():
            continue  # cpu -> cpu,cpuacct and the like
        seen.add(real)
        with contextlib.suppress(OSError):
            found += [p for p in real.iterdir() if p.is_dir() and spec.cgroup_re.match(p.name)]
    return found


def _cgroup_procs(group: Path) -> list[int]:
    pids: list[int] = []
    for procs in group.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(x) for x in procs.read_text().split()]
    return pids


def remove_cgroups(spec: TestbedSpec) -> None:
    """rmdir our cgroup parents bottom-up. Processes still inside are reported, not killed:
    they are containers our engines and containerd failed to stop."""
    for group in _cgroup_dirs(spec):
        pids = _cgroup_procs(group)
        if pids:
            raise TestbedError(f"cgroup {group} still holds processes {pids}")
        for sub in sorted(group.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


def remove_dirs(spec: TestbedSpec) -> None:
    """Delete the prefix's dirs; refused while anything is still mounted below them."""
    roots = (spec.root, spec.run)
    left = mounts_under(roots)
    if left:
        raise TestbedError(f"refusing to delete {roots}: still mounted: {', '.join(left)}")
    for d in roots:
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            raise TestbedError(f"could not delete {d}")


@contextlib.contextmanager
def _shared_lock(spec: TestbedSpec) -> Iterator[None]:
    """Serialise claim/release between testbeds: flock on run_dir's parent (e.g. /run),
    which always exists and keeps no trace once the lock is released."""
    fd = os.open(spec.run_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ledger(spec: TestbedSpec) -> Path:
    return spec.run_dir / LEDGER_NAME


def claim_shared_dirs(spec: TestbedSpec) -> None:
    """Create our run dir and note in the ledger which shared dirs do not exist yet (if they
    appear, testbed daemons made them). Call before creating anything else."""
    with _shared_lock(spec):
        spec.run.mkdir(parents=True, exist_ok=True)
        ledger = _ledger(spec)
        known = set(json.loads(ledger.read_text())) if ledger.exists() else set()
        known |= {str(d) for d in SHARED_DIRS if not d.exists()}
        ledger.write_text(json.dumps(sorted(known)))


def release_shared_dirs(spec: TestbedSpec) -> None:
    """The last testbed out removes the shared dirs testbeds created (if empty), the ledger
    and the parent dirs. While another prefix is active, they stay for it."""
    with _shared_lock(spec):
        if not spec.run_dir.is_dir():
            return
        if any(p.name != LEDGER_NAME for p in spec.run_dir.iterdir()):
            return
        ledger = _ledger(spec)
        known = set(json.loads(ledger.read_text())) if ledger.exists() else set()
        for d in SHARED_DIRS:
            if str(d) not in known or not d.is_dir() or any(d.iterdir()):
                continue
            if d == NETNS_DIR:
                # iproute2 bind-mounts /run/netns on itself (same fs: os.path.ismount misses it)
                for _ in range(3):
                    if str(d) not in mounts_under((d,)):
                        break
                    run(["umount", str(d)], check=False)
            with contextlib.suppress(OSError):
                d.rmdir()
        # A dir that is not empty now serves something else (e.g. a system containerd started
        # meanwhile): it stays, and stops being ours to remove.
        ledger.unlink(missing_ok=True)
        for parent in (spec.run_dir, spec.base_dir):
            with contextlib.suppress(OSError):
                parent.rmdir()


def stray_processes(spec: TestbedSpec) -> list[str]:
    """Processes whose command line mentions our dirs (read-only check, never signalled)."""
    roots = (spec.root, spec.run)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = cmdline(int(entry.name))
        if any(_under(a.split("=", 1)[-1], roots) or any(f"{r}/" in a for r in roots)
               for a in argv):
            found.append(f"process {entry.name} ({' '.join(argv)[:120]})")
    return found


def leftovers(spec: TestbedSpec) -> list[str]:
    """Non-network leftovers of the prefix (see net.leftovers for the network)."""
    found = [f"mount {m}" for m in mounts_under((spec.root, spec.run))]
    found += [f"cgroup {g}" for g in _cgroup_dirs(spec)]
    found += [f"dir {d}" for d in (spec.root, spec.run) if d.exists()]
    found += stray_processes(spec)
    return found
