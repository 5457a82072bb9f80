"""One task that does every time-driven thing, on the daemon clock.

It sleeps until the earliest due step (deferred raise, escalation, reminder,
SLA deadline), and wakes early on new work or a clock jump.  Due work is
found by querying the store, so a step that fell due while the daemon was
down is simply "due now" at start; each incident takes only the step owed
now (SPEC 4.5: not every step missed).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from monitor import incidents
from monitor.pipeline import Pipeline
from monitor.store import StorageUnavailable

log = structlog.get_logger("monitor.scheduler")

BATCH = 200
# PostgreSQL (several instances): steps owed may have been written by another
# instance, which does not wake us; look again at least this often.
SHARED_POLL = timedelta(seconds=1)


class Scheduler:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.clock = pipeline.clock
        self.store = pipeline.store
        self.wake = pipeline.scheduler_wake
        self.passes = 0

    async def run(self) -> None:
        while True:
            self.wake.clear()  # before looking: a wake during the pass is kept
            # None while awake: any commit owing a step during the pass wakes
            # us again, since the due time read below may predate it.
            self.pipeline.scheduler_due = None
            try:
                await self.run_once()
                due = await self.store.read(incidents.next_due)
            except StorageUnavailable as exc:
                log.warning("scheduler pass failed", error=str(exc))
                due = None
                await asyncio.sleep(1.0)
            self.pipeline.scheduler_due = due
            when = datetime.fromtimestamp(due, UTC) if due is not None else None
            if getattr(self.store, "shared", False):
                poll = self.clock.now() + SHARED_POLL
                when = poll if when is None else min(when, poll)
            await self.clock.sleep_until(when, self.wake)

    async def run_once(self) -> int:
        """Take every step due now; returns how many incidents moved."""
        self.passes += 1
        moved = 0
        while True:
            now = self.clock.now().timestamp()
            ids, sla = await self.store.read(self._due(now))
            for incident in ids:
                await self.pipeline.run_step(self._step(incident))
            moved += len(ids)
            if sla:
                await self.pipeline.run_step(incidents.count_sla_breaches)
            if len(ids) < BATCH:
                return moved

    @staticmethod
    def _due(now: float) -> Callable[[sqlite3.Connection], tuple[list[int], bool]]:
        def due(conn: sqlite3.Connection) -> tuple[list[int], bool]:
            return incidents.due_steps(conn, now, BATCH), incidents.sla_due(conn, now)

        return due

    @staticmethod
    def _step(incident: int) -> Callable[[sqlite3.Connection, incidents.Context], None]:
        def step(conn: sqlite3.Connection, ctx: incidents.Context) -> None:
            incidents.take_step(conn, ctx, incident, time.time())

        return step
