"""`GET /api/v1/events`: Server-Sent Events of incident changes (SPEC 6.2)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from aiohttp import web

from monitor.http.api import RT
from monitor.http.auth import READ, Principal, principal
from monitor.store import StorageUnavailable
from monitor.views import incident_json

KEEPALIVE = 15.0


# The handlers of open streams. A stream never ends by itself, so without
# this a shutdown would wait the runner's whole shutdown_timeout for them.
class Streams:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()


STREAMS = web.AppKey("sse_streams", Streams)


def setup(app: web.Application) -> None:
    app[STREAMS] = Streams()
    app.on_shutdown.append(_close_streams)


async def _close_streams(app: web.Application) -> None:
    for task in list(app[STREAMS].tasks):
        task.cancel()


def _load(conn: sqlite3.Connection, incident: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM incidents WHERE id = ?", (incident,)
    ).fetchone()
    return row


async def events(request: web.Request) -> web.StreamResponse:
    rt = request.app[RT]
    who: Principal = principal(request, rt.config.current, READ)
    last_raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    sub = rt.bus.subscribe()
    streams = request.app.get(STREAMS)
    me = asyncio.current_task()
    if streams is not None and me is not None:
        streams.tasks.add(me)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        zone = rt.zone

        async def send(seq: int, incident: int) -> None:
            row = await rt.store.read(lambda conn: _load(conn, incident))
            if row is None or not who.sees(row["contract"]):
                return
            data = json.dumps(incident_json(row, zone), ensure_ascii=False)
            await resp.write(f"id: {seq}\nevent: incident\ndata: {data}\n\n".encode())

        sent_upto = 0
        if last_raw is not None:
            try:
                last = int(last_raw)
            except ValueError:
                last = -1

            # PostgreSQL: events above the bus's horizon may still be
            # committing below newer ones; they come live, in order (the
            # subscription above is older than this read).  SQLite: None.
            horizon = rt.bus.horizon
            upto = horizon if horizon is not None else 2**63 - 1

            def backlog(conn: sqlite3.Connection) -> tuple[int | None, list[tuple[int, int]]]:
                oldest = conn.execute("SELECT min(seq) FROM events").fetchone()[0]
                rows = conn.execute(
                    "SELECT seq, incident FROM events WHERE seq > ? AND seq <= ?"
                    " ORDER BY seq LIMIT 10001",
                    (last, upto),
                ).fetchall()
                return oldest, [(r[0], r[1]) for r in rows]

            oldest, rows = await rt.store.read(backlog)
            if last < 0 or len(rows) > 10000 or (oldest is not None and oldest > last + 1):
                await resp.write(b"event: reset\ndata: {}\n\n")
            else:
                for seq, incident in rows:
                    await send(seq, incident)
                    sent_upto = seq
                if horizon is not None:
                    sent_upto = max(sent_upto, horizon)
        else:
            await resp.write(b": connected\n\n")

        while True:
            if sub.overflowed:
                await resp.write(b"event: reset\ndata: {}\n\n")
                return resp
            try:
                async with asyncio.timeout(KEEPALIVE):
                    seq, incident = await sub.queue.get()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if seq <= sent_upto:
                continue
            await send(seq, incident)
    except (ConnectionResetError, StorageUnavailable):
        # The client went away, or the database did (PostgreSQL restarting):
        # the stream ends; an EventSource reconnects with Last-Event-ID.
        return resp
    finally:
        rt.bus.unsubscribe(sub)
        if streams is not None and me is not None:
            streams.tasks.discard(me)
