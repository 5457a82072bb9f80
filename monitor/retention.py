"""Retention: prune old rows on the daemon clock, in small transactions.

`prune(conn, now, cfg, limit)` is plain SQL on one connection and touches at
most about `limit` rows, so each call is one short job in the group-commit
writer: alarms arriving meanwhile are committed between two chunks instead of
waiting behind one long delete.  `RetentionJob` calls it again and again
until a call has less than `limit` to do, once at start and then every
`INTERVAL` of daemon-clock time (a jump of the simulated clock starts a pass
at once, like every other time-driven thing).

The rules (`[retention]`, each optional; docs/operations.md):

- `alarms`: alarms stored longer ago are deleted, except those linked to an
  incident that is not resolved (deferred, open, notified, acknowledged):
  an unresolved incident keeps all of its evidence.
- `raw`: the raw report bytes of alarms stored longer ago are emptied (the
  parsed alarm stays).  This goes by age alone: a cursor in `counters` walks
  the alarms in `seq` order, so a pass never rescans what it already emptied.
- `quarantine`: rejected input received longer ago is deleted; then, while
  the raw bytes held exceed `quarantine_max_bytes`, the oldest goes first.
- `resolved_incidents`: incidents resolved longer ago are deleted with their
  notices, notice attempts and change events.  Only `resolved` ones, ever.
  Their alarms follow the `alarms` rule (they may name a pruned incident).
- `events` (the SSE change feed) always keeps a bounded tail, config or not:
  the newest `EVENTS_KEEP_ROWS` rows, and none older than `EVENTS_KEEP_AGE`.
  A client resuming from an event no longer held gets `event: reset`.

On a shared store (PostgreSQL, several instances: `store.shared`) every
instance runs the job, but one pass per `INTERVAL` is done for all of them:
the first chunk of a pass *claims* it (`claim_pass`), in the same
transaction as its deletes.  The claim is a pair of `counters` rows (no
extra table): when the last pass was claimed (daemon clock) and by which
instance.  An instance skips its pass when another instance's chunk holds
the advisory lock `PASS_LOCK` right now, or when another instance claimed a
pass less than `INTERVAL` ago; so the instance that ran the last pass keeps
running them, and when it stops, another takes over one `INTERVAL` later.
Two instances claiming at the same moment cannot both win: the loser either
fails to take the lock, or (its REPEATABLE READ snapshot predating the
winner's commit) its upsert of the claim row meets a serialization failure
and the writer runs it again, when it sees the winner's claim.  A skipped
pass counts as `monitor_retention_runs_total{outcome="skipped"}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta

import structlog

from monitor.model import RetentionConfig
from monitor.runtime import Runtime
from monitor.store import StorageUnavailable

log = structlog.get_logger("monitor.retention")

# Rows per transaction: a chunk of deletes takes a few milliseconds, which
# is how long an alarm committed behind it may wait.
CHUNK = 5000
# Daemon-clock time between passes.
INTERVAL = timedelta(minutes=5)
# Wall-time pause between two chunks of one pass, so a long prune leaves the
# writer to the alarms in between.
CHUNK_PAUSE = 0.005
EVENTS_KEEP_ROWS = 100_000
EVENTS_KEEP_AGE = timedelta(days=7)
INCIDENTS_PER_CHUNK = 500
# The `counters` row holding the raw-bytes cursor (the last alarm seq done).
RAW_CURSOR = "retention_raw_seq"

# Shared store: the advisory lock a pass's claim is taken under (the
# migrations use 7428190013), and the `counters` rows recording the claim.
PASS_LOCK = 7428190014
PASS_AT = "retention_pass_at"  # daemon-clock milliseconds of the last claimed pass
PASS_BY = "retention_pass_by"  # instance_id() of the instance that claimed it

# An alarm whose incident exists and is not resolved is never pruned.
_KEEP_ALARM = (
    "a.incident IS NOT NULL AND EXISTS "
    "(SELECT 1 FROM incidents i WHERE i.id = a.incident AND i.state != 'resolved')"
)

Counts = dict[str, int]
# A step: (conn, now, cfg, budget) -> (rows handled, finished?, removed by table).
# It handles at most about `budget` rows; "finished" means nothing is left
# for it at this `now`.
StepResult = tuple[int, bool, Counts]
Step = Callable[[sqlite3.Connection, float, RetentionConfig, int], StepResult]


def _ago(now: float, age: timedelta) -> float:
    return now - age.total_seconds()


def _in(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


def prune_incidents(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig, budget: int
) -> StepResult:
    if cfg.resolved_incidents is None:
        return 0, True, {}
    # Incidents are the budgeted unit; their notices, attempts and events
    # come along (a handful each), so a chunk may run a little over.  At most
    # INCIDENTS_PER_CHUNK at once: the ids become SQL parameters.
    take = min(budget, INCIDENTS_PER_CHUNK)
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < ? "
            "ORDER BY id LIMIT ?",
            (_ago(now, cfg.resolved_incidents), take),
        )
    ]
    if not ids:
        return 0, True, {}
    marks = _in(ids)
    attempts = conn.execute(
        f"DELETE FROM notice_attempts WHERE notice IN "
        f"(SELECT id FROM notices WHERE incident IN ({marks}))",
        ids,
    ).rowcount
    notices = conn.execute(f"DELETE FROM notices WHERE incident IN ({marks})", ids).rowcount
    events = conn.execute(f"DELETE FROM events WHERE incident IN ({marks})", ids).rowcount
    # Same transaction as the SELECT, so these are still resolved; the state
    # test stays as the last guard of "never an unresolved incident".
    incidents = conn.execute(
        f"DELETE FROM incidents WHERE state = 'resolved' AND id IN ({marks})", ids
    ).rowcount
    counts = {
        "incidents": incidents,
        "notices": notices,
        "notice_attempts": attempts,
        "events": events,
    }
    return len(ids), len(ids) < take, counts


def prune_alarms(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig, budget: int
) -> StepResult:
    if cfg.alarms is None:
        return 0, True, {}
    n = conn.execute(
        "DELETE FROM alarms WHERE seq IN ("
        f" SELECT a.seq FROM alarms a WHERE a.stored_at < ? AND NOT ({_KEEP_ALARM})"
        " ORDER BY a.stored_at LIMIT ?)",
        (_ago(now, cfg.alarms), budget),
    ).rowcount
    return n, n < budget, {"alarms": n}


def prune_raw(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig, budget: int
) -> StepResult:
    if cfg.raw is None:
        return 0, True, {}
    cutoff = _ago(now, cfg.raw)
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (RAW_CURSOR,)).fetchone()
    cursor = int(row[0]) if row else 0
    rows = conn.execute(
        "SELECT seq, stored_at, raw IS NOT NULL FROM alarms WHERE seq > ? ORDER BY seq LIMIT ?",
        (cursor, budget),
    ).fetchall()
    emptied: list[int] = []
    finished = len(rows) < budget  # the end of the table is in sight
    done = 0
    for seq, stored_at, has_raw in rows:
        # Stop at the first young alarm: seq follows stored_at except after a
        # backward clock jump, and stopping early only ever keeps bytes longer.
        if stored_at >= cutoff:
            finished = True
            break
        done += 1
        cursor = seq
        if has_raw:
            emptied.append(seq)
    for start in range(0, len(emptied), 500):
        part = emptied[start : start + 500]
        conn.execute(f"UPDATE alarms SET raw = NULL WHERE seq IN ({_in(part)})", part)
    conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (RAW_CURSOR, cursor),
    )
    # Only the rows passed count against the budget: every chunk that reports
    # work has moved the cursor, so a pass always comes to an end.
    return done, finished, {"alarms_raw": len(emptied)}


def prune_quarantine(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig, budget: int
) -> StepResult:
    deleted = 0
    if cfg.quarantine is not None:
        deleted = conn.execute(
            "DELETE FROM quarantine WHERE seq IN (SELECT seq FROM quarantine "
            "WHERE received_at < ? ORDER BY received_at LIMIT ?)",
            (_ago(now, cfg.quarantine), budget),
        ).rowcount
        if deleted >= budget:
            return deleted, False, {"quarantine": deleted}
    if cfg.quarantine_max_bytes is not None:
        held = quarantine_bytes(conn)
        excess = held - cfg.quarantine_max_bytes
        if excess > 0:
            victims: list[int] = []
            freed = 0
            for seq, size in conn.execute(
                "SELECT seq, coalesce(length(raw), 0) FROM quarantine "
                "ORDER BY received_at, seq LIMIT ?",
                (budget - deleted,),
            ):
                if freed >= excess:
                    break
                victims.append(seq)
                freed += size
            for start in range(0, len(victims), 500):
                part = victims[start : start + 500]
                conn.execute(f"DELETE FROM quarantine WHERE seq IN ({_in(part)})", part)
            deleted += len(victims)
            if freed < excess:
                return deleted, False, {"quarantine": deleted}
    return deleted, True, {"quarantine": deleted}


def prune_events(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig, budget: int
) -> StepResult:
    newest = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    if newest is None:
        return 0, True, {}
    keep_from = newest - EVENTS_KEEP_ROWS + 1
    cutoff = _ago(now, EVENTS_KEEP_AGE)
    last = None
    n = 0
    # The prefix of the feed that is too old or beyond the row cap; it stops
    # at the first row kept, so the feed never gets holes from this rule.
    for seq, at in conn.execute("SELECT seq, at FROM events ORDER BY seq LIMIT ?", (budget,)):
        if seq >= keep_from and at >= cutoff:
            break
        last = seq
        n += 1
    if last is None:
        return 0, True, {}
    conn.execute("DELETE FROM events WHERE seq <= ?", (last,))
    return n, n < budget, {"events": n}


STEPS: tuple[Step, ...] = (
    prune_incidents,
    prune_alarms,
    prune_raw,
    prune_quarantine,
    prune_events,
)


def prune(
    conn: sqlite3.Connection, now: float, cfg: RetentionConfig | None, limit: int = CHUNK
) -> Counts:
    """One chunk of retention at daemon-clock time `now` (unix seconds).

    Returns what it removed by table (see `monitor.metrics.RETENTION_TABLES`)
    plus `"_more"`: 1 when a rule had more to do than this chunk's `limit`
    allowed; then call again, in a new transaction.
    """
    cfg = cfg or RetentionConfig()
    budget = limit
    counts: Counts = {}
    more = False
    for step in STEPS:
        if budget <= 0:
            more = True
            break
        used, finished, got = step(conn, now, cfg, budget)
        budget -= used
        more = more or not finished
        for name, n in got.items():
            if n:
                counts[name] = counts.get(name, 0) + n
    counts["_more"] = int(more)
    return counts


def instance_id(name: str) -> int:
    """A stable number for `[daemon] instance` (fits a BIGINT counter)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest(), "big")


