"""The pure modules of the act layer import no database, HTTP or Docker library."""

from __future__ import annotations

import subprocess
import sys

PURE = ["preshift.act.phases", "preshift.act.records", "preshift.act.machine",
        "preshift.act.analysis", "preshift.act.safety", "preshift.act.effects",
        "preshift.act.events"]


def test_pure_modules_import_no_io_library() -> None:
    code = (f"import sys; [__import__(m) for m in {PURE!r}]; "
            "print(sorted(m for m in ('sqlite3', 'requests', 'docker', 'urllib3') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
