"""`monitor-agent` entry point (the agent is built in its own issue)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("monitor-agent: not implemented yet", file=sys.stderr)
    return 2
