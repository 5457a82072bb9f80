"""SSE events in commit order across instances sharing one PostgreSQL.

Event seqs come from an identity column at INSERT; commits come later, so an
open transaction can hold a lower seq than one already committed.  The
Fanout (monitor/store/pgfanout.py) must not publish the higher one before the
lower one has ended, or a client resuming with `Last-Event-ID` would skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from prometheus_client import generate_latest

from monitor.events import EventBus, Subscription
from monitor.metrics import Metrics
from monitor.store.pgadapter import Connection
from monitor.store.pgfanout import Fanout
from monitor.store.postgres import migrate
from tests.support.daemon import TOKENS, RunningDaemon, running, webhook_receiver, write_config
from tests.support.postgres import pg_server, pg_url  # noqa: F401

WAIT = 10.0  # generous bound for things that must happen (never a performance figure)


def _migrated(url: str) -> None:
    conn = Connection.connect(url, autocommit=True)
    try:
        migrate(conn)
    finally:
        conn.close()


def _insert_event(conn: psycopg.Connection[Any], incident: int) -> int:
    row = conn.execute(
        "INSERT INTO events (incident, contract, at) VALUES (%s, 'C-0001', 0) RETURNING seq",
        (incident,),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def _next(sub: Subscription, timeout: float = WAIT) -> tuple[int, int]:
    async with asyncio.timeout(timeout):
        return await sub.queue.get()


async def _nothing_within(sub: Subscription, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            got = await sub.queue.get()
            pytest.fail(f"published too early: {got}")


@contextlib.asynccontextmanager
async def _fanout(
    url: str, wait_cap: float
) -> AsyncIterator[tuple[Fanout, EventBus, Subscription]]:
    bus = EventBus()
    sub = bus.subscribe()
    fanout = Fanout(url, wait_cap=wait_cap)
    fanout.start(bus.publish)
    try:
        assert await fanout.wait_ready(WAIT)
        await asyncio.sleep(0)  # let the loop run the first publish (the horizon)
        yield fanout, bus, sub
    finally:
        await asyncio.to_thread(fanout.stop)


async def test_higher_seq_held_back_until_lower_commits(pg_url: str) -> None:  # noqa: F811
    _migrated(pg_url)
    with psycopg.connect(pg_url) as t0:  # one event before the listener starts
        _insert_event(t0, 100)
    async with _fanout(pg_url, wait_cap=60.0) as (fanout, bus, sub):
        assert bus.horizon == 1
        with psycopg.connect(pg_url) as t1, psycopg.connect(pg_url) as t2:
            low = _insert_event(t1, 1)  # T1 stays open
            high = _insert_event(t2, 2)
            t2.commit()
            assert low < high
            await _nothing_within(sub, 0.5)
            assert bus.horizon == 1 and fanout.published == 1
            t1.commit()
            assert [await _next(sub), await _next(sub)] == [(low, 1), (high, 2)]
            assert bus.horizon == high
            # a rolled-back seq is a gap, never published; later rows flow
            gap = _insert_event(t1, 3)
            t1.rollback()
            after = _insert_event(t2, 4)
            t2.commit()
            assert await _next(sub) == (after, 4) and gap < after
        assert (fanout.capped, fanout.late, fanout.out_of_order) == (0, 0, 0)


async def test_wait_cap_publishes_without_a_long_transaction(pg_url: str) -> None:  # noqa: F811
    _migrated(pg_url)
    async with _fanout(pg_url, wait_cap=0.3) as (fanout, bus, sub):
        with psycopg.connect(pg_url) as t1, psycopg.connect(pg_url) as t2:
            low = _insert_event(t1, 1)  # open far longer than the cap
            high = _insert_event(t2, 2)
            t2.commit()
            assert await _next(sub) == (high, 2)
            assert fanout.capped == 1
            # the long transaction is not waited for a second time
            more = _insert_event(t2, 3)
            t2.commit()
            assert await _next(sub) == (more, 3)
            assert fanout.capped == 1
            # it commits at last: its row is published late (not lost), and counted
            t1.commit()
            assert await _next(sub) == (low, 1)
            assert fanout.late == 1 and fanout.out_of_order == 0
            assert bus.horizon == more
    # what /metrics exports for it (synced at scrape time, never counted twice)
    metrics = Metrics()
    for _ in range(2):
        metrics.sync_event_feed({"capped": fanout.capped, "late": fanout.late})
    exported = generate_latest(metrics.registry).decode()
    assert 'monitor_event_feed_total{outcome="capped"} 1.0' in exported
    assert 'monitor_event_feed_total{outcome="late"} 1.0' in exported


# -- end to end: two instances, an SSE client of one resuming by Last-Event-ID --------


async def _sse_reader(
    d: RunningDaemon, ids: list[int], stop: asyncio.Event, problems: list[str]
) -> None:
    """An SSE client that drops its connection every few hundred ms and
    resumes with Last-Event-ID, like a browser on a flaky network."""
    last = 0
    rnd = random.Random(7)
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            hold = rnd.uniform(0.05, 0.4)
            with contextlib.suppress(TimeoutError):
                async with (
                    asyncio.timeout(hold),
                    session.get(
                        d.url + "/api/v1/events",
                        headers={**headers, "Last-Event-ID": str(last)},
                    ) as resp,
                ):
                    assert resp.status == 200
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("event: reset"):
                            problems.append(f"reset after {last}")
                        if line.startswith("id: "):
                            seq = int(line[4:])
                            if seq <= last:
                                problems.append(f"{seq} after {last}")
                            ids.append(seq)
                            last = seq


async def test_resuming_client_of_one_instance_gets_every_event(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        hook = await stack.enter_async_context(webhook_receiver())
        ds: list[RunningDaemon] = []
        for i in range(2):
            cfg = write_config(
                tmp_path,
                hook=hook.url,
                clock_start="2026-11-20T10:00:00+09:00",
                db_url=pg_url,
                name=f"m{i}.toml",
            )
            cfg.write_text(
                cfg.read_text().replace('instance = "test-1"', f'instance = "test-{i + 1}"')
            )
            ds.append(await stack.enter_async_context(running(cfg)))
        a, b = ds
        ids: list[int] = []
        problems: list[str] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(_sse_reader(b, ids, stop, problems))

        async def push(d: RunningDaemon, worker: int) -> None:
            for n in range(30):
                status, body = await d.alarm(
                    id=f"w{worker}-{n}", component=f"PSU{(worker + n) % 7}"
                )
                assert status == 202, body

        await asyncio.gather(*(push(d, w) for w in range(3) for d in (a, b)))
        with psycopg.connect(pg_url) as conn:
            newest = conn.execute("SELECT max(seq) FROM events").fetchone()
        assert newest is not None and newest[0] is not None
        async with asyncio.timeout(30):
            while not ids or ids[-1] < newest[0]:
                await asyncio.sleep(0.05)
        stop.set()
        await reader
        with psycopg.connect(pg_url) as conn:
            table = [
                int(r[0])
                for r in conn.execute("SELECT seq FROM events WHERE seq <= %s ORDER BY seq", newest)
            ]
        assert problems == []
        assert len(table) > 7  # 7 incidents raised, folded into, notified
        got = [seq for seq in ids if seq <= newest[0]]
        assert got == table  # every event, once, in seq order: no gap across resumes
        for d in ds:
            fanout = d.rt.store.fanout  # type: ignore[attr-defined]
            assert fanout.out_of_order == 0 and fanout.late == 0
