"""SQLite store: WAL, synchronous=FULL, numbered migrations, one writer.

Writes go through the group-commit writer thread; reads run on a small pool
of read-only connections (WAL readers never block the writer).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

import structlog

from monitor.store.writer import GroupCommitWriter, StorageUnavailable

log = structlog.get_logger("monitor.store")

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


class SchemaTooNew(Exception):
    """The database was written by a newer version of this software."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    found = []
    for entry in resources.files("monitor.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def latest_version() -> int:
    return max(v for v, _, _ in migrations())


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # FULL: the WAL is fsynced at every commit, so a commit that returned
    # survives power loss and kill -9 alike.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations, each in its own transaction."""
    current = schema_version(conn)
    newest = latest_version()
    if current > newest:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this software's {newest}; "
            "upgrade express-monitor or restore a matching backup"
        )
    applied = []
    for version, name, sql in migrations():
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _statements(sql: str) -> list[str]:
    # executescript would COMMIT on its own; split to stay in our transaction.
    out, buf = [], []
    for line in sql.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") or not stripped:
            continue
        buf.append(line)
        if stripped.endswith(";") and sqlite3.complete_statement("\n".join(buf)):
            out.append("\n".join(buf))
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out


class Store:
    def __init__(self, path: str, readers: int = 2) -> None:
        self.path = path
        self._writer: GroupCommitWriter | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-read")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._open = False

    def open(self) -> list[str]:
        """Create or migrate the database and start the writer (blocking)."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        try:
            applied = migrate(conn)
        finally:
            conn.close()
        if applied:
            log.info("migrations applied", migrations=applied, path=self.path)
        self._writer = GroupCommitWriter(lambda: connect(self.path))
        self._writer.start()
        self._open = True
        return applied

    @property
    def up(self) -> bool:
        """Open, and the last commit (if any) succeeded."""
        return self._open and self._writer is not None and self._writer.healthy

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StorageUnavailable("store not open")
        return await self._writer.submit(fn)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    def close(self) -> None:
        self._open = False
        if self._writer is not None:
            self._writer.close()
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    @property
    def stats(self) -> tuple[int, int]:
        w = self._writer
        return (w.batches, w.jobs) if w else (0, 0)


def backup(path: str, out: str) -> None:
    """Online, consistent copy with SQLite's backup API."""
    src = connect(path, readonly=True)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


__all__ = ["SchemaTooNew", "StorageUnavailable", "Store", "backup", "migrate", "schema_version"]
