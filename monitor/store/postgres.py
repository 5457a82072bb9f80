"""PostgreSQL store (`database = "postgresql://…"`): several daemons, one database.

Same shape as the SQLite store: one group-commit writer thread per instance
runs the callers' transaction functions (the same functions, through
`pgadapter.Connection`), reads run on a small pool of autocommit
connections.  What differs is concurrency with *other instances*:

- Each batch runs at REPEATABLE READ, each job under its own SAVEPOINT.  A
  job that meets another instance's concurrent change (serialization
  failure, deadlock, or a unique violation such as two instances opening the
  same fingerprint or storing the same report) is rolled back to its
  savepoint alone and run again in the next transaction, where it sees the
  other instance's committed row (and folds, or finds the duplicate).  So
  dedup, incident creation, folding and scheduler steps are exactly-once by
  the database's unique keys and row versions, not by luck.
- A trigger on `events` NOTIFYs every change; `Fanout`
  (`monitor/store/pgfanout.py`) LISTENs and is the one publisher to the
  local EventBus, this instance's changes included, in commit-safe seq
  order, so SSE clients of any instance see every change and can resume by
  `Last-Event-ID` without a gap.
- Connection loss (PostgreSQL restarting, crashing): the writer reconnects
  at its next batch and, while unhealthy and idle, probes every second so
  `/readyz` recovers without traffic; a read on a lost connection is retried
  once on a new one, else it fails with `StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar, cast

import structlog

from monitor.store.pgadapter import Connection, retryable
from monitor.store.pgfanout import Fanout, Publish
from monitor.store.sqlite import SchemaTooNew, Store
from monitor.store.writer import (
    GroupCommitWriter,
    StorageUnavailable,
    _Job,
    _resolve_all,
)

log = structlog.get_logger("monitor.store")

T = TypeVar("T")

CALM_BATCHES = 8  # clean batches in a row before running without savepoints
MAX_ROUNDS = 8  # a job that conflicts this often in a row fails (StorageUnavailable)
# A job waiting on a row another instance's open batch holds gives up soon
# and runs again in our next transaction: waiting would hold our own batch's
# locks meanwhile (convoys, and deadlocks found only after deadlock_timeout).
LOCK_TIMEOUT_MS = 50
PROBE_INTERVAL = 1.0  # seconds between health probes of an unhealthy, idle writer
FANOUT_READY_TIMEOUT = 10.0


def migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("monitor.store").joinpath("migrations_pg").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def schema_version(conn: Connection) -> int:
    conn.run("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations; an advisory lock keeps racing instances in line."""
    applied: list[str] = []
    conn.run("BEGIN")
    try:
        conn.run("SELECT pg_advisory_xact_lock(7428190013)")
        current = schema_version(conn)
        newest = max(v for v, _, _ in migrations())
        if current > newest:
            raise SchemaTooNew(
                f"database schema version {current} is newer than this software's {newest}; "
                "upgrade express-monitor or restore a matching backup"
            )
        for version, name, sql in migrations():
            if version <= current:
                continue
            conn.run(sql)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            applied.append(name)
        conn.run("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.run("ROLLBACK")
        raise
    return applied


class _Unguarded(Exception):
    """A job failed in a batch run without savepoints; it was rolled back."""


class _Stale(sqlite3.OperationalError):
    """BEGIN failed: the server had closed the connection; nothing ran."""


class PgWriter(GroupCommitWriter):
    """The group-commit writer against PostgreSQL, with conflict retries."""

    def __init__(self, url: str) -> None:
        super().__init__(lambda: cast(sqlite3.Connection, Connection.connect(url)), "pg-writer")
        self._url = url
        self.retries = 0
        self.backend_pid = 0
        self._calm = 0  # batches in a row without a failing job

    def _run(self) -> None:
        try:
            conn = self._open_conn()
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            stop = False
            while not stop:
                first = self._next_job(conn)
                if isinstance(first, Connection):
                    conn = first  # probed while idle
                    continue
                batch, stop = self._rest_of_batch(first)
                if not batch:
                    break
                if conn.broken:
                    # one error line per outage, not one per batch
                    conn = self._reconnect(conn, quiet=not self.healthy)
                try:
                    conn = self._pg_batch(conn, batch)
                except BaseException as exc:
                    self._crashed(cast(sqlite3.Connection, conn), batch, exc)
        finally:
            conn.close()

    def _next_job(self, conn: Connection) -> _Job | Connection | None:
        """Block for the next job (None: close).  While unhealthy, give up
        after PROBE_INTERVAL and probe the database instead: the connection
        to use from now on comes back, healthy again if the probe passed."""
        if self.healthy:
            return self._queue.get()
        try:
            return self._queue.get(timeout=PROBE_INTERVAL)
        except queue.Empty:
            return self._probe(conn)

    def _probe(self, conn: Connection) -> Connection:
        if conn.broken:
            conn = self._reconnect(conn, quiet=True)
            if conn.broken:
                return conn
        try:
            conn.run("SELECT 1")
            conn.run("COMMIT")  # psycopg opened a transaction: BEGIN must come first
        except sqlite3.Error as exc:
            log.debug("database probe failed", error=str(exc))
            return conn
        log.info("database reachable again")
        self.healthy = True
        return conn

    def _open_conn(self) -> Connection:
        conn = Connection.connect(self._url)
        conn.run(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        conn.run("COMMIT")
        self.backend_pid = conn.backend_pid
        return conn

    def _reconnect(self, old: Connection, quiet: bool = False) -> Connection:
        with contextlib.suppress(Exception):
            old.close()
        try:
            conn = self._open_conn()
        except sqlite3.Error as exc:
            (log.debug if quiet else log.error)("database reconnect failed", error=str(exc))
            return old  # still broken: this batch fails, the next one tries again
        log.info("database reconnected")
        return conn

    def _pg_batch(self, conn: Connection, batch: list[_Job]) -> Connection:
        """Run a batch; the connection to use from now on comes back."""
        results: list[tuple[_Job, Any, BaseException | None]] = []
        pending = batch
        conflicts: list[tuple[_Job, BaseException]] = []
        reconnected = False
        # Without contention a batch runs without savepoints (two round trips
        # a job fewer); the first failing job rolls it back and the batch
        # runs again guarded, each job under its own savepoint, so that job
        # alone fails or waits for the next round.
        guarded = self._calm < CALM_BATCHES
        for _ in range(MAX_ROUNDS):
            try:
                (done, conflicts), guarded = self._attempt(conn, pending, guarded)
            except sqlite3.Error as exc:
                if isinstance(exc, _Stale) and not reconnected:
                    # The server closed our idle connection (it restarted
                    # while we had nothing to write): nothing of the batch
                    # ran, so run it on a new connection rather than fail it.
                    reconnected = True
                    conn = self._reconnect(conn, quiet=True)
                    if not conn.broken:
                        continue
                # the first failure of an outage is an error; the rest, until
                # a commit or probe succeeds, would only repeat it
                (log.error if self.healthy else log.debug)(
                    "commit failed", error=str(exc), batch=len(pending)
                )
                with contextlib.suppress(Exception):
                    if not conn.broken:
                        conn.run("ROLLBACK")
                error = StorageUnavailable(str(exc))
                results.extend((job, None, error) for job in pending)
                done, conflicts = [], []
            results.extend(done)
            pending = [job for job, _ in conflicts]
            if not pending:
                break
            self.retries += len(pending)
        # Still conflicting after MAX_ROUNDS: not a race but the job's own
        # doing (a real duplicate key): its caller gets the error itself.
        for job, last in conflicts:
            if isinstance(last, sqlite3.OperationalError):
                last = StorageUnavailable(str(last))
            results.append((job, None, last))
        self.healthy = all(not isinstance(r[2], StorageUnavailable) for r in results)
        self.batches += 1
        self.jobs += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]]
        by_loop = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, items)
        return conn

    def _attempt(
        self, conn: Connection, batch: list[_Job], guarded: bool
    ) -> tuple[
        tuple[list[tuple[_Job, Any, BaseException | None]], list[tuple[_Job, BaseException]]],
        bool,
    ]:
        """`_pg_execute`, again guarded when the unguarded run met a failing job."""
        try:
            return self._pg_execute(conn, batch, guarded), guarded
        except _Unguarded:
            self._calm = 0
            return self._pg_execute(conn, batch, True), True

    def _pg_execute(
        self, conn: Connection, batch: list[_Job], guarded: bool = True
    ) -> tuple[list[tuple[_Job, Any, BaseException | None]], list[tuple[_Job, BaseException]]]:
        """One transaction: (finished jobs, jobs to run again after a conflict).

        Unguarded (no savepoints), a failing job rolls the whole transaction
        back and raises `_Unguarded`: run the batch again guarded."""
        done: list[tuple[_Job, Any, BaseException | None]] = []
        again: list[tuple[_Job, BaseException]] = []
        try:
            conn.run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        except sqlite3.Error as exc:
            if conn.broken:
                raise _Stale(str(exc)) from exc
            raise
        for job in batch:
            if guarded:
                conn.run("SAVEPOINT job")
            try:
                result = job.fn(cast(sqlite3.Connection, conn))
            except Exception as exc:
                if conn.broken:
                    raise sqlite3.OperationalError(f"connection lost: {exc}") from exc
                if not guarded:
                    conn.run("ROLLBACK")
                    raise _Unguarded from exc
                conn.run("ROLLBACK TO SAVEPOINT job")
                conn.run("RELEASE SAVEPOINT job")
                if retryable(exc):
                    again.append((job, exc))
                    continue
                if isinstance(exc, sqlite3.OperationalError):
                    exc = StorageUnavailable(str(exc))
                done.append((job, None, exc))
                continue
            if guarded:
                conn.run("RELEASE SAVEPOINT job")
            done.append((job, result, None))
        try:
            conn.run("COMMIT")
        except sqlite3.Error as exc:
            if retryable(exc) and not conn.broken:
                with contextlib.suppress(Exception):
                    conn.run("ROLLBACK")
                self._calm = 0
                return [], [(job, exc) for job in batch]
            raise
        if again:
            self._calm = 0
        else:
            self._calm += 1
        return done, again


