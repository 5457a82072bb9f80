"""PostgreSQL restarts (and crashes) under load: what docs/scale-out.md claims.

A real daemon process on the session's private cluster; HTTP clients push
alarms the whole time while the cluster is restarted (`pg_ctl restart -m
fast`) and then crashed (`pg_ctl stop -m immediate`, started again a second
later).  Every alarm answered 202 must be in the database afterwards; while
the database is away the answers are 503 (never a 500), `/readyz` says
`store` is down and recovers by itself; the event listener reconnects (SSE
events flow again), and an SSE client resuming by `Last-Event-ID` across
both outages has every event, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from monitor.store import StorageUnavailable
from monitor.store.postgres import PgStore
from tests.support.daemon import TOKENS, DaemonProcess, write_config
from tests.support.postgres import PgServer, pg_server, pg_url  # noqa: F401

RECOVER = 30.0  # bound for recovery after the database is back (not a performance figure)
AGENT = {"Authorization": f"Bearer {TOKENS['agent']}"}
ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


@dataclass
class Observed:
    acked: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: list[str] = field(default_factory=list)  # of answers other than 202/503
    client_errors: list[str] = field(default_factory=list)
    ready: list[tuple[float, int, Any]] = field(default_factory=list)
    sse_ids: list[int] = field(default_factory=list)
    sse_problems: list[str] = field(default_factory=list)
    reads: Counter[int] = field(default_factory=Counter)  # GET /api/v1/incidents answers
    last_ack: float = 0.0


async def _push(
    session: aiohttp.ClientSession, url: str, w: int, obs: Observed, stop: asyncio.Event
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        # worker 0: covered alarms, a new incident each (incident changes,
        # so SSE events); the others: an unregistered device (cheap intake)
        serial = "JPN0012345" if w == 0 else f"UNREG{w}"
        body = {
            "v": 1,
            "id": f"w{w}-{n}",
            "serial": serial,
            "severity": "major",
            "component": f"DISK{n}" if w == 0 else "PSU1",
            "code": "X-1",
            "message": "restart test",
        }
        try:
            async with session.post(url + "/api/v1/alarms", json=body, headers=AGENT) as resp:
                obs.statuses[resp.status] += 1
                text = await resp.text()
                if resp.status == 202:
                    obs.acked.add(body["id"])
                    obs.last_ack = time.monotonic()
                elif resp.status != 503:
                    obs.bodies.append(f"{resp.status} {text[:300]}")
        except aiohttp.ClientError as exc:
            obs.client_errors.append(repr(exc))
        await asyncio.sleep(0.02 if w == 0 else 0.005)


async def _readyz(
    session: aiohttp.ClientSession, url: str, obs: Observed, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/readyz") as resp:
                obs.ready.append((time.monotonic(), resp.status, await resp.json()))
        await asyncio.sleep(0.05)


async def _reader(
    session: aiohttp.ClientSession, url: str, obs: Observed, stop: asyncio.Event
) -> None:
    """An operator's list view, polling through the outage."""
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/api/v1/incidents?limit=5", headers=ADMIN) as resp:
                obs.reads[resp.status] += 1
                await resp.read()
        await asyncio.sleep(0.02)


async def _sse_resumer(
    session: aiohttp.ClientSession, url: str, obs: Observed, stop: asyncio.Event
) -> None:
    """A dashboard's EventSource: reconnects after any end, with Last-Event-ID."""
    last = 0
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with (
                asyncio.timeout(3.0),
                session.get(
                    url + "/api/v1/events", headers={**ADMIN, "Last-Event-ID": str(last)}
                ) as resp,
            ):
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: reset"):
                        obs.sse_problems.append(f"reset after {last}")
                    if line.startswith("id: "):
                        seq = int(line[4:])
                        if seq <= last:
                            obs.sse_problems.append(f"{seq} after {last}")
                        obs.sse_ids.append(seq)
                        last = seq
        await asyncio.sleep(0.1)


async def _live_event(session: aiohttp.ClientSession, url: str) -> int:
    """A fresh SSE connection (no Last-Event-ID) gets a live event: the
    listener, the only publisher on PostgreSQL, is connected again."""
    async with (
        asyncio.timeout(RECOVER),
        session.get(url + "/api/v1/events", headers=ADMIN) as resp,
    ):
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode()
            if line.startswith("id: "):
                return int(line[4:])
    raise AssertionError("stream ended without an event")


async def _recovered(obs: Observed, since: float) -> None:
    """A 202 and a ready /readyz, both after `since`."""
    async with asyncio.timeout(RECOVER):
        while not (
            obs.last_ack > since
            and obs.ready
            and obs.ready[-1][0] > since
            and obs.ready[-1][1] == 200
        ):
            await asyncio.sleep(0.05)


async def _acks_grow(obs: Observed, more: int) -> None:
    target = len(obs.acked) + more
    async with asyncio.timeout(RECOVER):
        while len(obs.acked) < target:
            await asyncio.sleep(0.02)


def _down_while(obs: Observed, start: float, end: float) -> list[Any]:
    return [body for t, status, body in obs.ready if start <= t <= end and status == 503]


