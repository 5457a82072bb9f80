"""`monitor-sim` entry point (the simulator is built in its own issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("monitor-sim: not implemented yet", file=sys.stderr)
    return 2
