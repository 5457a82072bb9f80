"""Helpers shared by the test_mqtt_* modules (no tests here): a daemon
config with `[mqtt]`, an agent-side publisher, and polling waits.

Waits poll with generous timeouts and never assert on how long something
took: the machines are shared and slow at times.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.daemon import RunningDaemon, write_config
from tests.support.mosquitto import Mosquitto

TIMEOUT = 30.0
SERIAL = "JPN0012345"  # C-0001, express-5x9
# Friday 10:00 in Tokyo: in service hours for express-5x9.
CLOCK_START = "2026-11-20T10:00:00+09:00"


def mqtt_section(
    url: str,
    *,
    protocol: int = 5,
    client_id: str = "monitor-test",
    share_group: str = "",
    embedded: bool = False,
) -> str:
    lines = [
        "",
        "[mqtt]",
        f'url = "{url}"',
        f'client_id = "{client_id}"',
        'topic_prefix = "express"',
        f"protocol = {protocol}",
    ]
    if share_group:
        lines.append(f'share_group = "{share_group}"')
    if embedded:
        lines.append("embedded_broker = true")
    return "\n".join(lines) + "\n"


def mqtt_config(tmp: Path, url: str, *, clock_start: str | None = CLOCK_START, **kw: Any) -> Path:
    return write_config(tmp, clock_start=clock_start, extra=mqtt_section(url, **kw))


def alarm(report_id: str, serial: str = SERIAL, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "id": report_id,
        "serial": serial,
        "severity": "major",
        "component": "PSU1",
        "code": "PSU-0003",
        "message": "Power supply 1 failure detected",
    }
    body.update(fields)
    return json.dumps(body).encode()


def heartbeat(serial: str = SERIAL, interval: float = 60) -> bytes:
    return json.dumps(
        {"v": 1, "serial": serial, "sent": "2026-11-20T10:00:00+09:00", "interval": interval}
    ).encode()


class Agent:
    """An agent-side MQTT client (paho in its own thread), QoS 1.

    `will` is a (topic, payload) Last Will, retained, QoS 1.
    """

    def __init__(
        self,
        broker: Mosquitto | tuple[str, int],
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        inflight: int = 100,
    ) -> None:
        host, port = (broker.host, broker.port) if isinstance(broker, Mosquitto) else broker
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"agent-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(inflight)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not connected.wait(TIMEOUT):
            raise TimeoutError("agent: no CONNACK")

    def send(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish and wait for the broker's PUBACK (off the loop)."""
        info = self.send(topic, payload, retain)
        await asyncio.to_thread(info.wait_for_publish, TIMEOUT)
        assert info.is_published(), f"no PUBACK for {topic}"

    def crash(self) -> None:
        """Vanish without DISCONNECT: the broker fires the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


async def mqtt_up(d: RunningDaemon, up: bool = True) -> None:
    async def check() -> bool:
        return d.rt.listeners.get("mqtt") is up

    await until(check, f"mqtt listener {'up' if up else 'down'}")


async def query(d: RunningDaemon, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await d.rt.store.read(
        lambda conn: [tuple(row) for row in conn.execute(sql, args).fetchall()]
    )


async def count_alarms(d: RunningDaemon, device: str | None = None) -> int:
    if device is None:
        rows = await query(d, "SELECT count(*) FROM alarms")
    else:
        rows = await query(d, "SELECT count(*) FROM alarms WHERE device = ?", device)
    return int(rows[0][0])


async def wait_alarms(d: RunningDaemon, n: int, device: str | None = None) -> int:
    async def check() -> int:
        got = await count_alarms(d, device)
        assert got <= n, f"more alarms than expected: {got} > {n}"
        return got if got == n else 0

    result: int = await until(check, f"{n} alarms stored")
    return result


async def quarantine_reasons(d: RunningDaemon) -> list[str]:
    rows = await query(d, "SELECT reason FROM quarantine WHERE channel = 'mqtt' ORDER BY seq")
    return [r[0] for r in rows]


def db_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read a daemon's database from outside (a subprocess daemon)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()
