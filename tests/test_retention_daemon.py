"""Retention inside the running daemon, on its simulated clock.

Jumping the clock wakes the retention job like every other time-driven part,
so "800 days later" is one API call; the API then shows what was pruned and
what must never be: open and deferred incidents with their alarms.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor import retention
from monitor.retention import RetentionJob
from tests.support.daemon import RunningDaemon, running, write_config

RETENTION = """
[retention]
alarms = "400d"
raw = "90d"
quarantine = "30d"
quarantine_max_bytes = 1048576
resolved_incidents = "730d"
"""


async def wait_metric(d: RunningDaemon, name: str, at_least: float) -> float:
    """The daemon's job runs on its own; wait (bounded) until it has counted."""
    deadline = time.monotonic() + 15
    while True:
        value = await d.metric(name)
        if value >= at_least or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def wait_gauge(d: RunningDaemon, name: str, expect: float) -> float:
    """A gauge set at the end of a pass: wait (bounded) for the value."""
    deadline = time.monotonic() + 15
    while True:
        value = await d.metric(name)
        if value == expect or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def status(d: RunningDaemon, path: str) -> int:
    async with d.session.get(d.url + path, headers=d.headers("admin")) as resp:
        return resp.status


async def test_jump_800_days_prunes_resolved_and_old_keeps_open_and_deferred(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, extra=RETENTION)  # Fri 2026-11-20 16:30 JST: in hours
    async with running(cfg) as d:
        st, opened = await d.alarm(id="r-open", code="PSU-A")
        assert st == 202, opened
        st, solved = await d.alarm(id="r-solved", code="FAN-B")
        assert st == 202, solved
        fan = next(i for i in (await d.get("/api/v1/incidents"))["items"] if i["code"] == "FAN-B")
        st, body = await d.post(f"/api/v1/incidents/{fan['id']}/resolve", {"by": "t"})
        assert st == 200, body
        await d.set_clock("2026-11-20T18:00:00+09:00")  # after hours
        st, late = await d.alarm(id="r-deferred", code="TMP-C")
        assert st == 202, late
        st, _ = await d.alarm(id="r-unknown", serial="NOPE000001")  # kept, uncovered
        assert st == 202
        st, _ = await d.post("/api/v1/alarms", {"v": 1, "id": "broken"}, role="agent")
        assert st == 400  # quarantined
        incidents = {i["code"]: i for i in (await d.get("/api/v1/incidents"))["items"]}
        assert incidents["TMP-C"]["state"] == "deferred"
        assert incidents["FAN-B"]["state"] == "resolved"
        open_id, resolved_id, deferred_id = (
            incidents["PSU-A"]["id"],
            incidents["FAN-B"]["id"],
            incidents["TMP-C"]["id"],
        )
        # Nothing is old yet: a pass now (and the daemon's own, at start and
        # on each jump) prunes nothing, and counts the quarantined bytes.
        assert await RetentionJob(d.rt).run_once() == {}
        assert await d.metric("monitor_quarantine_bytes") > 0
        assert await d.metric("monitor_retention_pruned_total") == 0

        # Saturday 2029-02-03, 805 days on: still outside hours, so the
        # deferred incident stays deferred (due moves to Monday's window).
        await d.set_clock("2029-02-03T10:00:00+09:00")
        await wait_metric(d, 'monitor_retention_pruned_total{table="incidents"}', 1)

        assert await d.metric('monitor_retention_pruned_total{table="incidents"}') == 1
        assert await d.metric('monitor_retention_pruned_total{table="alarms"}') == 2
        assert await d.metric('monitor_retention_pruned_total{table="quarantine"}') == 1
        assert await status(d, f"/api/v1/incidents/{resolved_id}") == 404
        kept = {i["id"]: i for i in (await d.get("/api/v1/incidents"))["items"]}
        assert set(kept) == {open_id, deferred_id}
        assert kept[deferred_id]["state"] == "deferred"
        assert kept[open_id]["state"] in ("open", "notified")
        for incident in (open_id, deferred_id):  # each keeps its alarm
            assert len((await d.incident(incident))["alarms"]) == 1
        alarms = (await d.get("/api/v1/alarms"))["items"]
        assert sorted(a["id"] for a in alarms) == ["r-deferred", "r-open"]
        assert (await d.get("/api/v1/quarantine"))["items"] == []
        # The kept alarms lost their raw bytes (over 90 days) and nothing else.
        raw = await d.rt.store.read(
            lambda c: c.execute("SELECT count(*) FROM alarms WHERE raw IS NOT NULL").fetchone()[0]
        )
        assert raw == 0
        assert await d.metric('monitor_retention_pruned_total{table="alarms_raw"}') == 2
        assert await wait_gauge(d, "monitor_quarantine_bytes", 0) == 0


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    ident = kind = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((ident, kind, json.loads(line[6:])))
            if len(out) >= n:
                break
    return out


async def test_sse_resume_from_a_pruned_event_gets_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path)
    async with running(cfg) as d:
        for n in range(4):
            st, _ = await d.alarm(id=f"ev-{n}", code=f"E-{n}")
            assert st == 202
        newest = await d.rt.store.read(
            lambda c: c.execute("SELECT max(seq) FROM events").fetchone()[0]
        )
        # Keep only the newest two events, as the job would past 100,000.
        monkeypatch.setattr(retention, "EVENTS_KEEP_ROWS", 2)
        pruned = await RetentionJob(d.rt).run_once()
        assert pruned == {"events": newest - 2}

        url = d.url + "/api/v1/events"
        # Resuming from an event no longer held: reset, reload the list.
        headers = {**d.headers("staff"), "Last-Event-ID": "1"}
        async with d.session.get(url, headers=headers) as resp:
            events = await asyncio.wait_for(read_events(resp, 1), 10)
        assert events[0][1] == "reset"
        # Resuming from one still held: the rest is replayed.
        headers = {**d.headers("staff"), "Last-Event-ID": str(newest - 1)}
        async with d.session.get(url, headers=headers) as resp:
            events = await asyncio.wait_for(read_events(resp, 1), 10)
        assert events[0][:2] == (str(newest), "incident")
