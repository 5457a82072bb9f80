"""Sans-I/O parts of the MQTT listener: topics, payloads, URL, backoff, the
read buffer; and the embedded broker (in-process amqtt) end to end."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from monitor.formats.alarm_json import Invalid
from monitor.listeners.backoff import Backoff
from monitor.listeners.mqtt_client import (
    BufferedSocket,
    ConnectFailed,
    Endpoint,
    MqttConnection,
    parse_url,
)
from monitor.listeners.mqtt_payloads import (
    Heartbeat,
    Route,
    decode_heartbeat,
    decode_status,
    route,
    subscriptions,
    topic_filters,
)
from tests.support.daemon import running
from tests.support.ports import free_port, port_is_open
from tests.test_mqtt_helpers import SERIAL, Agent, alarm, mqtt_config, mqtt_up, wait_alarms


def test_topic_filters_plain_and_shared() -> None:
    assert topic_filters("express") == [
        "express/alarm/+",
        "express/heartbeat/+",
        "express/status/+",
        "express/redfish/+",
    ]
    assert topic_filters("site/a", "g1") == [
        "$share/g1/site/a/alarm/+",
        "$share/g1/site/a/heartbeat/+",
        # Never shared: retained statuses are not sent on shared subscriptions.
        "site/a/status/+",
        "$share/g1/site/a/redfish/+",
    ]


def test_subscriptions_qos() -> None:
    assert subscriptions("express") == [
        ("express/alarm/+", 1),
        ("express/heartbeat/+", 1),
        ("express/status/+", 1),
        ("express/redfish/+", 1),
    ]
    # In a share group every instance gets every status; QoS 0 so that none
    # is queued for an absent instance (it gets the retained one on return).
    assert subscriptions("express", "g1") == [
        ("$share/g1/express/alarm/+", 1),
        ("$share/g1/express/heartbeat/+", 1),
        ("express/status/+", 0),
        ("$share/g1/express/redfish/+", 1),
    ]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("express/alarm/JPN1", Route("alarm", "JPN1")),
        ("express/heartbeat/JPN1", Route("heartbeat", "JPN1")),
        ("express/status/JPN1", Route("status", "JPN1")),
        ("express/redfish/JPN1", Route("redfish", "JPN1")),
        ("express/alarm/", None),
        ("express/alarm", None),
        ("express/alarm/a/b", None),
        ("express/other/JPN1", None),
        ("expressx/alarm/JPN1", None),
        ("other/alarm/JPN1", None),
        ("express/alarm/" + "x" * 65, None),
        ("", None),
    ],
)
def test_route(topic: str, expected: Route | None) -> None:
    assert route(topic, "express") == expected


def test_heartbeat_payloads() -> None:
    ok = b'{"v":1,"serial":"JPN1","sent":"2026-11-20T10:00:00+09:00","interval":60,"x":1}'
    assert decode_heartbeat(ok) == Heartbeat("JPN1", 60.0, "2026-11-20T10:00:00+09:00")
    assert decode_heartbeat(b'{"v":1,"serial":"JPN1","interval":0.5}') == Heartbeat("JPN1", 0.5, "")
    for bad in (
        b'{"v":1,"serial":"JPN1"}',
        b'{"v":2,"serial":"JPN1","interval":60}',
        b'{"v":1,"serial":"","interval":60}',
        b'{"v":1,"serial":"J","interval":0}',
        b'{"v":1,"serial":"J","interval":-5}',
        b'{"v":1,"serial":"J","interval":1e9}',
        b'{"v":1,"serial":"J","interval":"60"}',
        b"\xff\xfe",
        b"[]",
        b"",
    ):
        result = decode_heartbeat(bad)
        assert isinstance(result, Invalid) and result.reason == "invalid", bad


def test_status_payloads() -> None:
    assert decode_status(b"online") is True
    assert decode_status(b" OFFLINE\n") is False
    assert decode_status(b"") is None  # a retained status being deleted
    for bad in (b"on", b'"online"', b"\xff"):
        assert isinstance(decode_status(bad), Invalid)


def test_parse_url() -> None:
    assert parse_url("mqtt://127.0.0.1:11883") == Endpoint("127.0.0.1", 11883, False)
    assert parse_url("mqtts://broker.example") == Endpoint("broker.example", 8883, True)
    ep = parse_url("mqtts://monitor-1:p%40ss%3Aw@broker.example:8884")
    assert ep == Endpoint("broker.example", 8884, True, "monitor-1", "p@ss:w")
    assert str(ep) == "mqtts://monitor-1@broker.example:8884"  # no password in logs
    assert parse_url("mqtt://[::1]:1883").host == "::1"
    assert str(parse_url("mqtt://[::1]")) == "mqtt://[::1]:1883"


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(first=0.5, cap=30.0, rng=random.Random(7))
    delays = [b.next() for _ in range(12)]
    bases = [min(30.0, 0.5 * 2**i) for i in range(12)]
    assert all(base / 2 <= d <= base for d, base in zip(delays, bases, strict=True))
    assert len({round(d / base, 6) for d, base in zip(delays, bases, strict=True)}) > 1
    b.reset()
    assert b.next() <= 0.5


def test_buffered_socket_serves_small_reads_from_one_recv() -> None:
    a, b = socket.socketpair()
    try:
        a.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        buf = BufferedSocket(b)
        assert buf.recv(1) == b"\x30"
        assert buf.pending() == 10  # the rest came with the first recv
        assert buf.recv(1) == b"\x05"
        assert buf.recv(5) == b"hello"
        assert buf.recv(1) == b"\x40"
        assert buf.recv(8) == b"\x02\x00\x01"  # a short read, like a socket's
        assert buf.pending() == 0
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            buf.recv(1)
        a.sendall(b"xy")
        assert buf.recv(5) == b"xy"  # fits: returned directly
    finally:
        a.close()
        b.close()


async def test_embedded_broker(tmp_path: Path) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    cfg = mqtt_config(tmp_path, url, protocol=3, embedded=True)
    async with running(cfg) as d:
        await mqtt_up(d)
        # The broker runs on this very loop: connect from a thread.
        agent = await asyncio.to_thread(Agent, ("127.0.0.1", port))
        try:
            await agent.publish(f"express/alarm/{SERIAL}", alarm("embedded-1"))
            await wait_alarms(d, 1)
        finally:
            await asyncio.to_thread(agent.close)
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 200
    assert not port_is_open("127.0.0.1", port)  # stopped with the daemon


class SilentBroker:
    """Accepts TCP connections and never says a word (a hung broker)."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> SilentBroker:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def connection(port: int, **kw: Any) -> MqttConnection:
    return MqttConnection(
        Endpoint("127.0.0.1", port, False),
        client_id="unit-test",
        protocol=5,
        on_message=lambda conn, msg: None,
        **kw,
    )


async def test_connect_without_connack_times_out() -> None:
    async with SilentBroker() as broker:
        conn = connection(broker.port, connect_timeout=0.5)
        with pytest.raises(ConnectFailed, match="no CONNACK"):
            await conn.connect()
        assert conn.lost.is_set()


async def test_connect_attempt_can_be_aborted() -> None:
    # stop() during a connect to a hung broker must not wait out the timeout.
    async with SilentBroker() as broker:
        conn = connection(broker.port, connect_timeout=60)
        attempt = asyncio.create_task(conn.connect())
        await asyncio.sleep(0.2)
        conn.abort()
        async with asyncio.timeout(10):  # far below the 60 s connect timeout
            with pytest.raises(ConnectFailed):
                await attempt


async def test_connect_refused_is_a_connect_failure() -> None:
    conn = connection(free_port())
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await conn.connect()
