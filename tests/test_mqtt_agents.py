"""Silent agents end to end (SPEC 3.2): heartbeats on the simulated clock,
Last Wills, retained status replays, and deadlines that pause while the
daemon's own broker link is down."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import mosquitto as support
from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.test_mqtt_helpers import (
    CLOCK_START,
    SERIAL,
    TIMEOUT,
    Agent,
    heartbeat,
    mqtt_config,
    mqtt_section,
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


class ReconnectingAgent:
    """An agent as monitor-agent behaves: a retained Last Will `offline`,
    and a retained `online` published on every (re)connect; paho reconnects
    by itself after the broker went away."""

    def __init__(self, broker: Mosquitto, serial: str) -> None:
        self.topic = f"express/status/{serial}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"agent-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.will_set(self.topic, b"offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._lock = threading.Lock()
        self._connects = 0
        self.client.on_connect = self._on_connect
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.publish(self.topic, b"online", qos=1, retain=True)
        with self._lock:
            self._connects += 1

    @property
    def connects(self) -> int:
        with self._lock:
            return self._connects

    def close(self) -> None:
        self.client.disconnect()  # clean: no will
        self.client.loop_stop()


@pytest.mark.parametrize("grace", ["0s", "30s"])
async def test_broker_restart_fires_wills_grace_keeps_them_quiet(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], grace: str
) -> None:
    # `systemctl restart mosquitto`: the broker publishes every connected
    # agent's retained Last Will `offline` on its way out (queued for the
    # daemon's session, retained), the agents reconnect and publish `online`.
    # Without a grace that is an AGENT-SILENT and a clear per agent (the
    # control: it shows the wills do reach the daemon); with
    # `offline_grace = "30s"` nothing at all.
    broker = mosquitto_factory()
    serial = "JPN0099999"
    section = mqtt_section(broker.url) + f'offline_grace = "{grace}"\n'
    cfg = write_config(tmp_path, clock_start=CLOCK_START, extra=section)
    async with running(cfg) as d:
        await mqtt_up(d)
        agent = ReconnectingAgent(broker, serial)
        try:

            async def status_is(word: str) -> bool:
                rows = await query(
                    d, "SELECT status, offline_since FROM heartbeats WHERE serial = ?", serial
                )
                return rows == [(word, None)]

            await until(lambda: status_is("online"), "status online stored")

            await asyncio.to_thread(broker.restart)  # graceful: SIGTERM, then start
            await mqtt_up(d)

            async def reconnected() -> bool:
                return agent.connects >= 2

            await until(reconnected, "the agent reconnected", timeout=TIMEOUT)
            # A marker published after the agent's `online`: once it is
            # stored, what the session had queued before it has arrived too.
            marker = Agent(broker)
            try:
                await marker.publish(f"express/heartbeat/{SERIAL}", heartbeat(interval=600))
            finally:
                marker.close()
            await heartbeat_stored(d)

            if grace == "0s":
                rows = await wait_agent_alarms(d, 2, serial)
                assert rows[0][0].startswith(f"agent-silent:{serial}:") and rows[0][4] == "status"
                assert rows[1][0].startswith(f"agent-back:{serial}:") and rows[1][1] == "clear"
                return
            await until(lambda: status_is("online"), "status online again, nothing pending")
            await advance(d, 120)  # well past the grace
            await asyncio.sleep(0.5)
            assert await agent_alarms(d, serial) == []
            assert await d.metric("monitor_agents_silent") == 0
            assert await status_is("online")
        finally:
            agent.close()
