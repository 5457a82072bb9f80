"""The spool: every report waits here until a channel has taken it.

One SQLite file (WAL, `synchronous=FULL`: a commit is on disk before it
returns, so a report survives `kill -9` and a power cut the moment `add`
returns):

- `reports`: reports in the order they were made (`seq`), as the bytes a
  channel sends; a row leaves only when a channel has taken it (PUBACK,
  SMTP 250, serial ACK) or has refused it for good;
- `rejected`: what a channel refused for good, with the reason (SPEC 5.1),
  kept for the operator;
- `state`: collector memory (last SEL record, standing conditions), written
  in the same transaction as the reports it caused, so after a crash a
  condition is neither reported twice nor lost.

The class is synchronous and thread-safe (one connection, one lock); the
async side calls it through `asyncio.to_thread`.  Several processes may
open the same file (`monitor-agent send` next to the running agent): SQLite
locking serialises them, and a report delivered twice is harmless because
the daemon deduplicates by report id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Rejected", "Spool", "Spooled"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    body       BLOB NOT NULL,
    created    REAL NOT NULL,
    tries      INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rejected (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    body        BLOB NOT NULL,
    created     REAL NOT NULL,
    rejected_at REAL NOT NULL,
    channel     TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    id: str
    body: bytes
    created: float
    tries: int = 0


@dataclass(frozen=True, slots=True)
class Rejected:
    seq: int
    id: str
    body: bytes
    channel: str
    reason: str
    rejected_at: float


class SpoolError(Exception):
    """The spool file cannot be used (newer schema, not a database)."""


class Spool:
    def __init__(self, path: str, *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a
        # writer takes the lock up front instead of failing on upgrade.
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SpoolError(
                    f"{path}: spool schema {version} is newer than this agent's "
                    f"({SCHEMA_VERSION}); upgrade the agent"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise SpoolError(f"{path}: {exc}") from None
        except SpoolError:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    # -- reports ---------------------------------------------------------------

    def add(
        self,
        reports: Iterable[tuple[str, bytes]],
        state: Mapping[str, Any] | None = None,
    ) -> int:
        """Spool `(id, body)` pairs in order, and store `state` with them.

        One transaction: the collector memory that says "reported" is
        committed together with the reports.  A report whose id is already
        spooled is skipped (it is the same report).  Returns how many were
        added.
        """
        items = list(reports)
        created = self._now()

        def work(db: sqlite3.Connection) -> int:
            added = 0
            for report_id, body in items:
                cur = db.execute(
                    "INSERT OR IGNORE INTO reports (id, body, created) VALUES (?, ?, ?)",
                    (report_id, body, created),
                )
                added += cur.rowcount
            for key, value in (state or {}).items():
                db.execute(
                    "INSERT INTO state (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value, sort_keys=True)),
                )
            return added

        result: int = self._write(work)
        return result

    def pending(self, limit: int = 100, after: int = 0) -> list[Spooled]:
        """The oldest waiting reports, in order (seq > `after`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, body, created, tries FROM reports WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Spooled(int(r[0]), str(r[1]), bytes(r[2]), float(r[3]), int(r[4])) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM reports").fetchone()[0])

    def contains(self, report_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM reports WHERE id = ?", (report_id,)).fetchone()
        return row is not None

    def delivered(self, seq: int) -> None:
        """A channel has taken it: it leaves the spool."""
        self._write(lambda db: db.execute("DELETE FROM reports WHERE seq = ?", (seq,)))

    def failed(self, seq: int, error: str) -> None:
        """A try that did not work (kept; counted for the operator)."""
        self._write(
            lambda db: db.execute(
                "UPDATE reports SET tries = tries + 1, last_error = ? WHERE seq = ?",
                (error[:500], seq),
            )
        )

    def reject(self, seq: int, channel: str, reason: str) -> None:
        """Refused for good: move it to `rejected` so it blocks nothing behind it."""
        now = self._now()

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO rejected (seq, id, body, created, rejected_at,"
                " channel, reason) SELECT seq, id, body, created, ?, ?, ? FROM reports"
                " WHERE seq = ?",
                (now, channel, reason[:500], seq),
            )
            db.execute("DELETE FROM reports WHERE seq = ?", (seq,))

        self._write(work)

    def rejected(self) -> list[Rejected]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, body, channel, reason, rejected_at FROM rejected ORDER BY seq"
            ).fetchall()
        return [
            Rejected(int(r[0]), str(r[1]), bytes(r[2]), str(r[3]), str(r[4]), float(r[5]))
            for r in rows
        ]

    # -- collector memory ---------------------------------------------------------

    def get_state(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        self.add((), {key: value})
