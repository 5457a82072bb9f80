"""Restarts and crashes around the scheduler and the notifier."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.daemon import DaemonProcess, running, webhook_receiver, write_config


async def test_deferral_due_while_stopped_is_raised_once_at_start(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        db = tmp_path / "shared.db"
        friday = write_config(
            tmp_path, hook=hook.url, db=db, name="fri.toml", clock_start="2026-11-20T18:00:00+09:00"
        )
        async with running(friday) as d:
            _, a = await d.alarm(id="r-1")
            inc_id = (await d.get(f"/api/v1/alarms/{a['seq']}"))["incident"]
            assert (await d.incident(inc_id))["state"] == "deferred"
        assert hook.received == []

        # The daemon was down over the due time (Tue 08:30); it starts at 09:10.
        tuesday = write_config(
            tmp_path, hook=hook.url, db=db, name="tue.toml", clock_start="2026-11-24T09:10:00+09:00"
        )
        async with running(tuesday) as d:
            await hook.wait_for(1)
            # the receiver has the POST; its outcome is recorded just after
            async with asyncio.timeout(10):
                while (inc := await d.incident(inc_id))["state"] != "notified":
                    await asyncio.sleep(0.05)
            assert inc["raised_at"].startswith("2026-11-24T09:10")
            await d.settle()
            await asyncio.sleep(0.3)
        # raised once: one notice, to the first contact; not the missed
        # escalation steps as well
        assert [r["body"]["contact"] for r in hook.received] == ["Sato"]

        # and a third start does not raise it again
        async with running(tuesday) as d:
            await d.settle()
            await asyncio.sleep(0.3)
        assert len(hook.received) == 1


async def test_kill_between_send_and_record_reuses_the_key(tmp_path: Path) -> None:
    """SIGKILL the daemon while its webhook POST is in flight: after the
    restart the notice goes out again with the same Idempotency-Key."""
    seen: list[dict[str, Any]] = []
    proc_holder: dict[str, DaemonProcess] = {}

    async def handle(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append({"key": request.headers["Idempotency-Key"], "body": await request.json()})
        if len(seen) == 1:
            # The receiver got it; the daemon dies before it hears back.
            await asyncio.to_thread(proc_holder["p"].kill)
        return aiohttp.web.json_response({})

    from aiohttp import web

    from tests.support.ports import free_port

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        cfg = write_config(
            tmp_path, hook=f"http://127.0.0.1:{port}", clock_start="2026-11-20T10:00:00+09:00"
        )
        p = DaemonProcess(cfg)
        proc_holder["p"] = p
        await asyncio.to_thread(p.start)
        async with aiohttp.ClientSession() as s:
            body = {
                "v": 1,
                "id": "crash-1",
                "serial": "JPN0012345",
                "severity": "major",
                "component": "PSU1",
                "code": "PSU-0003",
                "message": "psu",
            }
            async with s.post(
                p.url + "/api/v1/alarms",
                data=json.dumps(body),
                headers={"Authorization": "Bearer t-agent"},
            ) as resp:
                assert resp.status == 202
        for _ in range(200):
            if p.proc is not None and p.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert p.proc is not None and p.proc.poll() is not None, "daemon was not killed"
        assert len(seen) == 1

        await asyncio.to_thread(p.start)
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 2
        assert seen[1]["key"] == seen[0]["key"]
        assert seen[0]["body"]["attempt"] == 1 and seen[1]["body"]["attempt"] == 2
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                p.url + "/api/v1/incidents/1", headers={"Authorization": "Bearer t-admin"}
            ) as resp,
        ):
            inc = await resp.json()
        notice = inc["notices"][0]
        assert notice["status"] == "delivered"
        assert [a["outcome"] for a in notice["attempts"]] == ["unknown", "delivered"]
        assert await asyncio.to_thread(p.stop) == 0
    finally:
        await runner.cleanup()


async def test_event_stream_and_resume(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        url = d.url + "/api/v1/events?access_token=t-customer"
        events: list[tuple[str, str, dict[str, Any]]] = []

        async def read(resp: aiohttp.ClientResponse, n: int) -> None:
            ident = kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((ident, kind, json.loads(line[6:])))
                    if len(events) >= n:
                        return

        async with d.session.get(url) as resp:
            assert resp.status == 200
            reader = asyncio.create_task(read(resp, 1))
            await asyncio.sleep(0.1)
            await d.alarm(id="sse-1")  # C-0001: not the customer's
            await d.alarm(id="sse-2", serial="JPN0099999", code="D-1")  # C-0002
            await asyncio.wait_for(reader, 10)
        _ident, kind, inc = events[0]
        assert kind == "incident" and inc["contract"] == "C-0002"

        # staff see both; resuming after the first event id replays the rest
        async with d.session.get(
            d.url + "/api/v1/events", headers={**d.headers("staff"), "Last-Event-ID": "0"}
        ) as resp:
            events.clear()
            await asyncio.wait_for(read(resp, 2), 10)
        assert {e[2]["contract"] for e in events} == {"C-0001", "C-0002"}
        # an id from before what is held: reset
        async with d.session.get(
            d.url + "/api/v1/events", headers={**d.headers("staff"), "Last-Event-ID": "x"}
        ) as resp:
            events.clear()
            await asyncio.wait_for(read(resp, 1), 10)
        assert events[0][1] == "reset"
        # customer tokens never see other contracts, even by id
        async with d.session.get(d.url + "/api/v1/incidents/1", headers=d.headers("customer")) as r:
            assert r.status == 404
