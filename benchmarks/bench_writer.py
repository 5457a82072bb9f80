"""Group-commit writer vs. its baselines, measured in the same run.

    .venv/bin/python benchmarks/bench_writer.py [--rows 20000] [--callers 64]

Rows are ~300 bytes (PERF.md's setup), WAL, synchronous=FULL, on the disk of
the working directory (a tmpfs would make fsync free and the figures
meaningless).  Prints medians of 3 runs:
  per-row commit (stdlib sqlite3)   — the naive durable baseline
  batched commit of 100 (stdlib)     — PERF.md's "batched SQLite ceiling"
  GroupCommitWriter, N async callers — what the daemon does
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from monitor.store.writer import GroupCommitWriter

PAYLOAD = "x" * 300
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)"


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _fresh(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    conn = _connect(path)
    conn.execute(SCHEMA)
    conn.close()
    return path


def per_row(path: str, rows: int) -> float:
    conn = _connect(path)
    start = time.perf_counter()
    for i in range(rows):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (f"k{i}", PAYLOAD))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def batched(path: str, rows: int, batch: int = 100, many: bool = False) -> float:
    """Commit every `batch` rows: one execute per row (PERF.md's setup, and
    what the writer does), or one executemany per batch (a higher bound)."""
    conn = _connect(path)
    start = time.perf_counter()
    for i in range(0, rows, batch):
        conn.execute("BEGIN")
        params = [(f"k{j}", PAYLOAD) for j in range(i, min(rows, i + batch))]
        if many:
            conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", params)
        else:
            for p in params:
                conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", p)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def group_commit(path: str, rows: int, callers: int) -> tuple[float, float]:
    writer = GroupCommitWriter(lambda: _connect(path))
    writer.start()

    async def caller(n: int, count: int) -> None:
        for i in range(count):
            key = f"c{n}-{i}"
            await writer.submit(
                lambda conn, key=key: conn.execute(
                    "INSERT INTO t (k, v) VALUES (?, ?)", (key, PAYLOAD)
                )
            )

    async def main() -> float:
        per = rows // callers
        start = time.perf_counter()
        await asyncio.gather(*(caller(n, per) for n in range(callers)))
        return (per * callers) / (time.perf_counter() - start)

    rate = asyncio.run(main())
    writer.close()
    return rate, writer.jobs / max(1, writer.batches)


def median_of(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the databases go (default: ./var)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    folder = args.dir or str(Path("var").resolve())
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        row_rate = median_of(lambda: per_row(_fresh(tmp, "a.db"), args.rows // 4), args.runs)
        batch_rate = median_of(lambda: batched(_fresh(tmp, "b.db"), args.rows), args.runs)
        many_rate = median_of(lambda: batched(_fresh(tmp, "m.db"), args.rows, many=True), args.runs)
        results = [
            group_commit(_fresh(tmp, "c.db"), args.rows, args.callers) for _ in range(args.runs)
        ]
    gc_rate = statistics.median(r[0] for r in results)
    mean_batch = statistics.median(r[1] for r in results)
    out = {
        "per_row_commit_rows_s": round(row_rate),
        "batched_100_rows_s": round(batch_rate),
        "batched_100_executemany_rows_s": round(many_rate),
        "group_commit_rows_s": round(gc_rate),
        "callers": args.callers,
        "mean_batch": round(mean_batch, 1),
        "vs_per_row": round(gc_rate / row_rate, 2),
        "vs_batched_ceiling": round(gc_rate / batch_rate, 3),
        "vs_executemany": round(gc_rate / many_rate, 3),
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"per-row commit (stdlib)        {out['per_row_commit_rows_s']:>8} rows/s")
    print(f"batched 100 (stdlib, ceiling)  {out['batched_100_rows_s']:>8} rows/s")
    print(f"batched 100 (executemany)      {out['batched_100_executemany_rows_s']:>8} rows/s")
    print(
        f"group commit, {args.callers} callers      {out['group_commit_rows_s']:>8} rows/s"
        f"  (mean batch {out['mean_batch']})"
    )
    print(
        f"ratio to per-row: {out['vs_per_row']}x; to batched ceiling: "
        f"{out['vs_batched_ceiling']:.0%}; to executemany: {out['vs_executemany']:.0%}"
    )


if __name__ == "__main__":
    main()