async def test_postgres_restart_and_crash_under_load(
    tmp_path: Path,
    pg_server: PgServer,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    if not pg_server.controllable:
        pytest.skip("needs the private test cluster (pg_ctl), not the machine's server")
    cfg = write_config(tmp_path, db_url=pg_url, clock_start="2026-11-20T10:00:00+09:00")
    daemon = DaemonProcess(cfg)
    await asyncio.to_thread(daemon.start)
    obs = Observed()
    stop = asyncio.Event()
    sse_stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
        ) as session:
            url = daemon.url
            tasks = [asyncio.create_task(_push(session, url, w, obs, stop)) for w in range(3)]
            tasks.append(asyncio.create_task(_readyz(session, url, obs, stop)))
            tasks.append(asyncio.create_task(_reader(session, url, obs, stop)))
            resumer = asyncio.create_task(_sse_resumer(session, url, obs, sse_stop))
            await _acks_grow(obs, 30)
            assert await _live_event(session, url) > 0

            # 1. a clean restart
            await asyncio.to_thread(pg_server.restart, "fast")
            await _recovered(obs, time.monotonic())
            await _live_event(session, url)
            await _acks_grow(obs, 30)
            before_crash = dict(obs.statuses)

            # 2. a crash, the database away for a second
            t1 = time.monotonic()
            await asyncio.to_thread(pg_server.stop, "immediate")
            await asyncio.sleep(1.0)
            t2 = time.monotonic()
            await asyncio.to_thread(pg_server.start)
            await _recovered(obs, time.monotonic())
            await _live_event(session, url)
            await _acks_grow(obs, 30)
            stop.set()
            await asyncio.gather(*tasks)

            # the resuming SSE client catches up with every event of the table
            with psycopg.connect(pg_url) as conn:
                newest = conn.execute("SELECT max(seq) FROM events").fetchone()
                assert newest is not None and newest[0] is not None
                table = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM events WHERE seq <= %s ORDER BY seq", newest
                    )
                ]
            async with asyncio.timeout(RECOVER):
                while not obs.sse_ids or obs.sse_ids[-1] < newest[0]:
                    await asyncio.sleep(0.05)
            sse_stop.set()
            await resumer
    finally:
        stop.set()
        sse_stop.set()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg_server.start)  # never leave the session's cluster down
        code = await asyncio.to_thread(daemon.stop, 15.0)
    log = daemon.read_log()

    # acknowledged lost = 0
    with psycopg.connect(pg_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT report_id FROM alarms")}
    assert obs.acked, obs.statuses
    assert obs.acked <= stored, sorted(obs.acked - stored)[:10]
    # temporary failures only: 503 while the database was away, never a 500
    assert obs.bodies == [], obs.bodies[:5]
    assert obs.client_errors == [], obs.client_errors[:5]
    assert set(obs.statuses) <= {202, 503}, obs.statuses
    assert obs.statuses[503] > before_crash.get(503, 0), (before_crash, obs.statuses)
    # reads too: 200, or 503 while the database is away
    assert obs.reads[200] > 0 and obs.reads[503] > 0, obs.reads
    assert set(obs.reads) <= {200, 503}, obs.reads
    # /readyz said the store was down during the crash, and is ready again
    down = _down_while(obs, t1, t2)
    assert down and all("store" in body["down"] for body in down), obs.ready[-5:]
    assert obs.ready[-1][1] == 200
    # SSE: the resuming client has every event, once, in order
    assert obs.sse_problems == []
    assert [s for s in obs.sse_ids if s <= newest[0]] == table
    assert len(table) > 10
    # the daemon never restarted, never logged a failed request, exits cleanly
    assert code == 0, log[-2000:]
    assert "request failed" not in log and "Traceback" not in log, log[-3000:]
    assert log.count("daemon started") == 1
    assert log.count("event listener reconnected") >= 2


async def test_idle_store_survives_a_restart_without_failing_a_caller(
    pg_server: PgServer,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    """Writer and readers idle while PostgreSQL restarts: the server closed
    their connections, yet the first write and read afterwards succeed (the
    writer reconnects when BEGIN meets a closed connection; a read is retried
    once on a new one)."""
    if not pg_server.controllable:
        pytest.skip("needs the private test cluster (pg_ctl), not the machine's server")
    store = PgStore(pg_url)
    store.open()

    names = iter(range(1000))

    def insert(conn: sqlite3.Connection) -> int:
        cur = conn.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (f"n{next(names)}",))
        return cur.rowcount

    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM counters").fetchone()[0])

    try:
        assert await store.read(count) == 0
        for mode in ("fast", "immediate"):
            await store.write(lambda c: c.execute("DELETE FROM counters").rowcount)
            if mode == "fast":
                await asyncio.to_thread(pg_server.restart, "fast")
            else:
                await asyncio.to_thread(pg_server.stop, "immediate")
                await asyncio.to_thread(pg_server.start)
            assert await store.write(insert) == 1
            assert await store.read(count) == 1
            assert store.up
        # A write while the database is away fails (503 to a sender) and
        # marks the store down; with nothing more to write, the writer's
        # probe finds the database back and the store up again, and the
        # next write succeeds at once.
        await asyncio.to_thread(pg_server.stop, "immediate")
        with pytest.raises(StorageUnavailable):
            await store.write(insert)
        assert not store.up
        await asyncio.to_thread(pg_server.start)
        async with asyncio.timeout(RECOVER):
            while not store.up:
                await asyncio.sleep(0.05)
        assert await store.write(insert) == 1
        assert await store.read(count) == 2
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg_server.start)
        store.close()
