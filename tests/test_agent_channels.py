"""The agent's channels and delivery: MQTT against a real mosquitto (with a
bare subscriber, no daemon), the SMTP fallback against an aiosmtpd sink, the
dial-up fallback against the modem emulator on a pty, and the publisher's
channel choice with fakes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from monitor_agent.agent import send_once
from monitor_agent.channels import ShouldStop, Sink
from monitor_agent.conditions import Finding
from monitor_agent.publisher import Fallback, Publisher
from monitor_agent.reports import Identity, decode, encode, make_report
from monitor_agent.spool import Spool, Spooled

from monitor.formats.alarm_json import verify_sig
from tests.support import mosquitto as support
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_agent_helpers import (
    FAST_DTE,
    SERIAL,
    MailHandler,
    MqttWatcher,
    PtyModem,
    agent_toml,
    load,
    running_agent,
    smtp_sink,
    until,
)

mosquitto_broker = support.mosquitto_broker
mosquitto_factory = support.mosquitto_factory

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
WHO = Identity(SERIAL, "N8100-2801", "db01", "s3cret")


def reports(*names: str, who: Identity = WHO) -> list[tuple[str, bytes]]:
    out = []
    for name in names:
        finding = Finding(
            f"test:{SERIAL}:{name}",
            "PSU1",
            "PSU-0003",
            "critical",
            f"report {name}",
            datetime.now().astimezone(),
        )
        report = make_report(who, finding)
        out.append((report.id, encode(report)))
    return out


def ids(*names: str) -> list[str]:
    return [f"test:{SERIAL}:{n}" for n in names]


def dead_url() -> str:
    return f"mqtt://127.0.0.1:{free_port()}"


# -- MQTT ------------------------------------------------------------------------------------


@needs_mosquitto
async def test_mqtt_status_heartbeats_and_reports(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    b = mosquitto_broker
    config = load(agent_toml(tmp_path, mqtt_url=b.url, heartbeat="1s"))
    async with MqttWatcher(b.host, b.port) as watcher, running_agent(config) as agent:
        await asyncio.to_thread(agent.spool.add, reports("a", "b", "c", "d", "e"))
        agent.publisher.wake()

        async def arrived() -> bool:
            return len(watcher.alarm_ids()) >= 5

        await until(arrived, "5 alarms")
        assert watcher.alarm_ids() == ids("a", "b", "c", "d", "e")
        first = watcher.on("alarm")[0].json()
        assert (first["serial"], first["severity"], first["model"], first["host"]) == (
            SERIAL,
            "critical",
            "N8100-2801",
            "db01",
        )
        assert first["sig"]
        assert await asyncio.to_thread(agent.spool.count) == 0

        async def beats() -> bool:
            return len(watcher.on("heartbeat")) >= 2

        await until(beats, "2 heartbeats")
        beat = watcher.on("heartbeat")[0].json()
        assert set(beat) == {"v", "serial", "sent", "interval"}
        assert (beat["v"], beat["serial"], beat["interval"]) == (1, SERIAL, 1)
        assert datetime.fromisoformat(beat["sent"]).tzinfo is not None
        assert [s.payload for s in watcher.on("status")] == [b"online"]
    # A clean stop sends DISCONNECT: the will (offline) is not published, and
    # a new subscriber gets the retained `online`.
    async with MqttWatcher(b.host, b.port) as fresh:

        async def status() -> list[tuple[bytes, bool]]:
            return [(s.payload, s.retain) for s in fresh.on("status")]

        assert await until(status, "retained status") == [(b"online", True)]


@needs_mosquitto
async def test_mqtt_broker_down_then_everything_in_order(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    b = mosquitto_broker
    config = load(agent_toml(tmp_path, mqtt_url=b.url))
    async with MqttWatcher(b.host, b.port) as watcher, running_agent(config) as agent:
        assert agent.mqtt is not None
        link = agent.mqtt

        async def up() -> bool:
            return bool(link.up)

        await until(up, "link up")
        await asyncio.to_thread(b.stop)

        async def down() -> bool:
            return not link.up

        await until(down, "link down")
        names = [f"n{i:02d}" for i in range(20)]
        for name in names:  # one at a time, as faults happen
            await asyncio.to_thread(agent.spool.add, reports(name))
            agent.publisher.wake()
        assert await asyncio.to_thread(agent.spool.count) == 20
        await asyncio.to_thread(b.start)

        async def arrived() -> bool:
            return len(set(watcher.alarm_ids())) >= 20

        await until(arrived, "20 alarms after the restart")
        assert list(dict.fromkeys(watcher.alarm_ids())) == ids(*names)
        assert await asyncio.to_thread(agent.spool.count) == 0


# -- SMTP fallback ------------------------------------------------------------------------------


async def test_smtp_fallback_signed_mails_and_a_refusal(tmp_path: Path) -> None:
    refuse = ids("b")[0]
    handler = MailHandler(reply=lambda rid: "550 5.6.0 not a report" if rid == refuse else None)
    async with smtp_sink(handler) as (sink, port):
        config = load(agent_toml(tmp_path, mqtt_url=dead_url(), smtp=f"127.0.0.1:{port}"))
        async with running_agent(config) as agent:
            await asyncio.to_thread(agent.spool.add, reports("a", "b", "c", "d"))
            agent.publisher.wake()

            async def delivered() -> bool:
                return len(sink.mails) >= 3 and agent.spool.count() == 0

            await until(delivered, "3 mails")
            assert sink.ids() == ids("a", "c", "d")
            [rejected] = agent.spool.rejected()
            assert (rejected.id, rejected.channel, rejected.reason) == (
                refuse,
                "smtp",
                "550 5.6.0 not a report",
            )
    mail = sink.mails[0]
    assert (mail.sender, mail.rcpt) == ("agent@db01.example.jp", ["alarms@monitor.example"])
    assert b"Subject: [EXPRESS-REPORT] JPN0012345 critical PSU-0003" in mail.raw
    report = mail.report()
    assert (report.id, report.component, report.model, report.host) == (
        ids("a")[0],
        "PSU1",
        "N8100-2801",
        "db01",
    )
    assert verify_sig(report, "s3cret")  # the signature survives the mail


async def test_smtp_only_after_after(tmp_path: Path) -> None:
    """Before `after` nothing goes by mail; `after` counts from the link's loss
    (here: from the start, as the broker was never reachable)."""
    async with smtp_sink() as (sink, port):
        config = load(
            agent_toml(tmp_path, mqtt_url=dead_url(), smtp=f"127.0.0.1:{port}", smtp_after="2s")
        )
        async with running_agent(config) as agent:
            await asyncio.to_thread(agent.spool.add, reports("a"))
            agent.publisher.wake()
            assert agent.mqtt is not None
            # `after` has not passed yet while the link has been down this briefly.
            if agent.mqtt.down_for() < 1.5:
                assert sink.mails == []

            async def mailed() -> bool:
                return len(sink.mails) == 1

            await until(mailed, "the mail after `after`")
            assert agent.mqtt.down_for() >= 2.0


async def test_send_via_smtp(tmp_path: Path) -> None:
    async with smtp_sink() as (sink, port):
        config = load(
            agent_toml(tmp_path, mqtt_url=dead_url(), smtp=f"127.0.0.1:{port}", smtp_after="1h")
        )
        [(rid, body)] = reports("sent")
        result = await send_once(config, decode(body), via="smtp", timeout=30)
        assert (result.outcome, result.channel) == ("delivered", "smtp")
        assert sink.ids() == [rid]


# -- dial-up fallback -----------------------------------------------------------------------------


async def test_serial_fallback_when_smtp_fails_too(tmp_path: Path) -> None:
    bad = ids("b")[0]

    def verdict(n: int, alarm: dict[str, object]) -> tuple[str, str | None]:
        if n == 0:
            return ("nak", "crc")  # line noise: the DTE sends it again
        if alarm["id"] == bad:
            return ("nak", "invalid")
        return ("ack", None)

    modem = PtyModem(verdict)
    try:
        config = load(
            agent_toml(
                tmp_path,
                mqtt_url=dead_url(),
                smtp=f"127.0.0.1:{free_port()}",  # nothing listens
                serial_port=modem.path,
            )
        )
        async with running_agent(config, serial_options=FAST_DTE) as agent:
            await asyncio.to_thread(agent.spool.add, reports("a", "b", "c"))
            agent.publisher.wake()

            async def emptied() -> bool:
                return bool(await asyncio.to_thread(agent.spool.count) == 0)

            await until(emptied, "the spool emptied by dial-up")
            [rejected] = agent.spool.rejected()
            assert (rejected.id, rejected.channel, rejected.reason) == (
                bad,
                "serial",
                "NAK invalid",
            )
        assert modem.acked == ids("a", "c")
        assert [f["id"] for f in modem.frames] == ids("a", "a", "b", "c")
        assert all(verify_sig_dict(f) for f in modem.frames)
    finally:
        modem.close()


def verify_sig_dict(alarm: dict[str, object]) -> bool:
    from monitor.formats.alarm_json import decode_object

    report = decode_object(alarm)
    return not isinstance(report, str) and verify_sig(report, "s3cret")  # type: ignore[arg-type]


@needs_mosquitto
async def test_back_on_mqtt_when_it_returns(mosquitto_broker: Mosquitto, tmp_path: Path) -> None:
    b = mosquitto_broker
    await asyncio.to_thread(b.stop)  # the port stays reserved for the restart
    async with smtp_sink() as (sink, port):
        config = load(agent_toml(tmp_path, mqtt_url=b.url, smtp=f"127.0.0.1:{port}"))
        async with running_agent(config) as agent:
            await asyncio.to_thread(agent.spool.add, reports("by-mail"))
            agent.publisher.wake()

            async def mailed() -> bool:
                return sink.ids() == ids("by-mail")

            await until(mailed, "the mail")
            await asyncio.to_thread(b.start)
            async with MqttWatcher(b.host, b.port) as watcher:
                assert agent.mqtt is not None
                link = agent.mqtt

                async def up() -> bool:
                    return bool(link.up)

                await until(up, "the link back up")
                await asyncio.to_thread(agent.spool.add, reports("by-mqtt"))
                agent.publisher.wake()

                async def published() -> bool:
                    return watcher.alarm_ids() == ids("by-mqtt")

                await until(published, "the report over MQTT")
            assert sink.ids() == ids("by-mail")


# -- the publisher's choice, with fakes -----------------------------------------------------------


@dataclass
class FakeLink:
    up: bool = False
    down: float = 0.0
    accept: bool = True
    published: list[bytes] = field(default_factory=list)

    def down_for(self) -> float:
        return 0.0 if self.up else self.down

    async def publish(self, payload: bytes) -> bool:
        if not self.accept:
            self.up = False
            return False
        self.published.append(payload)
        return True


@dataclass
class FakeChannel:
    ok: bool = True
    batches: list[list[str]] = field(default_factory=list)

    async def send(self, batch: list[Spooled], sink: Sink, stop: ShouldStop) -> bool:
        self.batches.append([i.id for i in batch])
        for item in batch:
            if not self.ok:
                sink.failed(item.seq, "fake", "down")
                return False
            sink.taken(item.seq, "fake")
        return True


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(str(tmp_path / "spool.db"))
    s.add(reports("a", "b"))
    return s


def make(
    spool: Spool,
    link: FakeLink | None,
    smtp: FakeChannel | None,
    serial: FakeChannel | None,
    clock: Callable[[], float] = lambda: 1000.0,
) -> Publisher:
    return Publisher(
        spool,
        link,  # type: ignore[arg-type, unused-ignore]
        Fallback("smtp", smtp, timedelta(seconds=300)) if smtp else None,
        Fallback("serial", serial, timedelta(seconds=900), first_retry=60) if serial else None,
        monotonic=clock,
    )


async def test_publisher_prefers_mqtt(spool: Spool) -> None:
    link, smtp = FakeLink(up=True), FakeChannel()
    pub = make(spool, link, smtp, None)
    assert await pub.deliver(spool.pending()) is None
    assert len(link.published) == 2 and smtp.batches == [] and spool.count() == 0


async def test_publisher_waits_for_after(spool: Spool) -> None:
    link, smtp, serial = FakeLink(down=100.0), FakeChannel(), FakeChannel()
    pub = make(spool, link, smtp, serial)
    assert await pub.deliver(spool.pending()) == pytest.approx(200.0)
    assert smtp.batches == [] and serial.batches == []
    link.down = 300.0
    assert await pub.deliver(spool.pending()) is None
    assert smtp.batches == [ids("a", "b")] and serial.batches == []


async def test_publisher_serial_only_after_smtp_failed(spool: Spool) -> None:
    now = [1000.0]
    link, smtp, serial = FakeLink(down=1000.0), FakeChannel(ok=False), FakeChannel()
    pub = make(spool, link, smtp, serial, clock=lambda: now[0])
    # SMTP fails; serial is due (down 1000 s > 900 s) and SMTP is failing: dial.
    assert await pub.deliver(spool.pending()) is None
    assert smtp.batches == [ids("a", "b")] and serial.batches == [ids("a", "b")]
    assert spool.count() == 0
    # Not before `[serial] after`, even with SMTP failing.
    spool.add(reports("c"))
    link.down = 600.0
    now[0] += 20.0
    wait = await pub.deliver(spool.pending())
    assert wait is not None and wait > 0 and serial.batches == [ids("a", "b")]


async def test_publisher_mqtt_failure_stops_the_batch(spool: Spool) -> None:
    link = FakeLink(up=True, accept=False)
    pub = make(spool, link, None, None)
    assert await pub.deliver(spool.pending()) == 1.0
    [a, b] = spool.pending()
    assert (a.tries, b.tries) == (1, 0)
    # No fallbacks at all: wait for the link (woken by it), not a busy loop.
    assert await pub.deliver(spool.pending()) == 3600.0
    assert make(spool, None, None, None)._mqtt_down_for() == math.inf
