"""Silent agents (SPEC 3.2): heartbeats and status → AGENT-SILENT, then clear.

Two halves, as elsewhere in the daemon:

- pure decision functions of an `Agent` (the stored row) and "now" — what a
  heartbeat, a status message or the passing of time changes, and whether
  that change must be announced;
- `HeartbeatTracker`, the shell: keeps every agent's row in memory (loaded
  from the `heartbeats` table), stores each change before the MQTT message
  that caused it is acknowledged, sleeps on the daemon clock until the next
  deadline, and announces changes through the pipeline (one door: service
  hours, dedup and notices apply to AGENT-SILENT like to any alarm).

Rules:

- A heartbeat is overdue `SILENT_AFTER` (3) intervals after the later of the
  last heartbeat and the moment the daemon's own broker link came up: while
  that link is down nothing is overdue (the agent is not the one silent), and
  when it returns every agent gets a fresh allowance.  The time it went
  silent is that deadline.
- `offline` (an agent's retained Last Will, or its goodbye) makes it silent
  at once; `online` or any heartbeat brings it back.
- Only a change against the stored state counts: the retained status the
  broker replays on every resubscribe repeats the stored one and does
  nothing.

Announcements go through an outbox table written in the same transaction as
the state change; a crash between the change and the alarm re-sends the same
report id, which the pipeline deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import msgspec
import structlog

from monitor.model import AlarmReport, Device, Received
from monitor.pipeline import Refused
from monitor.store import StorageUnavailable
from monitor.timefmt import rfc3339

if TYPE_CHECKING:
    from monitor.runtime import Runtime

log = structlog.get_logger("monitor.heartbeats")

SILENT_AFTER = 3  # intervals without a heartbeat
COMPONENT = "agent"
CODE = "AGENT-SILENT"
OUTBOX_BATCH = 100
RETRY_SECONDS = 1.0

Kind = Literal["silent", "back"]


# -- decisions (pure) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Agent:
    """One row of `heartbeats`.  Times are daemon-clock epoch seconds."""

    serial: str
    last_seen: float | None = None  # last heartbeat (or `online`)
    interval: float | None = None  # seconds, as the agent announced
    status: str | None = None  # online | offline: the last status message
    silent_since: float | None = None  # set while AGENT-SILENT stands

    @property
    def silent(self) -> bool:
        return self.silent_since is not None


@dataclass(frozen=True, slots=True)
class Change:
    """A transition to announce: went silent, or came back."""

    serial: str
    kind: Kind
    at: float
    format: str  # heartbeat | status: what decided it
    message: str


def on_heartbeat(
    agent: Agent | None, serial: str, now: float, interval: float
) -> tuple[Agent, Change | None]:
    base = agent or Agent(serial)
    new = replace(base, last_seen=now, interval=interval, silent_since=None)
    if not base.silent:
        return new, None
    return new, Change(
        serial,
        "back",
        now,
        "heartbeat",
        f"Agent back: heartbeat received (interval {interval:g} s)",
    )


def on_status(
    agent: Agent | None, serial: str, now: float, online: bool
) -> tuple[Agent, Change | None]:
    """`agent` itself (same object) when nothing changes."""
    word = "online" if online else "offline"
    if agent is not None and agent.status == word:
        return agent, None  # a replayed retained message, or a repeat
    base = agent or Agent(serial)
    if online:
        # A sign of life: a fresh heartbeat allowance starts now.
        new = replace(base, status=word, last_seen=now, silent_since=None)
        if not base.silent:
            return new, None
        return new, Change(serial, "back", now, "status", "Agent back: status online")
    if base.silent:
        return replace(base, status=word), None
    new = replace(base, status=word, silent_since=now)
    return new, Change(
        serial,
        "silent",
        now,
        "status",
        "Agent silent: status offline (it disconnected, or its last will fired)",
    )


def deadline(agent: Agent, allowance_start: float) -> float | None:
    """When the agent counts as silent; None when nothing is awaited."""
    if agent.silent or agent.interval is None or agent.last_seen is None:
        return None
    return max(agent.last_seen, allowance_start) + SILENT_AFTER * agent.interval


def on_tick(agent: Agent, now: float, allowance_start: float) -> tuple[Agent, Change | None]:
    due = deadline(agent, allowance_start)
    if due is None or due > now:
        return agent, None
    assert agent.interval is not None and agent.last_seen is not None
    last = rfc3339(agent.last_seen)
    message = (
        f"Agent silent: no heartbeat for {SILENT_AFTER} intervals of "
        f"{agent.interval:g} s (last heartbeat {last})"
    )
    return replace(agent, silent_since=due), Change(
        agent.serial, "silent", due, "heartbeat", message
    )


def report_id(serial: str, kind: str, at: float) -> str:
    prefix = "agent-silent" if kind == "silent" else "agent-back"
    return f"{prefix}:{serial}:{rfc3339(at)}"


def report_for(
    serial: str, kind: str, at: float, message: str, device: Device | None
) -> AlarmReport:
    when = datetime.fromtimestamp(at, UTC)
    return AlarmReport(
        id=report_id(serial, kind, at),
        serial=serial,
        severity="major" if kind == "silent" else "clear",
        code=CODE,
        message=message,
        model=device.model if device else "",
        host=device.host if device else "",
        occurred=when,
        occurred_raw=when.isoformat(timespec="milliseconds"),
        component=COMPONENT,
    )


# -- the shell ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _OutboxRow:
    seq: int
    serial: str
    kind: str
    at: float
    format: str
    message: str
    received: float


_UPSERT = (
    "INSERT INTO heartbeats (serial, last_seen, interval, status, silent_since)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET"
    " last_seen = excluded.last_seen, interval = excluded.interval,"
    " status = excluded.status, silent_since = excluded.silent_since"
)
_OUTBOX = (
    "INSERT INTO agent_outbox (serial, kind, at, format, message, received)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def _save(agent: Agent, change: Change | None, now: float) -> Callable[[sqlite3.Connection], None]:
    def tx(conn: sqlite3.Connection) -> None:
        conn.execute(
            _UPSERT,
            (agent.serial, agent.last_seen, agent.interval, agent.status, agent.silent_since),
        )
        if change is not None:
            conn.execute(
                _OUTBOX, (change.serial, change.kind, change.at, change.format, change.message, now)
            )

    return tx


def _load(conn: sqlite3.Connection) -> list[Agent]:
    rows = conn.execute(
        "SELECT serial, last_seen, interval, status, silent_since FROM heartbeats"
    ).fetchall()
    return [Agent(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _pending(conn: sqlite3.Connection) -> list[_OutboxRow]:
    rows = conn.execute(
        "SELECT seq, serial, kind, at, format, message, received FROM agent_outbox"
        " ORDER BY seq LIMIT ?",
        (OUTBOX_BATCH,),
    ).fetchall()
    return [_OutboxRow(*tuple(r)) for r in rows]


def _delete(seq: int) -> Callable[[sqlite3.Connection], None]:
    def tx(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM agent_outbox WHERE seq = ?", (seq,))

    return tx


class HeartbeatTracker:
    """Agents' liveness on the daemon clock, for one channel (MQTT).

    The listener calls `load()` before it connects, runs `run()` beside its
    connection, tells it `link_up()`/`link_down()`, and awaits
    `heartbeat()`/`status()` before acknowledging the message.
    """

    def __init__(self, rt: Runtime, channel: str = "mqtt") -> None:
        self.rt = rt
        self.channel = channel
        self.agents: dict[str, Agent] = {}
        self.allowance_start: float | None = None  # None: our broker link is down
        self._wake = rt.clock.waker()  # also set by every clock jump
        self._outbox = asyncio.Event()
        self._planned: float | None = None  # the deadline the loop sleeps towards

    # -- the listener's side ---------------------------------------------------

    async def load(self) -> None:
        agents = await self.rt.store.read(_load)
        self.agents = {a.serial: a for a in agents}
        self._gauge()
        self._outbox.set()  # announce whatever a previous run left owed

    def link_up(self) -> None:
        self.allowance_start = self.rt.clock.now().timestamp()
        self._wake.set()

    def link_down(self) -> None:
        self.allowance_start = None
        self._wake.set()

    async def heartbeat(self, serial: str, interval: float, at: datetime) -> None:
        now = at.timestamp()
        before = self.agents.get(serial)
        after, change = on_heartbeat(before, serial, now, interval)
        await self._apply(serial, before, after, change, now)
        if self.allowance_start is not None:
            due = deadline(after, self.allowance_start)
            if due is not None and (self._planned is None or due < self._planned):
                self._wake.set()

    async def status(self, serial: str, online: bool, at: datetime) -> None:
        now = at.timestamp()
        before = self.agents.get(serial)
        after, change = on_status(before, serial, now, online)
        if after is before:
            return
        await self._apply(serial, before, after, change, now)
        self._wake.set()

    # -- the task --------------------------------------------------------------

    async def run(self) -> None:
        announcer = asyncio.create_task(self._announce_loop(), name="agent-announcer")
        try:
            while True:
                self._wake.clear()  # before looking: a jump during the look is kept
                try:
                    await self._check_overdue()
                except StorageUnavailable as exc:
                    log.warning("heartbeat check failed; retrying", error=str(exc))
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self._planned = self._next_deadline()
                planned = self._planned
                when = datetime.fromtimestamp(planned, UTC) if planned is not None else None
                await self.rt.clock.sleep_until(when, self._wake)
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer

    async def _check_overdue(self) -> None:
        allowance = self.allowance_start
        if allowance is None:
            return  # paused: our own link is down
        now = self.rt.clock.now().timestamp()
        for serial in list(self.agents):
            before = self.agents.get(serial)
            if before is None:
                continue
            after, change = on_tick(before, now, allowance)
            if change is not None:
                await self._apply(serial, before, after, change, now)

    def _next_deadline(self) -> float | None:
        allowance = self.allowance_start
        if allowance is None:
            return None
        dues = (deadline(a, allowance) for a in self.agents.values())
        return min((d for d in dues if d is not None), default=None)

    async def _apply(
        self, serial: str, before: Agent | None, after: Agent, change: Change | None, now: float
    ) -> None:
        # Memory first, synchronously: the next decision (another message,
        # the timer) already sees this one.  Writes reach the group-commit
        # queue in the same order, so the table ends in the same state.
        self.agents[serial] = after
        try:
            await self.rt.store.write(_save(after, change, now))
        except StorageUnavailable:
            if self.agents.get(serial) is after:
                if before is None:
                    del self.agents[serial]
                else:
                    self.agents[serial] = before
            raise
        if change is not None:
            log.info(
                "agent " + change.kind,
                serial=serial,
                at=rfc3339(change.at),
                decided_by=change.format,
            )
            self._gauge()
            self._outbox.set()

    def _gauge(self) -> None:
        self.rt.metrics.agents_silent.set(sum(1 for a in self.agents.values() if a.silent))

    # -- announcing through the pipeline -------------------------------------------

    async def _announce_loop(self) -> None:
        while True:
            self._outbox.clear()
            try:
                sent = await self.announce_pending()
            except StorageUnavailable as exc:
                log.warning("announcing agent changes failed; retrying", error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if sent < OUTBOX_BATCH:
                await self._outbox.wait()

    async def announce_pending(self) -> int:
        """Send owed AGENT-SILENT alarms and clears, oldest first."""
        rows = await self.rt.store.read(_pending)
        for row in rows:
            device = self.rt.config.current.devices.get(row.serial)
            report = report_for(row.serial, row.kind, row.at, row.message, device)
            raw = msgspec.json.encode(
                {
                    "serial": row.serial,
                    "kind": row.kind,
                    "at": rfc3339(row.at),
                    "decided_by": row.format,
                }
            )
            received = Received(
                report, self.channel, row.format, raw, peer="heartbeat-tracker", signed_ok=True
            )  # synthetic: nobody to sign it
            result = await self.rt.pipeline.accept(
                received, datetime.fromtimestamp(row.received, UTC)
            )
            if isinstance(result, Refused):  # cannot happen for a synthetic report
                log.error("agent alarm refused", serial=row.serial, reason=result.reason)
            await self.rt.store.write(_delete(row.seq))
        return len(rows)
