"""`python -m exporter ...`: the same as `preshift exporter ...`."""

from __future__ import annotations

import sys

from preshift.cli import main

if __name__ == "__main__":
    sys.exit(main(["exporter", *sys.argv[1:]]))
