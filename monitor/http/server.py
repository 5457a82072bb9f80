"""The one HTTP listener: API, SSE, dashboard, /metrics and health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.http import api, sse
from monitor.runtime import Runtime
from monitor.store import StorageUnavailable
from monitor.views import state_counts

log = structlog.get_logger("monitor.http")

STATIC = Path(__file__).parent / "static"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    down = request.app[api.RT].down()
    if down:
        return web.json_response({"down": down}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[api.RT]
    # Gauges that are facts of the store are read at scrape time: always
    # right, even after a restart or another instance's work.
    try:
        counts = await rt.store.read(state_counts)
        for state in ("deferred", "open", "notified", "acknowledged", "resolved"):
            rt.metrics.incidents.labels(state=state).set(counts.get(state, 0))
        silent = await rt.store.read(
            lambda c: c.execute(
                "SELECT count(*) FROM heartbeats WHERE silent_since IS NOT NULL"
            ).fetchone()[0]
        )
        rt.metrics.agents_silent.set(silent)
        # The deferred queue's head against the daemon clock: an alert fires
        # when it stays in the past (deferred incidents not raised at their
        # window start).  Index incidents_state covers the lookup.
        next_due = await rt.store.read(
            lambda c: c.execute(
                "SELECT min(due_at) FROM incidents WHERE state = 'deferred'"
            ).fetchone()[0]
        )
        rt.metrics.deferred_next_due.set(next_due or 0)
    except Exception as exc:  # a scrape must still answer while the store is sick
        log.warning("metrics: store read failed", error=str(exc))
    rt.metrics.store_up.set(1 if rt.store.up else 0)
    rt.metrics.sync_store_commits(rt.store.stats[0])
    fanout = getattr(rt.store, "fanout", None)  # PostgreSQL's event feed
    if fanout is not None:
        rt.metrics.sync_event_feed({"capped": fanout.capped, "late": fanout.late})
    rt.metrics.clock_time.set(rt.clock.now().timestamp())
    body = generate_latest(rt.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """No traceback ever reaches a client: unexpected errors become a 500 JSON."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except StorageUnavailable as exc:
        # A read while the database is away (PostgreSQL restarting): a
        # temporary failure the client may retry, not a server bug.
        log.warning("read refused: storage unavailable", path=request.path, error=str(exc))
        return web.json_response({"error": "storage unavailable"}, status=503)
    except Exception:
        log.exception("request failed", path=request.path, method=request.method)
        return web.json_response({"error": "internal error"}, status=500)


def make_app(rt: Runtime) -> web.Application:
    app = web.Application(client_max_size=api.MAX_BODY, middlewares=[errors])
    app[api.RT] = rt
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/events", sse.events)
    sse.setup(app)
    api.add_routes(app)
    app.router.add_get("/", index)
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC)
    return app
