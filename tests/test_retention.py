"""Retention rules on a real (migrated) store, with `now` given explicitly.

`prune` is plain SQL on one connection, so these tests build exactly the rows
they need and check what is left: what should go goes, and nothing else —
above all never an incident that is not resolved, nor its alarms.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from monitor import retention
from monitor.model import RetentionConfig
from monitor.retention import prune
from monitor.store.sqlite import connect, migrate

NOW = 1_830_000_000.0  # 2027-12-28, a fixed daemon-clock "now"
DAY = 86_400.0
UNRESOLVED = ("deferred", "open", "notified", "acknowledged")
CFG = RetentionConfig(
    alarms=timedelta(days=400),
    raw=timedelta(days=90),
    quarantine=timedelta(days=30),
    resolved_incidents=timedelta(days=730),
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(str(tmp_path / "monitor.db"))
    migrate(c)
    # Durability is not under test here; thousands of autocommitted inserts
    # with an fsync each would be.
    c.execute("PRAGMA synchronous=OFF")
    yield c
    c.close()


class Rows:
    """Inserts the minimum of each table that retention looks at."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def incident(self, state: str, *, seen: float, resolved_at: float | None = None) -> int:
        n = self._next()
        cur = self.conn.execute(
            "INSERT INTO incidents (contract, plan, device, component, code, fingerprint,"
            " severity, state, title, count, first_seen, last_seen, resolved_at, updated_at)"
            " VALUES ('C-1', 'p', 'DEV1', 'PSU', ?, ?, 'major', ?, 't', 1, ?, ?, ?, ?)",
            (f"C{n}", f"DEV1/PSU/C{n}", state, seen, seen, resolved_at, seen),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def notice(self, incident: int, *, at: float, attempts: int = 2) -> int:
        n = self._next()
        cur = self.conn.execute(
            "INSERT INTO notices (incident, round, kind, severity, contact, transport, target,"
            " key, status, attempts, created_at, next_try)"
            " VALUES (?, 1, 'raised', 'major', 'Sato', 'webhook', 'http://x', ?, 'delivered',"
            " ?, ?, ?)",
            (incident, f"k{n}", attempts, at, at),
        )
        assert cur.lastrowid is not None
        for attempt in range(1, attempts + 1):
            self.conn.execute(
                "INSERT INTO notice_attempts (notice, attempt, started_at, outcome)"
                " VALUES (?, ?, ?, 'delivered')",
                (cur.lastrowid, attempt, at),
            )
        return cur.lastrowid

    def event(self, incident: int, *, at: float) -> int:
        cur = self.conn.execute(
            "INSERT INTO events (incident, contract, at) VALUES (?, 'C-1', ?)", (incident, at)
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def alarm(self, *, stored: float, incident: int | None = None, raw: bytes = b"raw") -> int:
        n = self._next()
        cur = self.conn.execute(
            "INSERT INTO alarms (device, report_id, channel, format, severity, component, code,"
            " message, received_at, stored_at, coverage, incident, raw)"
            " VALUES ('DEV1', ?, 'http', 'json', 'major', 'PSU', 'X', 'm', ?, ?, ?, ?, ?)",
            (
                f"r{n}",
                stored,
                stored,
                "covered" if incident else "unknown-device",
                incident,
                raw,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def quarantine(self, *, at: float, size: int = 10) -> int:
        cur = self.conn.execute(
            "INSERT INTO quarantine (channel, reason, received_at, size, raw)"
            " VALUES ('smtp', 'unparseable', ?, ?, ?)",
            (at, size, b"q" * size),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid


def prune_all(
    conn: sqlite3.Connection, cfg: RetentionConfig | None, limit: int = retention.CHUNK
) -> tuple[dict[str, int], int]:
    """Run chunks the way the job does; returns the totals and the chunk count."""
    totals: dict[str, int] = {}
    for chunks in range(1, 10_000):
        conn.execute("BEGIN IMMEDIATE")
        got = prune(conn, NOW, cfg, limit)
        conn.execute("COMMIT")
        more = got.pop("_more")
        for name, n in got.items():
            totals[name] = totals.get(name, 0) + n
        if not more:
            return totals, chunks
    raise AssertionError("prune never finished")


def ids(conn: sqlite3.Connection, sql: str) -> set[int]:
    return {r[0] for r in conn.execute(sql)}


def test_each_rule_prunes_what_it_should_and_nothing_else(conn: sqlite3.Connection) -> None:
    rows = Rows(conn)
    ancient = NOW - 1000 * DAY
    # Unresolved incidents of every state, all far older than every limit:
    # they, their alarms, notices and events must all survive.
    unresolved = [rows.incident(state, seen=ancient) for state in UNRESOLVED]
    kept_notices = {rows.notice(inc, at=ancient) for inc in unresolved}
    for inc in unresolved:
        rows.event(inc, at=NOW - DAY)
    # Resolved 800 days ago (over 730): goes, with notices, attempts, events.
    old = rows.incident("resolved", seen=ancient, resolved_at=NOW - 800 * DAY)
    rows.notice(old, at=NOW - 900 * DAY)
    old_event = rows.event(old, at=NOW - DAY)
    # Resolved 100 days ago: stays.
    recent = rows.incident("resolved", seen=NOW - 500 * DAY, resolved_at=NOW - 100 * DAY)
    kept_notices.add(rows.notice(recent, at=NOW - 100 * DAY))
    kept_incidents = {*unresolved, recent}
    # Alarms in the order they were stored (seq follows stored_at).
    protected = {rows.alarm(stored=ancient, incident=inc) for inc in unresolved}
    old_alarm = rows.alarm(stored=NOW - 900 * DAY, incident=old)
    # A resolved incident's alarms follow the age rule (500 days: gone), and
    # so does an alarm naming an incident pruned long ago.
    recent_old_alarm = rows.alarm(stored=NOW - 500 * DAY, incident=recent)
    orphan = rows.alarm(stored=NOW - 500 * DAY, incident=99_999)
    # Alarms without an incident (uncovered) just by age.
    gone_uncovered = rows.alarm(stored=NOW - 401 * DAY)
    kept_uncovered = rows.alarm(stored=NOW - 399 * DAY)
    recent_young_alarm = rows.alarm(stored=NOW - 50 * DAY, incident=recent)
    young = rows.alarm(stored=NOW - 10 * DAY)
    kept_alarms = {*protected, kept_uncovered, recent_young_alarm, young}
    q_old = rows.quarantine(at=NOW - 31 * DAY)
    q_young = rows.quarantine(at=NOW - 29 * DAY)

    totals, _ = prune_all(conn, CFG)

    assert ids(conn, "SELECT id FROM incidents") == kept_incidents
    assert ids(conn, "SELECT id FROM notices") == kept_notices
    assert ids(conn, "SELECT DISTINCT notice FROM notice_attempts") == kept_notices
    assert old_event not in ids(conn, "SELECT seq FROM events")
    assert len(ids(conn, "SELECT seq FROM events")) == len(UNRESOLVED)
    alarms = ids(conn, "SELECT seq FROM alarms")
    assert alarms == kept_alarms
    assert not alarms & {old_alarm, recent_old_alarm, gone_uncovered, orphan}
    # Raw bytes go by age alone (the parsed alarm stays), younger ones stay.
    with_raw = ids(conn, "SELECT seq FROM alarms WHERE raw IS NOT NULL")
    assert with_raw == {young, recent_young_alarm}
    assert ids(conn, "SELECT seq FROM quarantine") == {q_young}
    assert q_old not in ids(conn, "SELECT seq FROM quarantine")
    assert totals == {
        "incidents": 1,
        "notices": 1,
        "notice_attempts": 2,
        "events": 1,
        "alarms": 4,
        "alarms_raw": len(kept_alarms) - len(with_raw),
        "quarantine": 1,
    }
    # Idempotent: a second pass at the same time finds nothing.
    assert prune_all(conn, CFG)[0] == {}


def test_random_mix_never_touches_unresolved_incidents(conn: sqlite3.Connection) -> None:
    """Property over a seeded random mix: every unresolved incident keeps its
    row, alarms and notices; resolved ones go exactly when over the limit."""
    rng = random.Random(12)
    rows = Rows(conn)
    expect_incidents: set[int] = set()
    protected_alarms: set[int] = set()
    for _ in range(300):
        state = rng.choice((*UNRESOLVED, "resolved", "resolved"))
        seen = NOW - rng.uniform(0, 1500) * DAY
        resolved_at = seen + rng.uniform(0, 50) * DAY if state == "resolved" else None
        inc = rows.incident(state, seen=seen, resolved_at=resolved_at)
        over = resolved_at is not None and resolved_at < NOW - 730 * DAY
        if not over:
            expect_incidents.add(inc)
        for _ in range(rng.randint(0, 3)):
            alarm = rows.alarm(stored=seen + rng.uniform(0, 40) * DAY, incident=inc)
            if state != "resolved":
                protected_alarms.add(alarm)
        for _ in range(rng.randint(0, 2)):
            rows.notice(inc, at=seen, attempts=rng.randint(0, 3))
    unresolved_notices = ids(
        conn,
        "SELECT n.id FROM notices n JOIN incidents i ON i.id = n.incident"
        " WHERE i.state != 'resolved'",
    )

    prune_all(conn, CFG, limit=97)  # a small chunk: many transactions

    assert ids(conn, "SELECT id FROM incidents") == expect_incidents
    assert protected_alarms <= ids(conn, "SELECT seq FROM alarms")
    assert unresolved_notices <= ids(conn, "SELECT id FROM notices")
    # Whatever alarm is left is protected or young enough.
    for seq, stored, inc in conn.execute("SELECT seq, stored_at, incident FROM alarms"):
        assert seq in protected_alarms or stored >= NOW - 400 * DAY, (seq, inc)
    # No notice or attempt outlives its incident.
    assert not ids(conn, "SELECT incident FROM notices") - expect_incidents
    assert not ids(
        conn, "SELECT notice FROM notice_attempts WHERE notice NOT IN (SELECT id FROM notices)"
    )


def test_chunks_are_bounded_and_finish(conn: sqlite3.Connection) -> None:
    rows = Rows(conn)
    for _ in range(12_345):
        rows.alarm(stored=NOW - 500 * DAY)
    seen: list[int] = []
    for _ in range(10):
        conn.execute("BEGIN IMMEDIATE")
        got = prune(conn, NOW, CFG, 5000)
        conn.execute("COMMIT")
        seen.append(got.get("alarms", 0))
        if not got["_more"]:
            break
    assert seen == [5000, 5000, 2345]
    assert conn.execute("SELECT count(*) FROM alarms").fetchone()[0] == 0


def test_many_resolved_incidents_go_a_few_hundred_per_chunk(conn: sqlite3.Connection) -> None:
    rows = Rows(conn)
    for _ in range(1200):
        inc = rows.incident("resolved", seen=NOW - 900 * DAY, resolved_at=NOW - 800 * DAY)
        rows.notice(inc, at=NOW - 900 * DAY, attempts=1)
    keep = rows.incident("open", seen=NOW - 900 * DAY)

    totals, chunks = prune_all(conn, CFG)

    assert totals == {"incidents": 1200, "notices": 1200, "notice_attempts": 1200}
    assert chunks == 3  # 500 + 500 + 200 incidents
    assert ids(conn, "SELECT id FROM incidents") == {keep}


def test_raw_bytes_walk_a_cursor_in_chunks(conn: sqlite3.Connection) -> None:
    rows = Rows(conn)
    cfg = RetentionConfig(raw=timedelta(days=90))
    old = [rows.alarm(stored=NOW - 100 * DAY) for _ in range(1200)]
    young = rows.alarm(stored=NOW - 10 * DAY)

    totals, chunks = prune_all(conn, cfg, limit=500)

    assert totals == {"alarms_raw": 1200}
    assert chunks == 3
    assert ids(conn, "SELECT seq FROM alarms WHERE raw IS NOT NULL") == {young}
    assert conn.execute("SELECT count(*) FROM alarms").fetchone()[0] == 1201  # rows stay
    # The cursor stops before the first young alarm: once it ages, it goes.
    cursor = conn.execute(
        "SELECT value FROM counters WHERE name = ?", (retention.RAW_CURSOR,)
    ).fetchone()[0]
    assert cursor == old[-1]
    conn.execute("BEGIN IMMEDIATE")
    later = prune(conn, NOW + 81 * DAY, cfg)
    conn.execute("COMMIT")
    assert later == {"alarms_raw": 1, "_more": 0}


def test_quarantine_size_cap_drops_oldest_first(conn: sqlite3.Connection) -> None:
    rows = Rows(conn)
    seqs = [rows.quarantine(at=NOW - (10 - i) * 60, size=1000) for i in range(10)]
    cfg = RetentionConfig(quarantine_max_bytes=3500)

    totals, chunks = prune_all(conn, cfg, limit=2)

    assert totals == {"quarantine": 7}
    assert chunks > 1
    assert ids(conn, "SELECT seq FROM quarantine") == set(seqs[-3:])
    assert retention.quarantine_bytes(conn) == 3000


def test_events_keep_a_bounded_tail(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = Rows(conn)
    inc = rows.incident("open", seen=NOW)
    # Three beyond the age limit, then twelve recent ones.
    for _ in range(3):
        rows.event(inc, at=NOW - 8 * DAY)
    recent = [rows.event(inc, at=NOW - 60) for _ in range(12)]

    assert prune_all(conn, None)[0] == {"events": 3}  # by age, whatever the config
    monkeypatch.setattr(retention, "EVENTS_KEEP_ROWS", 5)
    assert prune_all(conn, None, limit=4)[0] == {"events": 7}  # by count
    assert ids(conn, "SELECT seq FROM events") == set(recent[-5:])
    assert ids(conn, "SELECT id FROM incidents") == {inc}


def test_without_a_retention_section_only_the_event_tail_is_kept_short(
    conn: sqlite3.Connection,
) -> None:
    rows = Rows(conn)
    inc = rows.incident("resolved", seen=NOW - 5000 * DAY, resolved_at=NOW - 5000 * DAY)
    rows.alarm(stored=NOW - 5000 * DAY, incident=inc)
    rows.alarm(stored=NOW - 5000 * DAY)
    rows.quarantine(at=NOW - 5000 * DAY)
    before = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("incidents", "alarms", "quarantine")
    }
    assert prune_all(conn, None)[0] == {}
    assert prune_all(conn, RetentionConfig())[0] == {}
    after = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
    assert after == before
    assert conn.execute("SELECT count(*) FROM alarms WHERE raw IS NULL").fetchone()[0] == 0
