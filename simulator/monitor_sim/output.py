"""Terminal output: rich tables and progress bars on a terminal, plain
lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from monitor_sim.checks import Check
from monitor_sim.load import LoadResult
from monitor_sim.replay import ReplayResult


def interactive(stream: TextIO = sys.stderr) -> bool:
    return stream.isatty()


@contextmanager
def progress_bar(total: float | None, what: str, enabled: bool) -> Iterator[Progress | None]:
    """A bar on stderr when it is a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        bar.add_task(what, total=total, extra="")
        yield bar


def replay_report(result: ReplayResult, out: TextIO = sys.stdout) -> None:
    head = (
        f"sent {result.sent}, acknowledged {result.acked}, refused {result.refused}, "
        f"failed {result.failed} in {result.seconds:.1f} s"
    )
    if out.isatty():
        console = Console(file=out)
        console.print(head)
        table = Table("", "check", "detail", show_lines=False)
        for c in result.checks:
            table.add_row("[green]ok[/]" if c.ok else "[red]FAIL[/]", c.name, c.detail)
        console.print(table)
        return
    print(head, file=out)
    for c in result.checks:
        print(
            f"{'ok  ' if c.ok else 'FAIL'} {c.name}" + (f": {c.detail}" if c.detail else ""),
            file=out,
        )


def check_lines(checks: list[Check]) -> list[str]:
    return [f"{'ok' if c.ok else 'FAIL'} {c.name} {c.detail}".rstrip() for c in checks]


def load_report(result: LoadResult, channel: str, out: TextIO = sys.stdout) -> None:
    rows = [
        ("sent", f"{result.sent:,}"),
        ("acknowledged", f"{result.acked:,}"),
        ("stored", f"{result.stored:,}"),
        ("lost (acknowledged, not stored)", f"{result.lost:,}"),
        ("duplicates (stored twice)", f"{result.duplicates:,}"),
        ("rate (stored/s of sending)", f"{result.rate:,.0f}/s over {result.seconds:.1f} s"),
        ("ingest latency p50", f"{result.p50_ms:.1f} ms"),
        ("ingest latency p99", f"{result.p99_ms:.1f} ms"),
        ("acknowledgement p50 / p99", f"{result.p50_ack_ms:.1f} / {result.p99_ack_ms:.1f} ms"),
    ]
    for reason, n in result.errors.most_common(3):
        rows.append((f"not acknowledged: {reason}", f"{n:,}"))
    if out.isatty():
        table = Table(title=f"load over {channel}", show_header=False)
        for k, v in rows:
            table.add_row(k, v)
        Console(file=out).print(table)
        return
    for k, v in rows:
        print(f"{k:34} {v}", file=out)