class PgStore(Store):
    """The Store interface on PostgreSQL (see the module docstring)."""

    shared = True  # other instances may write the same database

    def __init__(self, url: str, readers: int = 2, instance: str = "") -> None:
        super().__init__(url, readers)
        self.url = url
        self.instance = instance
        self._pg_writer: PgWriter | None = None
        self._pg_readers: list[Connection] = []
        self.fanout: Fanout | None = None

    def open(self) -> list[str]:
        conn = Connection.connect(self.url, autocommit=True)
        try:
            applied = migrate(conn)
        finally:
            conn.close()
        if applied:
            log.info("migrations applied", migrations=applied, database="postgresql")
        writer = PgWriter(self.url)
        writer.start()
        self._pg_writer = writer
        self._writer = writer
        self._open = True
        return applied

    @property
    def up(self) -> bool:
        """Open, the last commit (or probe) succeeded, and the event listener
        is connected (it notices a lost database within half a second, even
        while nothing is written)."""
        fanout = self.fanout
        return super().up and (fanout is None or fanout.connected)

    async def fan_out(self, publish: Publish) -> None:
        """Make the Fanout the publisher of every instance's changes (this
        one's too) into `publish` (EventBus.publish); return once it knows
        its horizon, so no SSE client is served before that."""
        self.fanout = Fanout(self.url)
        self.fanout.start(publish)
        if not await self.fanout.wait_ready(FANOUT_READY_TIMEOUT):
            log.warning("event listener not ready yet; SSE resumes may miss changes until it is")

    def _pg_reader(self, fresh: bool = False) -> Connection:
        conn: Connection | None = getattr(self._local, "pg", None)
        if conn is None or conn.broken or fresh:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
                with self._lock, contextlib.suppress(ValueError):
                    self._pg_readers.remove(conn)
            self._local.pg = None
            conn = Connection.connect(self.url, autocommit=True)
            self._local.pg = conn
            with self._lock:
                self._pg_readers.append(conn)
        return conn

    def _read_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read; on a connection lost (PostgreSQL restarted since this
        thread's last read) once more on a new one.  Reads are pure SELECTs,
        so running one again is harmless.  The database still unreachable:
        StorageUnavailable, like a failed write."""
        for attempt in (1, 2):
            try:
                conn = self._pg_reader(fresh=attempt == 2)
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"database unreachable: {exc}") from exc
            try:
                return fn(cast(sqlite3.Connection, conn))
            except sqlite3.Error as exc:
                if not conn.broken:
                    raise
                if attempt == 2:
                    raise StorageUnavailable(f"database connection lost: {exc}") from exc
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_call, fn)

    def close(self) -> None:
        if self.fanout is not None:
            self.fanout.stop()
        self._open = False
        if self._writer is not None:
            self._writer.close()
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._pg_readers:
                with contextlib.suppress(Exception):
                    conn.close()
            self._pg_readers.clear()


__all__ = ["PgStore", "StorageUnavailable", "migrate", "schema_version"]