def claim_pass(
    conn: sqlite3.Connection, now: float, me: int, interval: timedelta = INTERVAL
) -> str | None:
    """Claim the retention pass at daemon time `now` for instance `me`.

    PostgreSQL only (a shared store).  Returns None when claimed (the claim
    commits with the caller's transaction), else why the pass is skipped.
    """
    locked = conn.execute(f"SELECT pg_try_advisory_xact_lock({PASS_LOCK})").fetchone()
    if locked is None or not locked[0]:
        return "another instance is running a pass"
    rows = conn.execute(
        "SELECT name, value FROM counters WHERE name IN (?, ?)", (PASS_AT, PASS_BY)
    ).fetchall()
    held = {str(r[0]): int(r[1]) for r in rows}
    now_ms = int(now * 1000)
    at, by = held.get(PASS_AT), held.get(PASS_BY)
    if at is not None and by != me and abs(now_ms - at) < interval.total_seconds() * 1000:
        return f"another instance ran a pass {abs(now_ms - at) / 1000:.0f} s (daemon clock) ago"
    for name, value in ((PASS_AT, now_ms), (PASS_BY, me)):
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
    return None


def quarantine_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(length(raw)), 0) FROM quarantine").fetchone()[0])


class RetentionJob:
    """Runs `prune` in chunks at start and every `interval` of daemon time."""

    def __init__(self, rt: Runtime, interval: timedelta = INTERVAL, chunk: int = CHUNK) -> None:
        self.rt = rt
        self.interval = interval
        self.chunk = chunk
        self.passes = 0
        self.skipped = 0  # passes left to another instance (shared store)

    async def run(self) -> None:
        clock = self.rt.clock
        wake = clock.waker()
        while True:
            wake.clear()  # before the pass: a jump during it starts another
            # A failed pass is retried at the next one; nothing half-done
            # matters (each chunk is its own transaction, the rules are
            # idempotent).  Not re-raised: the supervisor's restart would
            # run a pass at once, in a tight loop on a sick store.
            try:
                done = await self.run_once()
                outcome = "ok" if done is not None else "skipped"
                self.rt.metrics.retention_runs.labels(outcome=outcome).inc()
            except StorageUnavailable as exc:
                self.rt.metrics.retention_runs.labels(outcome="failed").inc()
                log.warning("retention pass failed", error=str(exc))
            except Exception:
                self.rt.metrics.retention_runs.labels(outcome="failed").inc()
                log.exception("retention pass failed")
            due = clock.now() + self.interval
            # sleep_until wakes at least every minute of wall time; go on
            # sleeping until the daemon clock reaches `due` or jumps.
            while clock.now() < due and not wake.is_set():
                await clock.sleep_until(due, wake)

    async def run_once(self) -> Counts | None:
        """One full pass; returns the totals removed by table, or None when
        another instance runs this pass (shared store)."""
        self.passes += 1
        config = self.rt.config.current
        cfg = config.retention
        now = self.rt.clock.now().timestamp()
        started = time.monotonic()
        totals: Counts = {}
        chunks = 0
        shared = bool(getattr(self.rt.store, "shared", False))
        me = instance_id(config.daemon.instance)
        skipped: list[str] = []

        def first(conn: sqlite3.Connection) -> Counts:
            skipped.clear()  # the writer may run a job again after a conflict
            why = claim_pass(conn, now, me, self.interval)
            if why is not None:
                skipped.append(why)
                return {}
            return prune(conn, now, cfg, self.chunk)

        while True:
            if shared and chunks == 0:
                got = await self.rt.store.write(first)
                if skipped:
                    self.skipped += 1
                    held = await self.rt.store.read(quarantine_bytes)
                    self.rt.metrics.quarantine_bytes.set(held)
                    log.info("retention pass skipped", reason=skipped[0])
                    return None
            else:
                got = await self.rt.store.write(lambda conn: prune(conn, now, cfg, self.chunk))
            chunks += 1
            more = got.pop("_more", 0)
            for name, n in got.items():
                totals[name] = totals.get(name, 0) + n
                self.rt.metrics.retention_pruned.labels(table=name).inc(n)
            if not more:
                break
            await asyncio.sleep(CHUNK_PAUSE)
        held = await self.rt.store.read(quarantine_bytes)
        self.rt.metrics.quarantine_bytes.set(held)
        if totals:
            log.info(
                "retention pass",
                pruned=totals,
                chunks=chunks,
                quarantine_bytes=held,
                seconds=round(time.monotonic() - started, 3),
            )
        return totals
