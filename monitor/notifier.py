"""Sends the notice intents the incident transactions queued (the outbox).

For each pending notice: record "attempt n started" durably, send, record the
outcome.  A crash between the send and the record leaves the notice pending
with attempt n on file, so after a restart attempt n+1 goes out with the
*same* Idempotency-Key (it is derived from the notice's identity, not from
the attempt) and a receiver can drop the repeat.  Retries back off on wall
time up to `[notify] max_backoff`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from datetime import tzinfo

import aiohttp
import structlog

from monitor.clock import Clock
from monitor.incidents import Context, record_change
from monitor.metrics import Metrics
from monitor.model import Config
from monitor.notify.email import send_email
from monitor.notify.errors import TransportError, backoff
from monitor.notify.render import NoticeContent, render_email, webhook_payload
from monitor.notify.webhook import send_webhook
from monitor.pipeline import Pipeline
from monitor.store import StorageUnavailable
from monitor.views import incident_json

log = structlog.get_logger("monitor.notify")

CONCURRENCY = 16
DEFAULT_MAX_BACKOFF = 600.0
# PostgreSQL (several instances): a notice being sent is leased to its
# instance for this long (wall seconds); a dead instance's lease runs out and
# another instance sends the notice again, with the same Idempotency-Key.
LEASE_SECONDS = float(os.environ.get("MONITOR_NOTICE_LEASE", "120"))


class Notifier:
    def __init__(self, pipeline: Pipeline, clock: Clock, metrics: Metrics, zone: tzinfo) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.clock = clock
        self.metrics = metrics
        self.zone = zone
        self._inflight: set[int] = set()
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.shared = bool(getattr(self.store, "shared", False))
        self.instance = str(getattr(self.store, "instance", "")) or "monitor"

    @property
    def config(self) -> Config:
        return self.pipeline.config

    async def run(self) -> None:
        self.session = aiohttp.ClientSession()
        try:
            if self.shared:
                await self._release_own_leases()
            while True:
                self.pipeline.work_added.clear()
                next_try = await self._dispatch_due()
                delay = 30.0 if next_try is None else max(0.05, min(30.0, next_try - time.time()))
                try:
                    async with asyncio.timeout(delay):  # not wait_for: see clock.py
                        await self.pipeline.work_added.wait()
                except TimeoutError:
                    pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.session.close()

    async def _release_own_leases(self) -> None:
        """Leases under our instance name belong to our previous run, which
        is dead (we are starting): send those notices now, again with the
        same Idempotency-Key, rather than after the lease runs out.  (Hence
        every instance needs its own `[daemon] instance` name.)"""

        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE notices SET claimed_by = NULL, lease_until = NULL"
                " WHERE claimed_by = ? AND status = 'pending'",
                (self.instance,),
            ).rowcount

        try:
            released = await self.store.write(release)
        except StorageUnavailable as exc:
            log.warning("could not release our previous run's notice leases", error=str(exc))
            return  # they run out by themselves
        if released:
            log.info("notice leases of our previous run released", notices=released)

    async def drain(self, timeout: float) -> None:
        """Let notices already being sent finish (shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _dispatch_due(self) -> float | None:
        wall = time.time()

        def query(conn: sqlite3.Connection) -> tuple[list[int], float | None]:
            if self.shared:
                return leased_query(conn)
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM notices WHERE status = 'pending' AND next_try <= ? "
                    "ORDER BY next_try LIMIT 200",
                    (wall,),
                )
            ]
            nxt = conn.execute(
                "SELECT min(next_try) FROM notices WHERE status = 'pending' AND next_try > ?",
                (wall,),
            ).fetchone()[0]
            return ids, nxt

        def leased_query(conn: sqlite3.Connection) -> tuple[list[int], float | None]:
            # Notices another live instance is sending are not ours to pick.
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM notices WHERE status = 'pending' AND next_try <= ? "
                    "AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_try LIMIT 200",
                    (wall, wall),
                )
            ]
            nxt = conn.execute(
                "SELECT min(GREATEST(next_try, coalesce(lease_until, 0))) FROM notices "
                "WHERE status = 'pending' AND GREATEST(next_try, coalesce(lease_until, 0)) > ?",
                (wall,),
            ).fetchone()[0]
            return ids, nxt

        try:
            ids, nxt = await self.store.read(query)
        except (StorageUnavailable, sqlite3.Error) as exc:
            log.warning("notice query failed", error=str(exc))
            return time.time() + 1.0
        for notice in ids:
            if notice in self._inflight:
                continue
            self._inflight.add(notice)
            task = asyncio.create_task(self._send(notice))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return nxt

    async def _send(self, notice: int) -> None:
        try:
            async with self._sem:
                await self._send_one(notice)
        except StorageUnavailable as exc:
            log.warning("notice bookkeeping failed; will retry", notice=notice, error=str(exc))
        except Exception:
            log.exception("notice failed unexpectedly", notice=notice)
        finally:
            self._inflight.discard(notice)
            self.pipeline.work_added.set()

    async def _send_one(self, notice: int) -> None:
        wall = time.time()

        def start(conn: sqlite3.Connection) -> tuple[sqlite3.Row, sqlite3.Row] | None:
            row = conn.execute("SELECT * FROM notices WHERE id = ?", (notice,)).fetchone()
            if row is None or row["status"] != "pending":
                return None
            if self.shared:
                claimed = conn.execute(
                    "UPDATE notices SET claimed_by = ?, lease_until = ? WHERE id = ? "
                    "AND (lease_until IS NULL OR lease_until < ? OR claimed_by = ?)",
                    (self.instance, wall + LEASE_SECONDS, notice, wall, self.instance),
                )
                if claimed.rowcount == 0:
                    return None  # another instance is sending it
            attempt = row["attempts"] + 1
            conn.execute("UPDATE notices SET attempts = ? WHERE id = ?", (attempt, notice))
            conn.execute(
                "INSERT INTO notice_attempts (notice, attempt, started_at) VALUES (?, ?, ?)",
                (notice, attempt, wall),
            )
            inc = conn.execute(
                "SELECT * FROM incidents WHERE id = ?", (row["incident"],)
            ).fetchone()
            row = conn.execute("SELECT * FROM notices WHERE id = ?", (notice,)).fetchone()
            return row, inc

        started = await self.store.write(start)
        if started is None:
            return
        row, inc = started
        attempt = row["attempts"]
        transport = row["transport"]
        error: TransportError | None = None
        try:
            await self._deliver(row, inc, attempt)
        except TransportError as exc:
            error = exc
        outcome = "delivered" if error is None else ("failed" if error.permanent else "retry")
        self.metrics.notices.labels(transport=transport, outcome=outcome).inc()
        log.info(
            "notice attempt",
            notice=notice,
            incident=row["incident"],
            kind=row["kind"],
            contact=row["contact"],
            transport=transport,
            attempt=attempt,
            outcome=outcome,
            key=row["key"],
            error=str(error) if error else None,
        )
        await self._record(row, attempt, outcome, error)

    async def _deliver(self, row: sqlite3.Row, inc: sqlite3.Row, attempt: int) -> None:
        config = self.config
        contract = config.contracts.get(inc["contract"])
        content = NoticeContent(
            kind=row["kind"],
            incident=incident_json(inc, self.zone),
            contract_id=inc["contract"],
            customer=contract.customer if contract else "",
            contact=row["contact"],
            attempt=attempt,
            round=row["round"],
            fee_estimate=row["fee_estimate"],
            plan=inc["plan"],
        )
        if row["transport"] == "webhook":
            assert self.session is not None
            await send_webhook(self.session, row["target"], webhook_payload(content), row["key"])
        else:
            notify = config.notify
            if notify is None:
                raise TransportError("no [notify] section: e-mail is off", True)
            reply_to = config.smtp.accept[0] if config.smtp and config.smtp.accept else None
            subject, body = render_email(content)
            await send_email(notify, row["target"], reply_to, subject, body, row["key"])

    async def _record(
        self, row: sqlite3.Row, attempt: int, outcome: str, error: TransportError | None
    ) -> None:
        max_backoff = DEFAULT_MAX_BACKOFF
        if self.config.notify is not None:
            max_backoff = self.config.notify.max_backoff.total_seconds()
        retry_at = time.time() + backoff(attempt, max_backoff)
        notice = row["id"]
        pipeline = self.pipeline

        def tx(conn: sqlite3.Connection, ctx: Context) -> float | None:
            conn.execute(
                "UPDATE notice_attempts SET outcome = ?, error = ? "
                "WHERE notice = ? AND attempt = ?",
                (outcome, str(error) if error else None, notice, attempt),
            )
            current = conn.execute("SELECT status FROM notices WHERE id = ?", (notice,)).fetchone()
            if current is None:
                return None
            if self.shared:
                conn.execute(
                    "UPDATE notices SET claimed_by = NULL, lease_until = NULL WHERE id = ?",
                    (notice,),
                )
            if outcome == "delivered":
                conn.execute(
                    "UPDATE notices SET status = 'delivered', delivered_at = ?, last_error = NULL "
                    "WHERE id = ?",
                    (ctx.ts, notice),
                )
                inc = conn.execute(
                    "SELECT * FROM incidents WHERE id = ?", (row["incident"],)
                ).fetchone()
                if inc["state"] == "open":
                    conn.execute(
                        "UPDATE incidents SET state = 'notified', updated_at = ? WHERE id = ?",
                        (ctx.ts, inc["id"]),
                    )
                    record_change(conn, ctx, inc["id"], inc["contract"])
                    return float(ctx.ts - inc["raised_at"]) if inc["raised_at"] else None
            elif current["status"] == "pending":
                if outcome == "failed":
                    conn.execute(
                        "UPDATE notices SET status = 'failed', last_error = ? WHERE id = ?",
                        (str(error), notice),
                    )
                else:
                    conn.execute(
                        "UPDATE notices SET next_try = ?, last_error = ? WHERE id = ?",
                        (retry_at, str(error), notice),
                    )
            return None

        to_notified = await pipeline.run_step(tx)
        if to_notified is not None:
            self.metrics.notice_seconds.observe(max(0.0, to_notified))
