"""The MQTT listener against a real mosquitto (SPEC 3.2): stored before
acknowledged, persistent session, topic binding, quarantine, Redfish,
reconnects, storage trouble."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.model import Received
from monitor.store import StorageUnavailable
from tests.support import mosquitto as support
from tests.support.daemon import running
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_mqtt_helpers import (
    SERIAL,
    Agent,
    alarm,
    count_alarms,
    mqtt_config,
    mqtt_up,
    quarantine_reasons,
    query,
    until,
    wait_alarms,
)

mosquitto_factory = support.mosquitto_factory

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

REDFISH = {
    "@odata.type": "#Event.v1_0_2.Event",
    "Id": "1",
    "Name": "Events",
    "Events": [
        {
            "MemberId": "1",
            "EventType": "Alert",
            "EventId": "3316",
            "EventTimestamp": "2026-11-20T10:00:04+09:00",
            "Severity": "Warning",
            "Message": "Fan 3 speed is below the lower threshold.",
            "MessageId": "ExampleOEM.1.0.FanSpeedLow",
            "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
        },
        {
            "MemberId": "2",
            "EventId": "3317",
            "EventTimestamp": "2026-11-20T10:00:05+09:00",
            "MessageSeverity": "Critical",
            "Message": "Power supply PSU2 has failed.",
            "MessageId": "ExampleVendorEvents.2.1.PowerSupplyFailed",
            "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Power/PSU2"},
        },
        {
            "MemberId": "3",
            "EventId": "3318",
            "Message": "no severity at all",
            "MessageId": "X.1.0.Odd",
        },
    ],
}


@pytest.mark.parametrize("protocol", [5, 3])
async def test_alarms_stored_bad_input_quarantined_listener_goes_on(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], protocol: int
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url, protocol=protocol)) as d:
        await mqtt_up(d)
        assert await d.metric('monitor_listener_up{listener="mqtt"}') == 1
        agent = Agent(broker)
        try:
            await agent.publish(f"express/alarm/{SERIAL}", alarm("ok-1"))
            # topic says one serial, the payload another
            await agent.publish("express/alarm/JPN0099999", alarm("mismatch-1"))
            await agent.publish(f"express/alarm/{SERIAL}", b"{not json")
            await agent.publish(f"express/alarm/{SERIAL}", b'{"v": 1, "id": "no-fields"}')
            await agent.publish(f"express/alarm/{SERIAL}", alarm("bad-sev", severity="dire"))
            await agent.publish(f"express/heartbeat/{SERIAL}", b'{"v": 1}')
            await agent.publish(f"express/status/{SERIAL}", b"sleepy")
            # ...and the listener keeps going:
            await agent.publish(f"express/alarm/{SERIAL}", alarm("ok-2"))
            await agent.publish(f"express/alarm/{SERIAL}", alarm("ok-1"))  # a re-send
            await wait_alarms(d, 2)

            async def all_quarantined() -> list[str]:
                reasons = await quarantine_reasons(d)
                return reasons if len(reasons) == 6 else []

            reasons = await until(all_quarantined, "6 quarantined payloads")
            assert sorted(reasons) == sorted(["topic-mismatch"] + ["invalid"] * 5)
            rows = await query(
                d, "SELECT report_id, channel, format, peer FROM alarms ORDER BY seq"
            )
            assert rows == [
                ("ok-1", "mqtt", "json", f"express/alarm/{SERIAL}"),
                ("ok-2", "mqtt", "json", f"express/alarm/{SERIAL}"),
            ]
            quarantined = await d.get("/api/v1/quarantine")
            mismatch = [q for q in quarantined["items"] if q["reason"] == "topic-mismatch"]
            assert base64.b64decode(mismatch[0]["raw"]) == alarm("mismatch-1")
            assert (
                await d.metric(
                    'monitor_alarms_rejected_total{channel="mqtt",reason="topic-mismatch"}'
                )
                == 1
            )
            assert (
                await d.metric('monitor_alarms_received_total{channel="mqtt",format="json"}') == 2
            )

            async def dup_counted() -> bool:
                return await d.metric('monitor_alarms_duplicate_total{kind="exact"}') >= 1

            await until(dup_counted, "the re-send counted as a duplicate")
            # The first alarm made an incident (Friday 10:00, in hours).
            incidents = await d.get("/api/v1/incidents")
            assert [i["code"] for i in incidents["items"]] == ["PSU-0003"]
        finally:
            agent.close()


async def test_published_while_stopped_arrive_after_start(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    cfg = mqtt_config(tmp_path, broker.url)
    async with running(cfg) as d:
        await mqtt_up(d)  # the persistent session now exists at the broker
    agent = Agent(broker)
    try:
        for i in range(50):
            await agent.publish(f"express/alarm/{SERIAL}", alarm(f"while-down-{i}"))
        # Only the broker holds them now; it keeps them across its own
        # graceful restart too (persistence on).
        broker.restart()
        async with running(cfg) as d:
            await wait_alarms(d, 50)
            ids = {r[0] for r in await query(d, "SELECT report_id FROM alarms")}
            assert ids == {f"while-down-{i}" for i in range(50)}
    finally:
        agent.close()


async def test_redfish_events_become_alarms(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url)) as d:
        await mqtt_up(d)
        agent = Agent(broker)
        try:
            payload = json.dumps(REDFISH).encode()
            await agent.publish(f"express/redfish/{SERIAL}", payload)
            await agent.publish(f"express/redfish/{SERIAL}", payload)  # a BMC retry
            await agent.publish(f"express/redfish/{SERIAL}", b"[]")
            await wait_alarms(d, 2)

            async def quarantined() -> list[str]:
                reasons = await quarantine_reasons(d)
                return reasons if len(reasons) == 3 else []

            # the severity-less event (twice) and the non-object payload
            assert await until(quarantined, "3 rejects") == ["invalid"] * 3
            rows = await query(
                d,
                "SELECT report_id, format, severity, component, code"
                " FROM alarms ORDER BY report_id",
            )
            assert rows == [
                ("3316", "redfish", "warning", "Thermal", "FanSpeedLow"),
                ("3317", "redfish", "critical", "PSU2", "PowerSupplyFailed"),
            ]
        finally:
            agent.close()


async def test_broker_restart_reconnects_and_readyz_follows(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url, protocol=3)) as d:
        await mqtt_up(d)
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 200
        broker.stop()
        await mqtt_up(d, False)
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 503
            assert (await resp.json())["down"] == ["mqtt"]
        assert await d.metric('monitor_listener_up{listener="mqtt"}') == 0
        broker.start()
        await mqtt_up(d)
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 200
        agent = Agent(broker)
        try:
            await agent.publish(f"express/alarm/{SERIAL}", alarm("after-restart"))
            await wait_alarms(d, 1)
        finally:
            agent.close()


async def test_storage_trouble_means_no_ack_then_redelivery(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    async with running(mqtt_config(tmp_path, broker.url)) as d:
        await mqtt_up(d)
        real_accept = d.rt.pipeline.accept
        failures = 0

        async def flaky_accept(rec: Received, received_at: Any = None) -> Any:
            nonlocal failures
            if failures < 3:  # the disk is full, for a moment
                failures += 1
                raise StorageUnavailable("disk full")
            return await real_accept(rec, received_at)

        d.rt.pipeline.accept = flaky_accept  # type: ignore[method-assign]
        agent = Agent(broker)
        try:
            for i in range(3):
                await agent.publish(f"express/alarm/{SERIAL}", alarm(f"retry-{i}"))
            # Not acknowledged, so the broker sends them again on the new
            # connection the listener makes after a pause.
            await wait_alarms(d, 3)
            assert failures == 3
            # ...which the broker saw: our client id connected again.
            assert broker.log_text().count(" as monitor-test") >= 2
            rows = await query(d, "SELECT report_id FROM alarms ORDER BY report_id")
            assert rows == [("retry-0",), ("retry-1",), ("retry-2",)]
        finally:
            agent.close()
            d.rt.pipeline.accept = real_accept  # type: ignore[method-assign]


async def test_shared_subscription(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    cfg = mqtt_config(tmp_path, broker.url, share_group="monitors")
    async with running(cfg) as d:
        await mqtt_up(d)
        agent = Agent(broker)
        try:
            for i in range(5):
                await agent.publish(f"express/alarm/{SERIAL}", alarm(f"shared-{i}"))
            await wait_alarms(d, 5)
        finally:
            agent.close()


async def test_stop_finishes_in_flight_and_keeps_session(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    # A burst, then a graceful stop in the middle of it: whatever the daemon
    # did not acknowledge stays with the broker for the next start.
    broker = mosquitto_factory()
    cfg = mqtt_config(tmp_path, broker.url)
    n = 1000
    agent = Agent(broker, inflight=200)
    try:
        async with running(cfg) as d:
            await mqtt_up(d)
            infos = [agent.send(f"express/alarm/{SERIAL}", alarm(f"burst-{i}")) for i in range(n)]

            async def some() -> bool:
                return await count_alarms(d) >= 100

            await until(some, "part of the burst stored")
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 30)
        async with running(cfg) as d:
            await wait_alarms(d, n)
            rows = await query(d, "SELECT count(DISTINCT report_id) FROM alarms")
            assert rows == [(n,)]
    finally:
        agent.close()


def make_tls_material(tmp: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1 and a mosquitto password file."""
    cert, key, passwd = tmp / "cert.pem", tmp / "key.pem", tmp / "passwd"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "monitor", "s3cr@t:1"],
        check=True,
        capture_output=True,
    )
    return cert, key, passwd


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
    reason="openssl or mosquitto_passwd missing",
)
async def test_tls_and_credentials_from_the_url(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, passwd = make_tls_material(tmp_path)
    tls_port = free_port()
    broker = mosquitto_factory(
        extra_config=[
            f"listener {tls_port} 127.0.0.1",
            f"certfile {cert}",
            f"keyfile {key}",
            f"password_file {passwd}",
        ]
    )
    # The daemon trusts the system's CAs; SSL_CERT_FILE points it at ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    good = f"mqtts://monitor:s3cr%40t%3A1@127.0.0.1:{tls_port}"
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    async with running(mqtt_config(tmp_path / "good", good)) as d:
        await mqtt_up(d)
        agent = Agent(broker)  # the plain listener, for the test's publisher
        try:
            await agent.publish(f"express/alarm/{SERIAL}", alarm("over-tls"))
            await wait_alarms(d, 1)
        finally:
            agent.close()
    assert "as monitor-test" in broker.log_text() and "u'monitor'" in broker.log_text()

    bad = f"mqtts://monitor:wrong@127.0.0.1:{tls_port}"
    async with running(mqtt_config(tmp_path / "bad", bad)) as d:

        async def refused() -> bool:
            return "not authorised" in broker.log_text() or "not authorized" in (
                broker.log_text().lower()
            )

        await until(refused, "the broker refusing the wrong password")
        assert d.rt.listeners.get("mqtt") is False
