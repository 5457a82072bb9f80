"""Fuzzing through the real listeners: mutated input on every channel at once.

The parsers are fuzzed directly elsewhere (test_fuzz_parsers.py,
test_formats_fuzz.py, test_modem_fuzz.py).  This drives the bytes paths of
the shells around them, with the daemon running in-process: the SMTP
handler (DATA of mutated fixture mails), HTTP push (alarms and Redfish),
MQTT (mutated topics and payloads through mosquitto) and a serial line
(mutated frames and line noise on a pty).  The mutations are seeded, so a
failure can be replayed (FUZZ_SEED, FUZZ_ROUNDS to scale).

What must hold: no answer is a 5xx of the daemon's own making (HTTP 500,
SMTP 451 "internal error"), every refusal carries a documented reason
(quarantine rows and their metric labels), no `parser-error` or
`internal-error` was needed, and afterwards every channel still stores a
clean report.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import smtplib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.dte import DialupClient, DteOptions
from monitor.formats.mail import REASONS
from monitor.frames import NAK_REASONS, encode_frame
from tests.support import mosquitto as support
from tests.support.daemon import TOKENS, RunningDaemon, running
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_chaos_helpers import (
    ACCEPT,
    DEVICES,
    NUMBER,
    SECRET,
    SIGNED,
    MqttSender,
    alarm_json,
    channels_config,
    express_mail,
    hook_server,
    report,
)
from tests.test_serial_pty import PtyLine, ptys

__all__ = ["ptys"]

mosquitto_factory = support.mosquitto_factory
pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

SEED = int(os.environ.get("FUZZ_SEED", "20261122"))
ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "250"))
MAILS = sorted((Path(__file__).resolve().parent / "fixtures" / "mail").glob("*.eml"))
MQTT_REASONS = {"unknown-topic", "invalid", "topic-mismatch", "bad-signature", "internal-error"}
# What may be quarantined at all, by any channel; parser-error and
# internal-error are documented too, but would mean a bug here.
KNOWN = set(REASONS) | MQTT_REASONS | set(NAK_REASONS) | {
    "unknown-incident", "not-a-contact", "incident-resolved", "too-long", "crc", "truncated",
    "overrun",
}  # fmt: skip
BUGS = {"parser-error", "internal-error"}

TOKENS_IN = [b"\x00", b"\xff", b"\r\n", b"\n", b"\r\n.\r\n", b"=?utf-8?b?", b"\x1b$B", b'"',
             b"{", b"}", b"[", b"]", b":", b",", b"\\u0000", b"\\ud800", b"null", b"1e999",
             b"-", b"Subject: ", b"[INC-1]", b"Content-Type: application/json\r\n",
             b"\x02", b"\x03", b"\x04", b"+++", b"AT", b"\x15"]  # fmt: skip


def mutate(rng: random.Random, data: bytes, rounds: int = 4) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        at = rng.randint(0, max(0, len(out) - 1))
        op = rng.randrange(7)
        if op == 0 and out:
            out[at] = rng.randrange(256)
        elif op == 1:
            del out[at : at + rng.randint(1, 40)]
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 24))
        elif op == 3:
            out[at:at] = out[at : at + rng.randint(1, 80)]
        elif op == 4:
            del out[at:]
        else:
            out[at:at] = rng.choice(TOKENS_IN)
    return bytes(out)


def seeds_json(rng: random.Random, channel: str, i: int) -> bytes:
    if rng.random() < 0.2:
        r = report(f"fz-sig-{i}", channel, serial=SIGNED, secret=SECRET)
        if rng.random() < 0.5:
            r = report(f"fz-sig-{i}", channel, serial=SIGNED)  # unsigned: refused
        return alarm_json(r)
    return alarm_json(report(f"fz-{channel}-{i}", channel, component=f"C{i % 3}"))


REDFISH = json.dumps(
    {
        "Events": [
            {
                "EventId": "1",
                "MessageId": "Base.1.0.PowerSupplyFailed",
                "MessageSeverity": "Critical",
                "Message": "PSU failed",
                "EventTimestamp": "2026-11-20T10:00:00+09:00",
                "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Power/1"},
            },
            {"MessageId": "x", "Severity": "OK"},
        ]
    }
).encode()


# -- channel drivers (blocking; run in threads) ----------------------------------------


def smtp_fuzz(port: int, rng: random.Random, n: int) -> Counter[str]:
    samples = [p.read_bytes() for p in MAILS]
    codes: Counter[str] = Counter()
    s: smtplib.SMTP | None = None
    for i in range(n):
        if rng.random() < 0.3:
            raw = express_mail(report(f"fz-smtp-{i}", "smtp"))
        else:
            raw = rng.choice(samples)
        raw = mutate(rng, raw, 6)
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", port, timeout=30)
                s.ehlo("fuzz.example")
            code, _ = s.mail("agent@rely-smtp.example.jp")
            if code == 250:
                code, _ = s.rcpt(ACCEPT)
            if code == 250:
                code, text = s.data(raw)
                assert not (code == 451 and b"Internal" in text), (i, text)
            else:
                s.rset()
        except smtplib.SMTPServerDisconnected:
            code = -1
            s = None
        except smtplib.SMTPDataError as exc:
            code = exc.smtp_code
            s = None
        codes[str(code)] += 1
    if s is not None:
        s.quit()
    return codes


def serial_fuzz(line: PtyLine, rng: random.Random, n: int) -> int:
    port = line.port
    client = DialupClient(port, DteOptions(command_timeout=3, connect_timeout=3, guard_time=0.3))
    client.initialize()
    client.dial(NUMBER)
    for i in range(n):
        payload = seeds_json(rng, "serial", i)
        kind = rng.randrange(4)
        if kind == 0:
            data = encode_frame(mutate(rng, payload).replace(b"\x02", b"").replace(b"\x03", b"")
                                .replace(b"\x04", b""))  # fmt: skip
        elif kind == 1:
            data = mutate(rng, encode_frame(payload)).replace(b"\x04", b"")
        elif kind == 2:
            data = rng.randbytes(rng.randint(1, 64)).replace(b"\x04", b"")
        else:
            data = encode_frame(payload)
        port.write(data)
        if i % 10 == 9:
            port.drain(0.05)
    port.drain(0.3)
    client.hangup()
    return n


async def http_fuzz(d: RunningDaemon, rng: random.Random, n: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {TOKENS['agent']}"}
    for i in range(n):
        if rng.random() < 0.25:
            path = f"/api/v1/redfish/{DEVICES['http']}"
            body = mutate(rng, REDFISH)
        else:
            path = "/api/v1/alarms"
            body = mutate(rng, seeds_json(rng, "http", i))
        async with d.session.post(d.url + path, data=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] += 1
            assert resp.status in (202, 400, 413), (path, resp.status)
    return statuses


def mqtt_fuzz(broker: Mosquitto, rng: random.Random, n: int) -> int:
    agent = MqttSender(__import__("threading").Event(), broker.host, broker.port)
    agent.open()
    assert agent.client is not None
    infos = []
    kinds = ["alarm", "heartbeat", "status", "redfish", "bogus", ""]
    try:
        for i in range(n):
            kind = rng.choice(kinds)
            serial = rng.choice([DEVICES["mqtt"], SIGNED, "OTHER01", "", "x" * 70])
            topic = f"express/{kind}/{serial}"
            if kind == "heartbeat":
                payload = json.dumps({"v": 1, "serial": serial, "interval": 60}).encode()
            elif kind == "status":
                payload = rng.choice([b"online", b"offline", b"", b"maybe"])
            elif kind == "redfish":
                payload = REDFISH
            else:
                payload = seeds_json(rng, "mqtt", i)
            if rng.random() < 0.7:
                payload = mutate(rng, payload)
            if rng.random() < 0.1:
                topic = mutate(rng, topic.encode()).decode("utf-8", "replace")
                # Keep it a valid topic name (mosquitto drops a publisher
                # that sends wildcards or control characters).
                topic = "".join(ch for ch in topic if ch.isprintable() and ch not in "#+")
                topic = topic or "express"
            infos.append(agent.client.publish(topic, payload, qos=1))
        deadline = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not take every fuzzed message"

    finally:
        agent.close()
    return n


async def quarantine(d: RunningDaemon) -> list[tuple[str, str]]:
    return await d.rt.store.read(
        lambda c: [tuple(r) for r in c.execute("SELECT channel, reason FROM quarantine")]
    )


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_fuzz_every_listener_at_once(
    tmp_path: Path, ptys: list[PtyLine], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    rng = random.Random(SEED)
    broker = mosquitto_factory()
    line = PtyLine.open()
    ptys.append(line)
    smtp_port = free_port()
    with hook_server() as hook:
        cfg = channels_config(
            tmp_path,
            hook=hook.url,
            smtp_port=smtp_port,
            broker_url=broker.url,
            serial_path=line.path,
            smtp={"max_message_bytes": 262144},
            clock_start="2026-11-20T10:00:00+09:00",
        )
        async with running(cfg) as d:

            async def ready() -> bool:
                async with d.session.get(d.url + "/readyz") as resp:
                    return resp.status == 200

            await until(ready, "every listener up")
            n = ROUNDS
            results = await asyncio.gather(
                asyncio.to_thread(smtp_fuzz, smtp_port, random.Random(rng.random()), n),
                asyncio.to_thread(serial_fuzz, line, random.Random(rng.random()), n),
                asyncio.to_thread(mqtt_fuzz, broker, random.Random(rng.random()), 2 * n),
                http_fuzz(d, random.Random(rng.random()), 2 * n),
            )
            smtp_codes, _, _, http_statuses = results

            # Afterwards every channel still takes a clean report.
            status, _ = await d.post(
                "/api/v1/alarms",
                json.loads(alarm_json(report("after-http", "http"))),
                role="agent",
            )
            assert status == 202
            s = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", smtp_port)
            try:
                sent = await asyncio.to_thread(
                    s.sendmail,
                    "agent@rely-smtp.example.jp",
                    [ACCEPT],
                    express_mail(report("after-smtp", "smtp")),
                )
                assert sent == {}
            finally:
                await asyncio.to_thread(s.quit)

            def dial_once() -> bool:
                client = DialupClient(line.port, DteOptions(guard_time=0.3))
                client.initialize()
                client.dial(NUMBER)
                ok = client.send("after-serial", alarm_json(report("after-serial", "serial"))).ok
                client.hangup()
                return ok

            assert await asyncio.to_thread(dial_once)
            agent = MqttSender(__import__("threading").Event(), broker.host, broker.port)
            agent.open()
            try:
                assert await asyncio.to_thread(agent.try_send, report("after-mqtt", "mqtt"))
            finally:
                agent.close()

            async def all_after() -> bool:
                got = await d.rt.store.read(
                    lambda c: {r[0] for r in c.execute("SELECT report_id FROM alarms")}
                )
                return {f"after-{ch}" for ch in DEVICES} <= got

            await until(all_after, "a clean report on every channel after the fuzzing")
            rows = await quarantine(d)
            reasons = Counter(reason for _, reason in rows)
            assert set(reasons) <= KNOWN, reasons
            assert not (set(reasons) & BUGS), reasons
            async with d.session.get(d.url + "/metrics") as resp:
                text = await resp.text()
            for line_ in text.splitlines():
                if line_.startswith("monitor_alarms_rejected_total{"):
                    label = line_.split('reason="', 1)[1].split('"', 1)[0]
                    assert label in KNOWN | {"line-too-long"}, line_
            stored = await d.rt.store.read(
                lambda c: c.execute("SELECT count(*) FROM alarms").fetchone()[0]
            )
            print(
                f"fuzz: smtp {dict(smtp_codes)} http {dict(http_statuses)} "
                f"quarantined {dict(reasons)} stored {stored}"
            )
