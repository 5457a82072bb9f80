"""The PostgreSQL store: the adapter's sqlite3 look-alike, and exactly-once
with several instances (in-process daemons) sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.store import open_store, postgres
from monitor.store.pgadapter import Connection, translate
from monitor.store.postgres import PgStore, schema_version
from tests.support.daemon import RunningDaemon, running, webhook_receiver, write_config
from tests.support.postgres import pg_server, pg_url  # noqa: F401


def test_translate() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE '5%'") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE '5%%'",
        None,
    )
    sql, key = translate("INSERT OR IGNORE INTO notices (a) VALUES (?)")
    assert sql == "INSERT INTO notices (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id"
    assert key == "id"
    assert translate("INSERT INTO counters (name, value) VALUES (?, ?)")[1] is None


def test_factory_picks_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("postgresql://x@/y"), PgStore)
    assert not isinstance(open_store(str(tmp_path / "m.db")), PgStore)


async def test_adapter_behaves_like_sqlite(pg_url: str) -> None:  # noqa: F811
    store = PgStore(pg_url)
    assert store.open() == [
        "0001_initial.sql",
        "0002_agent_outbox.sql",
        "0003_offline_grace.sql",
    ]
    try:

        def tx(conn: sqlite3.Connection) -> tuple[Any, ...]:
            a = conn.execute(
                "INSERT INTO events (incident, contract, at) VALUES (?, ?, ?)", (7, "C", 1.5)
            ).lastrowid
            args = (1, 1, "raised", "major", "Sato", "webhook", "http://x", "k1", 1.0, 2.0)
            sql = (
                "INSERT OR IGNORE INTO notices (incident, round, kind, severity, contact,"
                " transport, target, key, status, created_at, next_try)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
            )
            first = conn.execute(sql, args)
            second = conn.execute(sql, args)
            conn.execute(
                "INSERT INTO quarantine (channel, reason, received_at, size, raw, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ("http", "bad\x00", 1.0, 3, b"\x00\x01\x02", True),
            )
            return a, first.rowcount, first.lastrowid, second.rowcount, second.lastrowid

        a, n1, id1, n2, id2 = await store.write(tx)
        assert (a, n1, n2, id2) == (1, 1, 0, None) and id1 == 1
        row = await store.read(lambda c: c.execute("SELECT * FROM quarantine").fetchone())
        assert row["raw"] == b"\x00\x01\x02" and row[0] == row["seq"] == 1
        assert row["reason"] == "bad\ufffd" and row["detail"] == "1"
        assert dict(zip(row.keys(), row, strict=True))["channel"] == "http"

        def dup(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO counters (name, value) VALUES ('x', 1)",
            )
            conn.execute("INSERT INTO counters (name, value) VALUES ('x', 1)")

        with pytest.raises(sqlite3.IntegrityError):
            await store.write(dup)
        # the failing job was rolled back alone; the store still takes writes
        assert await store.write(lambda c: c.execute("SELECT count(*) FROM counters").fetchone())
        assert store.up
    finally:
        store.close()
    conn = Connection.connect(pg_url, autocommit=True)
    try:
        assert schema_version(conn) == 3
    finally:
        conn.close()


async def test_unguarded_batch_falls_back_to_savepoints(pg_url: str) -> None:  # noqa: F811
    """Once calm, batches run without savepoints; a failing job in one rolls
    the batch back and it runs again guarded: the others commit once, the
    failing job alone gets its error."""
    store = PgStore(pg_url)
    store.open()
    try:
        writer = store._pg_writer
        assert writer is not None
        for i in range(postgres.CALM_BATCHES):
            await store.write(
                lambda c, i=i: c.execute(
                    "INSERT INTO counters (name, value) VALUES (?, 1)", (f"calm{i}",)
                )
            )
        assert writer._calm >= postgres.CALM_BATCHES  # the next batch runs unguarded

        def add(name: str) -> Any:
            return lambda c: (
                c.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (name,)).rowcount
            )

        def fails(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO counters (name, value) VALUES ('ok-0', 1)")  # duplicate

        results = await asyncio.gather(
            store.write(add("ok-0")),
            store.write(fails),
            store.write(add("ok-1")),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 1, results
        assert isinstance(results[1], sqlite3.IntegrityError), results
        names = _count(pg_url, "SELECT name FROM counters WHERE name LIKE 'ok-%' ORDER BY 1")
        assert names == [("ok-0",), ("ok-1",)]
    finally:
        store.close()


@contextlib.asynccontextmanager
async def _instances(tmp_path: Path, url: str, hook: str, clock_start: str, n: int = 3) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        out: list[RunningDaemon] = []
        for i in range(n):
            cfg = write_config(
                tmp_path, hook=hook, clock_start=clock_start, db_url=url, name=f"m{i}.toml"
            )
            text = cfg.read_text().replace('instance = "test-1"', f'instance = "test-{i + 1}"')
            cfg.write_text(text)
            out.append(await stack.enter_async_context(running(cfg)))
        yield out


def _count(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql.encode()).fetchall())


async def test_three_instances_dedup_and_fold_exactly_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with (
        webhook_receiver() as hook,
        _instances(tmp_path, pg_url, hook.url, "2026-11-20T10:00:00+09:00") as ds,
    ):
        # Every instance gets every report (as after an at-least-once redelivery):
        # 60 reports on 5 fingerprints.
        async def push(d: RunningDaemon, i: int) -> None:
            status, _ = await d.alarm(id=f"r-{i}", component=f"PSU{i % 5}")
            assert status == 202

        await asyncio.gather(*(push(d, i) for i in range(60) for d in ds))
        assert _count(pg_url, "SELECT count(*) FROM alarms") == [(60,)]
        rows = _count(pg_url, "SELECT fingerprint, count, state FROM incidents ORDER BY 1")
        assert len(rows) == 5, rows
        assert all(r[1] == 12 for r in rows), rows
        await hook.wait_for(5)
        await asyncio.sleep(1.0)
        keys = Counter(r["key"] for r in hook.received)
        assert len(keys) == 5 and set(keys.values()) == {1}, keys
        raised = _count(pg_url, "SELECT count(*) FROM notices WHERE kind = 'raised'")
        assert raised == [(5,)]


async def test_deferred_raised_once_while_three_schedulers_race(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with (
        webhook_receiver() as hook,
        _instances(tmp_path, pg_url, hook.url, "2026-11-20T18:00:00+09:00") as ds,
    ):
        for i in range(12):
            status, body = await ds[i % 3].alarm(id=f"d-{i}", component=f"FAN{i}")
            assert status == 202, body
        assert _count(pg_url, "SELECT count(*) FROM incidents WHERE state = 'deferred'") == [(12,)]
        # Tuesday 08:30 opens the window (Monday 23rd is a holiday): three schedulers race.
        await asyncio.gather(*(d.set_clock("2026-11-24T08:30:01+09:00") for d in ds))
        await hook.wait_for(12)
        await asyncio.sleep(1.5)
        assert _count(pg_url, "SELECT count(*) FROM incidents WHERE state = 'deferred'") == [(0,)]
        assert _count(pg_url, "SELECT count(*) FROM notices WHERE kind = 'raised'") == [(12,)]
        keys = Counter(r["key"] for r in hook.received)
        assert len(keys) == 12 and set(keys.values()) == {1}, keys
        steps = [await d.metric("monitor_scheduler_steps_total") for d in ds]
        assert sum(steps) >= 12
