"""A tiny busybox image built without any registry: a rootfs tarball made with tarfile.

Inside the image (from the testbed notes): busybox `wget` segfaults, so use `nc`; `httpd` as
PID 1 ignores SIGTERM, so run containers with init=True (or a short stop grace period).
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

from ..errors import TestbedError

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh", "httpd", "sleep", "echo", "cat", "nc", "ls", "ps", "hostname", "env", "date", "true",
    "false", "kill", "mkdir", "rm", "grep", "sed", "head", "tail", "printf", "wc",
)
#: Image config set at import: the default command serves /www on port 80.
IMAGE_CHANGES = ('CMD ["httpd", "-f", "-p", "80", "-h", "/www"]',)

# A slow endpoint for drain tests; $NODE comes from the container's environment.
SLOW_CGI = b"#!/bin/sh\necho Content-Type: text/plain\necho\nsleep 0.2\necho $NODE\n"
# An endpoint tests can make fail inside ONE container: 503 while /tmp/fail exists there
# (`docker exec C touch /tmp/fail`); the body names the container (its hostname).
APP_CGI = (
    b"#!/bin/sh\nif [ -f /tmp/fail ]; then\n"
    b"printf 'Status: 503 Service Unavailable\\r\\n"
    b"Content-Type: text/plain\\r\\n\\r\\nfailing\\n'\n"
    b"exit 0\nfi\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n"
)
FILES: dict[str, tuple[bytes, int]] = {
    "www/index.html": (b"preshift-box\n", 0o644),
    "www/cgi-bin/slow": (SLOW_CGI, 0o755),
    "www/cgi-bin/app": (APP_CGI, 0o755),
    "etc/passwd": (b"root:x:0:0:root:/:/bin/sh\n", 0o644),
    "etc/group": (b"root:x:0:\n", 0o644),
}
DIRS = ("bin", "www", "www/cgi-bin", "etc", "tmp")


def _info(name: str, kind: bytes, mode: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_rootfs_tar(busybox: Path = BUSYBOX) -> bytes:
    """The image rootfs as an uncompressed tar (about 2 MB), owned by root."""
    try:
        payload = busybox.read_bytes()
    except OSError as exc:
        raise TestbedError(
            f"cannot read {busybox} ({exc.strerror}): apt-get install busybox-static"
        ) from None
    now = time.time()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in DIRS:
            tar.addfile(_info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, now))
        info = _info("bin/busybox", tarfile.REGTYPE, 0o755, now)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        for applet in APPLETS:
            link = _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, now)
            link.linkname = "busybox"
            tar.addfile(link)
        for name, (data, mode) in FILES.items():
            info = _info(name, tarfile.REGTYPE, mode, now)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
