"""`accept`: the single door every report goes through (DESIGN rule 2).

Listeners turn bytes into a `Received` and await `accept`; it answers only
after the commit, so the listener's ack (250, PUBACK, ACK, 202) is always
"durable".  Coverage, dedup and the window decision live here and in
`monitor.incidents`, nowhere else.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog

from monitor import incidents
from monitor.clock import Clock
from monitor.events import EventBus
from monitor.formats.alarm_json import verify_sig
from monitor.hours import coverage as coverage_of
from monitor.metrics import Metrics
from monitor.model import Config, Coverage, Received, Rejected
from monitor.store import StorageUnavailable, Store

log = structlog.get_logger("monitor.pipeline")

RAW_CAP = 64 * 1024
# Bytes of rejected input kept in quarantine, on wall time.  Any SMTP peer
# can send garbage, and retention caps the quarantine only at its passes
# (every 5 min); without this a flood writes ~16 MB/s of it (2-core box).
# Beyond the budget the row is still written (reason, size, peer, detail)
# without its bytes.  docs/security.md.
QUARANTINE_RAW_RATE = 1024 * 1024  # bytes a second
QUARANTINE_RAW_BURST = 64 * 1024 * 1024

T = TypeVar("T")


class ByteBudget:
    """A token bucket of bytes (wall time): `take(n)` spends n if it has them."""

    def __init__(
        self, rate: float, burst: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = burst
        self._at = now()

    def take(self, n: int) -> bool:
        now = self._now()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if n > self._tokens:
            return False
        self._tokens -= n
        return True


@dataclass(frozen=True, slots=True)
class Accepted:
    seq: int
    id: str
    duplicate: bool
    coverage: str
    incident: int | None


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    detail: str = ""


class Pipeline:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        bus: EventBus,
        config: Callable[[], Config],
    ) -> None:
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.bus = bus
        self._config = config
        self.work_added = asyncio.Event()  # the notifier waits on it
        self.scheduler_wake = clock.waker()
        self.scheduler_due: float | None = None  # when the scheduler plans to wake
        self.quarantine_budget = ByteBudget(QUARANTINE_RAW_RATE, QUARANTINE_RAW_BURST)

    @property
    def config(self) -> Config:
        return self._config()

    # -- the door -----------------------------------------------------------

    async def accept(
        self, rec: Received, received_at: datetime | None = None
    ) -> Accepted | Refused:
        """Store one report durably; then (only then) it may be acknowledged.

        Raises StorageUnavailable when nothing could be stored: the sender
        must be told to try again (451, no PUBACK, NAK busy, 503).
        """
        wall_start = time.perf_counter()
        config = self.config
        received = received_at or self.clock.now()
        report = rec.report
        device = config.devices.get(report.serial)
        secret = device.secret if device is not None else None
        if secret and not rec.signed_ok and not verify_sig(report, secret):
            await self.reject(
                Rejected(rec.channel, "bad-signature", rec.raw, rec.peer),
                detail=f"report {report.id[:64]} from {report.serial}",
            )
            return Refused("bad-signature", "signature missing or wrong")
        contract = config.contracts.get(device.contract) if device else None
        cov = coverage_of(device, contract, received)

        def tx(conn: sqlite3.Connection) -> tuple[Accepted, incidents.Context]:
            ctx = incidents.Context(config, self.clock.now())
            found = conn.execute(
                "SELECT seq, coverage, incident FROM alarms WHERE device = ? AND report_id = ?",
                (report.serial, report.id),
            ).fetchone()
            if found is not None:
                return Accepted(found[0], report.id, True, found[1], found[2]), ctx
            incident = None
            if cov is Coverage.COVERED and contract is not None:
                outcome = incidents.on_alarm(
                    conn,
                    ctx,
                    contract,
                    report.serial,
                    report.component,
                    report.code,
                    report.severity,
                    report.message,
                    time.time(),
                )
                incident = outcome.incident
                ctx.folded = outcome.folded
            cur = conn.execute(
                "INSERT INTO alarms (device, report_id, channel, format, severity, component,"
                " code, message, model, host, occurred, received_at, stored_at, coverage,"
                " contract, incident, peer, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    report.serial,
                    report.id,
                    rec.channel,
                    rec.format,
                    report.severity,
                    report.component,
                    report.code,
                    report.message,
                    report.model,
                    report.host,
                    report.occurred.isoformat() if report.occurred else None,
                    received.timestamp(),
                    ctx.ts,
                    cov.value,
                    contract.id if contract else None,
                    incident,
                    rec.peer[:200],
                    rec.raw[:RAW_CAP],
                ),
            )
            seq = cur.lastrowid
            assert seq is not None
            return Accepted(seq, report.id, False, cov.value, incident), ctx

        accepted, ctx = await self.store.write(tx)
        m = self.metrics
        if accepted.duplicate:
            m.alarms_duplicate.labels(kind="exact").inc()
        else:
            m.alarms_received.labels(channel=rec.channel, format=rec.format).inc()
            m.ingest_seconds.observe(time.perf_counter() - wall_start)
            if cov is not Coverage.COVERED:
                m.alarms_uncovered.labels(coverage=cov.value).inc()
            if ctx.folded:
                m.alarms_duplicate.labels(kind="folded").inc()
        self._after_commit(ctx)
        if not accepted.duplicate:
            log.debug(
                "alarm stored",
                seq=accepted.seq,
                id=report.id,
                device=report.serial,
                coverage=cov.value,
                incident=accepted.incident,
                channel=rec.channel,
            )
        return accepted

    async def reject(self, rej: Rejected, detail: str = "") -> int | None:
        """Quarantine bad input with its reason; never raises on storage trouble."""
        self.metrics.alarms_rejected.labels(channel=rej.channel, reason=rej.reason).inc()
        now = self.clock.now().timestamp()
        raw: bytes | None = rej.raw[:RAW_CAP]
        if raw and not self.quarantine_budget.take(len(raw)):
            raw = None  # a flood: keep the row, not the bytes
            detail = "bytes not kept (quarantine flood); " + detail

        def tx(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO quarantine (channel, reason, detail, peer, received_at, size, raw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rej.channel,
                    rej.reason,
                    detail[:500],
                    rej.peer[:200],
                    now,
                    len(rej.raw),
                    raw,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        log.info(
            "input rejected",
            channel=rej.channel,
            reason=rej.reason,
            peer=rej.peer,
            size=len(rej.raw),
            detail=detail[:200],
        )
        try:
            return await self.store.write(tx)
        except StorageUnavailable as exc:
            log.error("quarantine write failed", error=str(exc))
            return None

    # -- people ---------------------------------------------------------------

    async def acknowledge(self, incident: int, by: str) -> bool:
        return await self.run_step(lambda conn, ctx: incidents.acknowledge(conn, ctx, incident, by))

    async def resolve(self, incident: int, by: str) -> None:
        await self.run_step(lambda conn, ctx: incidents.resolve(conn, ctx, incident, by))

    async def run_step(self, fn: Callable[[sqlite3.Connection, incidents.Context], T]) -> T:
        """Run an incident change in the writer, then publish it: the one
        commit-then-publish path for people, the scheduler and the notifier."""
        config = self.config

        def tx(conn: sqlite3.Connection) -> tuple[T, incidents.Context]:
            ctx = incidents.Context(config, self.clock.now())
            return fn(conn, ctx), ctx

        result, ctx = await self.store.write(tx)
        self._after_commit(ctx)
        return result

    def _after_commit(self, ctx: incidents.Context) -> None:
        m = self.metrics
        for plan, severity in ctx.raised:
            m.incidents_raised.labels(plan=plan, severity=severity).inc()
        if ctx.sla_breaches:
            m.sla_breaches.inc(ctx.sla_breaches)
        for step in ctx.steps:
            m.scheduler_steps.labels(step=step).inc()
        if ctx.changes and not getattr(self.store, "shared", False):
            self.bus.publish(ctx.changes)  # on PostgreSQL the store's Fanout publishes
        # Wake the scheduler only when this commit owes a step sooner than
        # it planned to wake: a storm of folds must not make it re-query.
        due = ctx.earliest_due
        if due is not None and (self.scheduler_due is None or due < self.scheduler_due):
            self.scheduler_due = due
            self.scheduler_wake.set()
        if ctx.notices:
            self.work_added.set()
