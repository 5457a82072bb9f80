"""The SSE change feed on PostgreSQL: every event row, in commit-safe seq order.

An event row gets its `seq` from an identity column when it is inserted and
becomes visible when its transaction commits, later.  With several instances
(or simply two writer batches) seq order is therefore not commit order:
instance A's batch inserts seq 103 and is still open while B's seq 105
commits.  Publishing 105 at once would let an SSE client move its
`Last-Event-ID` past 103, and resuming with `seq > 105` would never give it
103.

So on PostgreSQL the `Fanout` is the *only* publisher to the local EventBus,
for this instance's own changes too (the pipeline does not publish on a
shared store).  It LISTENs on `monitor_events` (a trigger NOTIFYs every event
row at commit) and works in rounds:

1. wake on a notification;
2. one statement: M = the highest committed seq, and X = the transaction ids
   in flight in this database (`pg_stat_activity.backend_xid`), read after
   the statement's snapshot;
3. poll every few ms until no xid of X is still in flight (capped at
   `WAIT_CAP`);
4. read `events` with `published < seq <= M` from the table and publish them
   in seq order, with M as the bus's *horizon* (the SSE backlog of a resuming
   client stops there; anything above it arrives live).

Why that is complete: a row with seq L < M was allocated before M was, so
before M committed, so before the statement of step 2.  Its transaction had
an xid by then (every event row is written after its incident row in the same
transaction, and that write assigned the xid), so at step 2 it had either
ended or was in X.  After step 3 all of them have ended: every seq <= M that
will ever exist is committed and visible to step 4's query.  The table, not
the notifications, says what is published, so a notification read late (they
are only wake-ups) changes nothing.

A transaction that stays open longer than `WAIT_CAP` (someone's psql
session, a stuck instance) is not waited for again; the feed goes on without
it and the cap is counted (`capped`) and logged.  Should a row below the
horizon turn up after all, it is published late, logged and counted (`late`;
`out_of_order` when no cap excused it, which would be a bug).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from monitor.store.pgadapter import CONNECT_OPTIONS

log = structlog.get_logger("monitor.store")

CHANNEL = "monitor_events"
WAIT_CAP = 2.0  # seconds a round waits for older transactions at most
POLL_MIN = 0.001
POLL_MAX = 0.01
RECONNECT_DELAY = 0.5
MISSING_MAX = 100_000  # seqs below the horizon we remember as absent (rollbacks mostly)

# (changes in seq order, new horizon or None): EventBus.publish
Publish = Callable[[list[tuple[int, int]], int | None], None]

_SNAPSHOT = (
    "SELECT (SELECT max(seq) FROM events),"
    " ARRAY(SELECT backend_xid::text FROM pg_stat_activity"
    "  WHERE datname = current_database() AND backend_xid IS NOT NULL"
    "  AND pid <> pg_backend_pid())"
)
_IN_FLIGHT = (
    "SELECT backend_xid::text FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
    " AND pid <> pg_backend_pid()"
)
_RANGE = "SELECT seq, incident FROM events WHERE seq > %s AND seq <= %s ORDER BY seq"


def _parse(payload: str) -> tuple[int, int] | None:
    """`'<seq>,<incident>,<backend pid>'` -> (seq, incident)."""
    parts = payload.split(",")
    if len(parts) < 2:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


class Fanout:
    """LISTEN for event rows of every instance; publish them in commit-safe order."""

    def __init__(self, url: str, *, wait_cap: float = WAIT_CAP) -> None:
        self._url = url
        self.wait_cap = wait_cap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # the first round is done: the horizon is known
        self.connected = False
        # Highest seq published (the horizon); None until the first round.
        self.published: int | None = None
        self._missing: OrderedDict[int, bool] = OrderedDict()  # seq -> a cap excused it
        self._stale: set[str] = set()  # xids that already hit the cap
        self.received = 0
        self.rounds = 0
        self.capped = 0
        self.late = 0
        self.out_of_order = 0

    # -- life ---------------------------------------------------------------

    def start(self, publish: Publish) -> None:
        loop = asyncio.get_running_loop()

        def send(changes: list[tuple[int, int]], horizon: int | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                loop.call_soon_threadsafe(publish, changes, horizon)

        self._thread = threading.Thread(
            target=self._run, args=(send,), name="pg-listen", daemon=True
        )
        self._thread.start()

    async def wait_ready(self, timeout: float) -> bool:
        return await asyncio.to_thread(self.ready.wait, timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the thread ---------------------------------------------------------

    def _run(self, send: Publish) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, **CONNECT_OPTIONS) as conn:
                    self._session(conn, send)
            except psycopg.Error as exc:
                if self.connected:
                    log.warning("event listener lost its connection", error=str(exc))
                else:
                    log.debug("event listener cannot connect", error=str(exc))
            except Exception:
                log.exception("event listener failed; restarting it")
            self.connected = False
            self._stop.wait(RECONNECT_DELAY)

    def _session(self, conn: psycopg.Connection[Any], send: Publish) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        if self.published is not None:
            log.info("event listener reconnected", published=self.published)
        self.connected = True
        # First round: the horizon (at start) or the catch-up of what was
        # committed while we were not listening (after a reconnect).
        self._round(conn, send, [])
        self.ready.set()
        while not self._stop.is_set():
            notes = list(conn.notifies(timeout=0.5, stop_after=1))
            if not notes:
                continue
            notes.extend(conn.notifies(timeout=0))
            self._round(conn, send, notes)

    def _round(self, conn: psycopg.Connection[Any], send: Publish, notes: list[Any]) -> None:
        top = self._late_arrivals(notes, send)
        if notes and self.published is not None and top <= self.published:
            return  # only rows already published (their notifications read late)
        row = conn.execute(_SNAPSHOT).fetchone()
        assert row is not None
        newest = int(row[0]) if row[0] is not None else 0
        in_flight = set(row[1])
        self._stale &= in_flight
        waiting = in_flight - self._stale
        capped = bool(waiting) and not self._wait(conn, waiting)
        self.rounds += 1
        if self.published is None:
            self.published = newest
            send([], newest)
            return
        if newest <= self.published:
            return
        rows = conn.execute(_RANGE, (self.published, newest)).fetchall()
        changes = [(int(r[0]), int(r[1])) for r in rows]
        got = {seq for seq, _ in changes}
        for seq in range(max(self.published + 1, newest - MISSING_MAX + 1), newest + 1):
            if seq not in got:
                self._missing[seq] = capped
        while len(self._missing) > MISSING_MAX:
            self._missing.popitem(last=False)
        self.published = newest
        send(changes, newest)

    def _late_arrivals(self, notes: list[Any], send: Publish) -> int:
        """Publish rows that committed below the horizon (after a cap); the
        highest notified seq."""
        top = 0
        late: list[tuple[int, int]] = []
        for note in notes:
            parsed = _parse(note.payload)
            if parsed is None:
                continue
            self.received += 1
            seq = parsed[0]
            top = max(top, seq)
            if self.published is None or seq > self.published:
                continue
            excused = self._missing.pop(seq, None)
            if excused is None:
                continue  # published already; its notification was read late
            late.append(parsed)
            if excused:
                self.late += 1
                log.warning(
                    "event published late: its transaction outlasted the wait cap",
                    seq=seq,
                    horizon=self.published,
                )
            else:
                self.out_of_order += 1
                log.error(
                    "event committed below the published horizon (out of order: a bug)",
                    seq=seq,
                    horizon=self.published,
                )
        if late:
            late.sort()
            send(late, None)
        return top

    def _wait(self, conn: psycopg.Connection[Any], waiting: set[str]) -> bool:
        """Poll until no xid of `waiting` is in flight; False when the cap hit."""
        deadline = time.monotonic() + self.wait_cap
        delay = POLL_MIN
        while not self._stop.is_set():
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            waiting &= {r[0] for r in conn.execute(_IN_FLIGHT).fetchall()}
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                self.capped += 1
                self._stale |= waiting
                log.warning(
                    "event feed: transactions still open after the wait cap; publishing"
                    " without waiting for them",
                    transactions=len(waiting),
                    cap=self.wait_cap,
                )
                return False
        return True
