"""Silent agents end to end (SPEC 3.2): heartbeats on the simulated clock,
Last Wills, retained status replays, and deadlines that pause while the
daemon's own broker link is down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import mosquitto as support
from tests.support.daemon import RunningDaemon, running
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.test_mqtt_helpers import (
    SERIAL,
    Agent,
    heartbeat,
    mqtt_config,
    mqtt_up,
    query,
    until,
)

mosquitto_factory = support.mosquitto_factory

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


async def agent_alarms(d: RunningDaemon, serial: str = SERIAL) -> list[tuple[Any, ...]]:
    return await query(
        d,
        "SELECT report_id, severity, component, code, format, channel FROM alarms"
        " WHERE device = ? AND code = 'AGENT-SILENT' ORDER BY seq",
        serial,
    )


async def wait_agent_alarms(
    d: RunningDaemon, n: int, serial: str = SERIAL
) -> list[tuple[Any, ...]]:
    async def check() -> list[tuple[Any, ...]]:
        rows = await agent_alarms(d, serial)
        assert len(rows) <= n, rows
        return rows if len(rows) == n else []

    rows: list[tuple[Any, ...]] = await until(check, f"{n} AGENT-SILENT alarms for {serial}")
    return rows


async def advance(d: RunningDaemon, seconds: float) -> None:
    status, body = await d.post("/api/v1/clock", {"advance": seconds})
    assert status == 200, body


async def heartbeat_stored(d: RunningDaemon, serial: str = SERIAL) -> float:
    async def check() -> float:
        rows = await query(d, "SELECT last_seen FROM heartbeats WHERE serial = ?", serial)
        return float(rows[0][0]) if rows and rows[0][0] is not None else 0.0

    result: float = await until(check, f"heartbeat of {serial} stored")
    return result


async def test_heartbeat_timeout_then_clear(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url)) as d:
        await mqtt_up(d)
        agent = Agent(broker)
        try:
            await agent.publish(f"express/heartbeat/{SERIAL}", heartbeat(interval=60))
            await heartbeat_stored(d)
            await advance(d, 120)  # two intervals: not yet
            await asyncio.sleep(0.2)
            assert await agent_alarms(d) == []
            await advance(d, 61)  # past three
            [silent] = await wait_agent_alarms(d, 1)
            assert silent[0].startswith(f"agent-silent:{SERIAL}:")
            assert silent[1:] == ("major", "agent", "AGENT-SILENT", "heartbeat", "mqtt")
            assert await d.metric("monitor_agents_silent") == 1
            # Through the pipeline: an incident in service hours, like any alarm.
            incidents = (await d.get("/api/v1/incidents"))["items"]
            assert [(i["code"], i["component"], i["severity"]) for i in incidents] == [
                ("AGENT-SILENT", "agent", "major")
            ]

            await agent.publish(f"express/heartbeat/{SERIAL}", heartbeat(interval=60))
            rows = await wait_agent_alarms(d, 2)
            assert rows[1][0].startswith(f"agent-back:{SERIAL}:")
            assert rows[1][1] == "clear"
            assert await d.metric("monitor_agents_silent") == 0
            incident = await d.incident(incidents[0]["id"])
            assert incident["recovered_at"] is not None
        finally:
            agent.close()


async def test_last_will_offline_then_online_and_replays_raise_nothing(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    serial = "JPN0099999"
    status = f"express/status/{serial}"
    cfg = mqtt_config(tmp_path, broker.url)
    async with running(cfg) as d:
        await mqtt_up(d)
        agent = Agent(broker, will=(status, b"offline"))
        await agent.publish(status, b"online", retain=True)

        async def online_stored() -> bool:
            rows = await query(d, "SELECT status FROM heartbeats WHERE serial = ?", serial)
            return rows == [("online",)]

        await until(online_stored, "status online stored")
        agent.crash()  # no DISCONNECT: the broker publishes the retained will
        [silent] = await wait_agent_alarms(d, 1, serial)
        assert silent[0].startswith(f"agent-silent:{serial}:")
        assert (silent[1], silent[4]) == ("major", "status")
        assert await d.metric("monitor_agents_silent") == 1

    # A restart resubscribes: the broker replays the retained `offline`,
    # which is what is stored already, so nothing new is raised.
    async with running(cfg) as d:
        await mqtt_up(d)
        await asyncio.sleep(0.3)
        assert len(await agent_alarms(d, serial)) == 1
        assert await d.metric("monitor_agents_silent") == 1

        again = Agent(broker, will=(status, b"offline"))
        try:
            await again.publish(status, b"online", retain=True)
            rows = await wait_agent_alarms(d, 2, serial)
            assert rows[1][0].startswith(f"agent-back:{serial}:") and rows[1][1] == "clear"
            assert await d.metric("monitor_agents_silent") == 0
        finally:
            again.close()
            # A clean DISCONNECT: no will; the retained `online` stays.


async def test_deadlines_pause_while_our_broker_link_is_down(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url)) as d:
        await mqtt_up(d)
        agent = Agent(broker)
        await agent.publish(f"express/heartbeat/{SERIAL}", heartbeat(interval=60))
        agent.close()
        await heartbeat_stored(d)

        broker.stop()  # graceful: the daemon's session survives
        await mqtt_up(d, False)
        await advance(d, 3600)  # an hour without our link: nobody is to blame
        await asyncio.sleep(0.3)
        assert await agent_alarms(d) == []

        broker.start()
        await mqtt_up(d)
        await advance(d, 150)  # a fresh allowance of three intervals from now
        await asyncio.sleep(0.3)
        assert await agent_alarms(d) == []
        await advance(d, 40)
        [silent] = await wait_agent_alarms(d, 1)
        assert silent[1] == "major"


async def test_owed_announcement_is_sent_after_a_crash(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    # The tracker stored "went silent" but died before the alarm was stored:
    # the outbox row is sent at the next start, once.
    broker = mosquitto_factory()
    cfg = mqtt_config(tmp_path, broker.url)
    async with running(cfg) as d:
        await mqtt_up(d)

        def owe(conn: Any) -> None:
            conn.execute(
                "INSERT INTO heartbeats (serial, last_seen, interval, status,"
                " silent_since) VALUES (?, 1.0e9, 60, 'online', 1.0e9)",
                (SERIAL,),
            )
            conn.execute(
                "INSERT INTO agent_outbox (serial, kind, at, format, message,"
                " received) VALUES (?, 'silent', 1.0e9, 'heartbeat', 'x', 1.0e9)",
                (SERIAL,),
            )
            # ...and the same row twice, as after a crash between the
            # pipeline's commit and the outbox delete.
            conn.execute(
                "INSERT INTO agent_outbox (serial, kind, at, format, message,"
                " received) VALUES (?, 'silent', 1.0e9, 'heartbeat', 'x', 1.0e9)",
                (SERIAL,),
            )

        await d.rt.store.write(owe)
    async with running(cfg) as d:
        [silent] = await wait_agent_alarms(d, 1)
        assert silent[0] == f"agent-silent:{SERIAL}:2001-09-09T01:46:40.000+00:00"

        async def outbox_empty() -> bool:
            return await query(d, "SELECT count(*) FROM agent_outbox") == [(0,)]

        await until(outbox_empty, "outbox drained")
        assert await d.metric("monitor_agents_silent") == 1
