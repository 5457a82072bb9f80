"""Silent agents (SPEC 3.2): heartbeats and status → AGENT-SILENT, then clear.

Two halves, as elsewhere in the daemon:

- pure decision functions of an `Agent` (the stored row) and "now" — what a
  heartbeat, a status message or the passing of time changes, and whether
  that change must be announced;
- `HeartbeatTracker`, the shell: applies each heartbeat or status in one
  write transaction (read the agent's row from the `heartbeats` table,
  decide, store the row and, for a change, an outbox row) before the MQTT
  message that caused it is acknowledged; sleeps on the daemon clock until
  the next deadline found in the table; and announces changes through the
  pipeline (one door: service hours, dedup and notices apply to
  AGENT-SILENT like to any alarm).

The database is the authority, not memory: with several daemons on one
PostgreSQL database (MQTT shared subscription) each hears only its share of
an agent's heartbeats, so deadlines are read from the table, and every
decision is taken again on the row as stored inside the transaction that
stores it.  At REPEATABLE READ a concurrent change by another instance makes
the losing job run again on the new row, so each change is decided once.

Rules:

- A heartbeat is overdue `SILENT_AFTER` (3) intervals after the later of the
  last heartbeat and the moment the daemon's own broker link came up: while
  that link is down nothing is overdue (the agent is not the one silent), and
  when it returns every agent gets a fresh allowance.  The time it went
  silent is that deadline.  (Each instance counts from its own link; the
  first to find an agent overdue decides.)
- `offline` (an agent's retained Last Will, or its goodbye) makes it silent
  at once; `online` or any heartbeat brings it back.
- With a grace G (`[mqtt] offline_grace`, seconds; 0 = none) an `offline`
  is only stored as pending (`offline_since` = when it arrived): the agent
  goes silent if it is still offline G after the later of that arrival and
  our broker link coming up, and the time it went silent is the arrival.  An
  `online` or a heartbeat before then cancels it, announcing nothing (the
  broker restart that fires every agent's Last Will, a flapping link).  The
  heartbeat deadline runs on meanwhile, independently.
- Only a change against the stored state counts: the retained status the
  broker replays on every resubscribe (and, with several instances, the
  same status delivered to each) repeats the stored one and does nothing.

Announcements go through an outbox table written in the same transaction as
the state change; the report id is made from the outbox row, so a crash
between the change and the alarm re-sends the same report id, which the
pipeline deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

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
SCAN_BATCH = 500  # overdue agents decided per look at the table
RETRY_SECONDS = 1.0
# Shared store (PostgreSQL): other instances' heartbeats move deadlines and
# add agents without waking us; look at the table at least this often (as
# the scheduler does for its steps).
SHARED_POLL = timedelta(seconds=1)
# Outbox rows this instance did not write: taken over once pending this
# long (wall seconds), looked for every SWEEP_SECONDS.
ORPHAN_AFTER = 15.0
SWEEP_SECONDS = 5.0

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
    # When an `offline` arrived that awaits its grace (not silent yet); None
    # when none is pending.
    offline_since: float | None = None

    @property
    def silent(self) -> bool:
        return self.silent_since is not None

    @property
    def pending_offline(self) -> float | None:
        """The arrival of an `offline` awaiting its grace, if one is."""
        if self.silent or self.status != "offline":
            return None  # (a row an older daemon changed may keep a stale one)
        return self.offline_since


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
    # Also cancels a pending `offline` (the status stays: a replayed
    # retained `offline` is then still no change).
    new = replace(base, last_seen=now, interval=interval, silent_since=None, offline_since=None)
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
    agent: Agent | None, serial: str, now: float, online: bool, grace: float = 0.0
) -> tuple[Agent, Change | None]:
    """`agent` itself (same object) when nothing changes.

    `grace` (seconds, `[mqtt] offline_grace`): above 0, an `offline` that is
    a change is stored as pending since `now` and decided by `on_tick`.
    """
    word = "online" if online else "offline"
    if agent is not None and agent.status == word:
        return agent, None  # a replayed retained message, or a repeat
    base = agent or Agent(serial)
    if online:
        # A sign of life: a fresh heartbeat allowance starts now, and a
        # pending `offline` is forgotten (nothing was announced for it).
        new = replace(base, status=word, last_seen=now, silent_since=None, offline_since=None)
        if not base.silent:
            return new, None
        return new, Change(serial, "back", now, "status", "Agent back: status online")
    if base.silent:
        return replace(base, status=word), None
    if grace > 0:
        return replace(base, status=word, offline_since=now), None
    new = replace(base, status=word, silent_since=now)
    return new, Change(
        serial,
        "silent",
        now,
        "status",
        "Agent silent: status offline (it disconnected, or its last will fired)",
    )


def _heartbeat_due(agent: Agent, allowance_start: float) -> float | None:
    if agent.silent or agent.interval is None or agent.last_seen is None:
        return None
    return max(agent.last_seen, allowance_start) + SILENT_AFTER * agent.interval


def _offline_due(agent: Agent, allowance_start: float, grace: float) -> float | None:
    arrived = agent.pending_offline
    if arrived is None:
        return None
    # Not before a full grace after our own link came up: the broker restart
    # that fired the wills also dropped our link, and agents need the time
    # to reconnect.
    return max(arrived, allowance_start) + grace


def deadline(agent: Agent, allowance_start: float, grace: float = 0.0) -> float | None:
    """When the agent counts as silent; None when nothing is awaited.

    The earlier of the heartbeat deadline and a pending `offline`'s end of
    grace (`grace` seconds, `[mqtt] offline_grace`)."""
    beat = _heartbeat_due(agent, allowance_start)
    off = _offline_due(agent, allowance_start, grace)
    if beat is None or off is None:
        return beat if off is None else off
    return min(beat, off)


def on_tick(
    agent: Agent, now: float, allowance_start: float, grace: float = 0.0
) -> tuple[Agent, Change | None]:
    beat = _heartbeat_due(agent, allowance_start)
    off = _offline_due(agent, allowance_start, grace)
    if off is not None and off <= now and (beat is None or off <= beat):
        arrived = agent.offline_since
        assert arrived is not None
        message = (
            "Agent silent: status offline (it disconnected, or its last will fired)"
            f" at {rfc3339(arrived)}, not back within {grace:g} s"
        )
        # It went silent when the `offline` arrived: the alarm says so, and
        # its report id is made from stored data, the same on every instance.
        return replace(agent, silent_since=arrived, offline_since=None), Change(
            agent.serial, "silent", arrived, "status", message
        )
    due = beat
    if due is None or due > now:
        return agent, None
    assert agent.interval is not None and agent.last_seen is not None
    last = rfc3339(agent.last_seen)
    message = (
        f"Agent silent: no heartbeat for {SILENT_AFTER} intervals of "
        f"{agent.interval:g} s (last heartbeat {last})"
    )
    return replace(agent, silent_since=due, offline_since=None), Change(
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


# What to do to an agent's stored row (None: no row): the new row, or the
# same object / None when nothing is to be stored.
Decide = Callable[[Agent | None], tuple[Agent | None, Change | None]]


@dataclass(frozen=True, slots=True)
class _Applied:
    agent: Agent | None  # the row as stored now (None: there is none)
    change: Change | None  # decided by this transaction
    owed: tuple[_OutboxRow, ...] = ()  # to announce, oldest first
    silent: int | None = None  # agents silent now (counted when something changed)


@dataclass(frozen=True, slots=True)
class _Scan:
    due: list[str]  # watched agents whose deadline has passed (a hint: re-decided)
    next_due: float | None  # the earliest deadline still ahead
    silent: int
    more: bool = False  # the batch was full: look again


# `interval` is a keyword in PostgreSQL: quoted where it stands alone.
_COLUMNS = 'serial, last_seen, "interval", status, silent_since, offline_since'
_UPSERT = (
    "INSERT INTO heartbeats (serial, last_seen, interval, status, silent_since, offline_since)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET"
    " last_seen = excluded.last_seen, interval = excluded.interval,"
    " status = excluded.status, silent_since = excluded.silent_since,"
    " offline_since = excluded.offline_since"
)
_OUTBOX = (
    "INSERT INTO agent_outbox (serial, kind, at, format, message, received)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_OUTBOX_COLUMNS = "seq, serial, kind, at, format, message, received"
_SILENT = "SELECT count(*) FROM heartbeats WHERE silent_since IS NOT NULL"
# `deadline()` in SQL, with the same double arithmetic: one row per watched
# agent and rule, (serial, due).  Heartbeats: max(last_seen, allowance) +
# 3 * interval; a pending `offline`: max(offline_since, allowance) + grace.
# Parameters: allowance twice, 3.0, allowance twice, grace.
_DUES = (
    'SELECT serial, (CASE WHEN last_seen > ? THEN last_seen ELSE ? END) + ? * "interval"'
    " AS due FROM heartbeats"
    ' WHERE silent_since IS NULL AND "interval" IS NOT NULL AND last_seen IS NOT NULL'
    " UNION ALL"
    " SELECT serial, (CASE WHEN offline_since > ? THEN offline_since ELSE ? END) + ?"
    " AS due FROM heartbeats"
    " WHERE silent_since IS NULL AND status = 'offline' AND offline_since IS NOT NULL"
)


def _row_agent(row: Any) -> Agent:
    return Agent(row[0], row[1], row[2], row[3], row[4], row[5])


def _get(conn: sqlite3.Connection, serial: str) -> Agent | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM heartbeats WHERE serial = ?", (serial,)).fetchone()
    return None if row is None else _row_agent(row)


def _decide_tx(serial: str, decide: Decide, now: float) -> Callable[[sqlite3.Connection], _Applied]:
    """One write job: read the stored row, decide, store the row and the
    outbox row.  On PostgreSQL the job runs at REPEATABLE READ: if another
    instance changed the row since our snapshot, the upsert fails with a
    serialization error and the writer runs the job again on the new row."""

    def tx(conn: sqlite3.Connection) -> _Applied:
        before = _get(conn, serial)
        after, change = decide(before)
        if after is None or after == before:
            return _Applied(before, None)
        conn.execute(
            _UPSERT,
            (
                after.serial,
                after.last_seen,
                after.interval,
                after.status,
                after.silent_since,
                after.offline_since,
            ),
        )
        if change is None:
            return _Applied(after, None)
        seq = conn.execute(
            _OUTBOX, (change.serial, change.kind, change.at, change.format, change.message, now)
        ).lastrowid
        # Earlier changes of this agent still owed (their announcer died, or
        # is slow) go first: a clear must not overtake its AGENT-SILENT.
        rows = conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM agent_outbox WHERE serial = ? AND seq <= ?"
            " ORDER BY seq",
            (serial, seq),
        ).fetchall()
        silent = int(conn.execute(_SILENT).fetchone()[0])
        return _Applied(after, change, tuple(_OutboxRow(*tuple(r)) for r in rows), silent)

    return tx


def _scan(now: float, allowance: float, grace: float) -> Callable[[sqlite3.Connection], _Scan]:
    def read(conn: sqlite3.Connection) -> _Scan:
        args = (allowance, allowance, float(SILENT_AFTER), allowance, allowance, grace)
        due = conn.execute(
            f"SELECT serial, due FROM ({_DUES}) AS d WHERE due <= ? ORDER BY due, serial LIMIT ?",
            (*args, now, SCAN_BATCH),
        ).fetchall()
        ahead = conn.execute(
            f"SELECT min(due) FROM ({_DUES}) AS d WHERE due > ?", (*args, now)
        ).fetchone()[0]
        silent = int(conn.execute(_SILENT).fetchone()[0])
        # An agent due by both rules is listed twice: decided once.
        serials = list(dict.fromkeys(str(r[0]) for r in due))
        return _Scan(
            serials, None if ahead is None else float(ahead), silent, len(due) >= SCAN_BATCH
        )

    return read


def _startup(conn: sqlite3.Connection) -> tuple[int, list[int]]:
    silent = int(conn.execute(_SILENT).fetchone()[0])
    rows = conn.execute("SELECT seq FROM agent_outbox ORDER BY seq").fetchall()
    return silent, [int(r[0]) for r in rows]


def _pending(conn: sqlite3.Connection) -> list[_OutboxRow]:
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM agent_outbox ORDER BY seq LIMIT ?",
        (OUTBOX_BATCH,),
    ).fetchall()
    return [_OutboxRow(*tuple(r)) for r in rows]


def _delete(seq: int) -> Callable[[sqlite3.Connection], None]:
    def tx(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM agent_outbox WHERE seq = ?", (seq,))

    return tx


def _tick(now: float, allowance: float, grace: float) -> Decide:
    def decide(agent: Agent | None) -> tuple[Agent | None, Change | None]:
        if agent is None:
            return None, None  # deleted meanwhile (an operator)
        return on_tick(agent, now, allowance, grace)

    return decide


class HeartbeatTracker:
    """Agents' liveness on the daemon clock, for one channel (MQTT).

    The listener calls `load()` before it connects, runs `run()` beside its
    connection, tells it `link_up()`/`link_down()`, and awaits
    `heartbeat()`/`status()` before acknowledging the message.

    The `heartbeats` table is the authority, not this object: every decision
    is taken inside a write transaction on the row read there, so several
    daemons sharing one PostgreSQL database (each hearing only its share of
    the messages) decide each change exactly once.
    """

    def __init__(self, rt: Runtime, channel: str = "mqtt", grace: float | None = None) -> None:
        self.rt = rt
        self.channel = channel
        if grace is None:  # `[mqtt] offline_grace` (read at start, like all of [mqtt])
            mqtt = rt.config.current.mqtt
            grace = mqtt.offline_grace.total_seconds() if mqtt is not None else 0.0
        self.grace = grace  # seconds an `offline` waits before the agent is silent
        # PostgreSQL: other instances write the same tables.
        self.shared = bool(getattr(rt.store, "shared", False))
        self.allowance_start: float | None = None  # None: our broker link is down
        self.orphan_after = ORPHAN_AFTER
        self.sweep_seconds = SWEEP_SECONDS
        self.passes = 0  # overdue checks done (tests, logs)
        self.checked_at: float | None = None  # the daemon time the last check looked at
        self.decided = 0  # changes this instance decided
        self._wake = rt.clock.waker()  # also set by every clock jump
        self._outbox = asyncio.Event()
        self._planned: float | None = None  # the deadline the loop sleeps towards
        self._checking = False  # an overdue check is running
        self._early: float | None = None  # a deadline learnt during that check
        # Outbox rows this instance wrote (it announces them at once), and
        # other rows with when they were first seen pending (monotonic).
        self._owed: dict[int, _OutboxRow] = {}
        self._seen: dict[int, float] = {}

    # -- the listener's side ---------------------------------------------------

    async def load(self) -> None:
        silent, pending = await self.rt.store.read(_startup)
        self._gauge(silent)
        # On a store of our own, what is pending was left by a previous run:
        # announce it now.  On a shared one it may be another live instance's,
        # about to be announced by it: take it over only if it stays pending.
        first = time.monotonic() if self.shared else -math.inf
        self._seen = {seq: self._seen.get(seq, first) for seq in pending}
        self._outbox.set()
        self._wake.set()

    def link_up(self) -> None:
        self.allowance_start = self.rt.clock.now().timestamp()
        self._wake.set()

    def link_down(self) -> None:
        self.allowance_start = None
        self._wake.set()

    async def heartbeat(self, serial: str, interval: float, at: datetime) -> None:
        now = at.timestamp()
        applied = await self._apply(
            serial, lambda agent: on_heartbeat(agent, serial, now, interval), now
        )
        self._replan(applied.agent)

    async def status(self, serial: str, online: bool, at: datetime) -> None:
        now = at.timestamp()
        grace = self.grace
        applied = await self._apply(
            serial, lambda agent: on_status(agent, serial, now, online, grace), now
        )
        self._replan(applied.agent)

    def _replan(self, agent: Agent | None) -> None:
        """Wake the loop if `agent` (as just stored) is due before it planned."""
        allowance = self.allowance_start
        if agent is None or allowance is None:
            return
        due = deadline(agent, allowance, self.grace)
        if due is None:
            return
        if self._checking:  # the check may have read the table before this
            self._early = due if self._early is None else min(self._early, due)
        elif self._planned is None or due < self._planned:
            self._wake.set()

    # -- the task --------------------------------------------------------------

    async def run(self) -> None:
        announcer = asyncio.create_task(self._announce_loop(), name="agent-announcer")
        try:
            while True:
                self._wake.clear()  # before looking: a jump during the look is kept
                self._checking, self._early = True, None
                try:
                    planned = await self._check_overdue()
                except StorageUnavailable as exc:
                    log.warning("heartbeat check failed; retrying", error=str(exc))
                    self._checking = False
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self._checking = False
                self.passes += 1
                early = self._early
                if early is not None and (planned is None or early < planned):
                    planned = early
                self._planned = planned
                when = datetime.fromtimestamp(planned, UTC) if planned is not None else None
                if self.shared and self.allowance_start is not None:
                    # Other instances' heartbeats move deadlines and add
                    # agents without waking us: look again soon.
                    poll = self.rt.clock.now() + SHARED_POLL
                    when = poll if when is None else min(when, poll)
                await self.rt.clock.sleep_until(when, self._wake)
        finally:
            self._checking = False
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer

    async def _check_overdue(self) -> float | None:
        """Decide every overdue agent in the table; the next deadline."""
        allowance = self.allowance_start
        if allowance is None:
            return None  # paused: our own link is down
        grace = self.grace
        while True:
            now = self.rt.clock.now().timestamp()
            scan = await self.rt.store.read(_scan(now, allowance, grace))
            self._gauge(scan.silent)
            planned = scan.next_due
            for serial in scan.due:
                # Decided again on the row as it is now: another instance
                # may have declared it silent, or stored a newer heartbeat
                # or an `online`.
                applied = await self._apply(serial, _tick(now, allowance, grace), now)
                if applied.agent is not None and applied.change is None:
                    due = deadline(applied.agent, allowance, grace)
                    if due is not None and (planned is None or due < planned):
                        planned = due
            if not scan.more:
                self.checked_at = now
                return planned

    async def _apply(self, serial: str, decide: Decide, now: float) -> _Applied:
        applied = await self.rt.store.write(_decide_tx(serial, decide, now))
        change = applied.change
        if change is not None:
            self.decided += 1
            log.info(
                "agent " + change.kind,
                serial=serial,
                at=rfc3339(change.at),
                decided_by=change.format,
            )
            if applied.silent is not None:
                self._gauge(applied.silent)
            for row in applied.owed:
                self._owed[row.seq] = row
            self._outbox.set()
        return applied

    def _gauge(self, silent: int) -> None:
        self.rt.metrics.agents_silent.set(silent)

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
            if sent >= OUTBOX_BATCH:
                continue
            if self.shared or self._seen:
                # Rows another instance wrote may be orphaned by its death:
                # look again now and then (wall time: it is about processes).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.sweep_seconds):
                        await self._outbox.wait()
            else:
                await self._outbox.wait()

    async def announce_pending(self) -> int:
        """Send owed AGENT-SILENT alarms and clears, oldest first.

        This instance's own decisions at once; other pending rows (left by a
        previous run, or by an instance that died between its decision and
        the alarm) once they have stayed pending `orphan_after` seconds — at
        once on a store of our own when they were there at start.  Each row
        is deleted only after the pipeline stored its alarm; a row sent twice
        (two instances taking over the same orphan, a crash before the
        delete) has the same report id and is kept once.
        """
        sent = 0
        while self._owed:
            seq = min(self._owed)
            await self._announce(self._owed[seq])
            self._owed.pop(seq, None)
            self._seen.pop(seq, None)
            sent += 1
        rows = await self.rt.store.read(_pending)
        mono = time.monotonic()
        seen: dict[int, float] = {}
        for row in rows:
            if row.seq in self._owed:
                continue  # decided meanwhile: the next round sends it
            first = self._seen.get(row.seq, mono)
            if mono - first < self.orphan_after:
                seen[row.seq] = first
                continue
            await self._announce(row)
            sent += 1
        self._seen = seen
        return sent

    async def _announce(self, row: _OutboxRow) -> None:
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
        result = await self.rt.pipeline.accept(received, datetime.fromtimestamp(row.received, UTC))
        if isinstance(result, Refused):  # cannot happen for a synthetic report
            log.error("agent alarm refused", serial=row.serial, reason=result.reason)
        # Only now: the alarm is durable (a crash before this re-sends it).
        await self.rt.store.write(_delete(row.seq))
