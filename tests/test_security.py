"""Security controls, each tried the way an attacker on the monitoring
network would (docs/security.md lists them with the threat they answer):

- the SMTP listener is not an open relay, whatever address trick is used;
- API tokens are kept as sha256 hashes and compared in constant time, with
  no early exit; the URL may carry a token only for the event stream;
- signed devices: an unsigned, forged, tampered or garbage signature is
  refused on every channel (HTTP 400, SMTP 550 5.7.1, MQTT quarantine,
  serial NAK), and quarantined;
- what an attacker can make the daemon keep is capped: raw bytes per row,
  the quarantine's total (retention), and a many-event Redfish payload is
  not stored once per event;
- request bodies over the limit are refused before they are read whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import smtplib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.dte import DialupClient, DteOptions
from monitor.formats.alarm_json import sign
from monitor.http import auth
from monitor.http.api import MAX_BODY
from monitor.model import AlarmReport
from monitor.pipeline import QUARANTINE_RAW_BURST, QUARANTINE_RAW_RATE, ByteBudget
from monitor.retention import RetentionJob, quarantine_bytes
from tests.support import mosquitto as support
from tests.support.daemon import TOKENS, RunningDaemon, running
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_chaos_helpers import (
    ACCEPT,
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
CLOCK = "2026-11-20T10:00:00+09:00"


async def quarantined(d: RunningDaemon, channel: str) -> list[str]:
    return await d.rt.store.read(
        lambda c: [
            r[0]
            for r in c.execute(
                "SELECT reason FROM quarantine WHERE channel = ? ORDER BY seq", (channel,)
            )
        ]
    )


async def stored_ids(d: RunningDaemon, serial: str) -> list[str]:
    return await d.rt.store.read(
        lambda c: [
            r[0] for r in c.execute("SELECT report_id FROM alarms WHERE device = ?", (serial,))
        ]
    )


# -- not an open relay --------------------------------------------------------------------

RELAY_TRICKS = [
    "victim@example.com",
    "victim@gmail.com",
    "alarms@monitor.example.evil.com",
    "alarms%victim.example@monitor.example",  # the percent hack
    "@monitor.example:victim@example.com",  # a source route
    '"alarms@monitor.example"@example.com',
    "victim@[127.0.0.1]",
    "alarms@monitor.example@example.com",
    "postmaster@example.com",
    "victim!example.com@monitor.example",  # a bang path
]


async def test_not_an_open_relay(tmp_path: Path) -> None:
    port = free_port()
    with hook_server() as hook:
        cfg = channels_config(tmp_path, hook=hook.url, smtp_port=port, clock_start=CLOCK)
        async with running(cfg) as d:

            def session() -> list[tuple[str, int]]:
                out = []
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                    s.ehlo("spammer.example")
                    for rcpt in RELAY_TRICKS:
                        assert s.mail("spammer@example.net")[0] == 250
                        code, _ = s.rcpt(rcpt)
                        out.append((rcpt, code))
                        s.rset()
                    # Only the accept address takes mail at all, and only as
                    # an alarm report: nothing is ever sent on.
                    assert s.mail("spammer@example.net")[0] == 250
                    assert s.rcpt(ACCEPT)[0] == 250
                    code, _ = s.data(b"Subject: buy now\r\n\r\nCheap pills\r\n")
                    out.append(("spam body", code))
                return out

            answers = await asyncio.to_thread(session)
            assert all(code in (550, 553, 501) for _, code in answers), answers
            assert await quarantined(d, "smtp") == ["unrecognised"]
            assert hook.snapshot() == []  # nothing went anywhere


# -- tokens -------------------------------------------------------------------------------


def test_tokens_are_hashed_and_compared_without_early_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a-long-random-agent-token"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    extra = (
        "".join(
            f'\n[[api.tokens]]\ntoken_sha256 = "{hashlib.sha256(f"t{i}".encode()).hexdigest()}"'
            '\nrole = "staff"\n'
            for i in range(5)
        )
        + f'\n[[api.tokens]]\ntoken_sha256 = "{digest}"\nrole = "agent"\n'
    )
    cfg = channels_config(tmp_path, hook="http://127.0.0.1:9", clock_start=CLOCK, extra=extra)
    config = load_config(cfg)
    # The config keeps hashes only, also for the plain `token = "..."` entries.
    for token in config.tokens:
        assert len(token.token_sha256) == 64
        assert secret not in repr(token)
    calls = 0
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented in (secret, "t0", "wrong", ""):
        calls = 0
        auth.find_token(config, presented)
        # Every configured hash is compared, whichever matches (or none):
        # the time taken does not say which token, or how much of one, matched.
        assert calls == len(config.tokens), presented
    found = auth.find_token(config, secret)
    assert found is not None and found.role == "agent"
    assert auth.find_token(config, secret.upper()) is None


async def test_token_only_in_the_header_except_for_the_event_stream(tmp_path: Path) -> None:
    with hook_server() as hook:
        cfg = channels_config(tmp_path, hook=hook.url, clock_start=CLOCK)
        async with running(cfg) as d:
            url = d.url + "/api/v1/incidents"
            async with d.session.get(url, params={"access_token": TOKENS["admin"]}) as resp:
                assert resp.status == 401
            async with d.session.get(url, headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401
                assert "traceback" not in (await resp.text()).lower()
            async with d.session.get(url, headers={"Authorization": "Basic eDp5"}) as resp:
                assert resp.status == 401
            async with d.session.post(
                d.url + "/api/v1/alarms",
                data=alarm_json(report("tok-1", "http")),
                headers=d.headers("customer"),
            ) as resp:
                assert resp.status == 403  # a read-only token cannot push
            async with d.session.get(
                d.url + "/api/v1/quarantine", headers=d.headers("agent")
            ) as resp:
                assert resp.status == 403  # an agent cannot read what others sent


# -- signatures ---------------------------------------------------------------------------


def forged(report_id: str, channel: str, how: str) -> AlarmReport:
    r = report(report_id, channel, serial=SIGNED, secret=SECRET)
    base = report(report_id, channel, serial=SIGNED)
    if how == "unsigned":
        return base
    if how == "other-secret":
        return AlarmReport(**{**_fields(base), "sig": sign(base, "not-the-secret")})
    if how == "tampered":  # a valid signature, then the message changed
        return AlarmReport(**{**_fields(r), "message": "Everything is fine"})
    if how == "garbage":
        return AlarmReport(**{**_fields(base), "sig": "é∂" * 32})
    if how == "replayed-on-other-device":
        other = report(report_id, channel, serial="RELY0001")
        return AlarmReport(**{**_fields(base), "sig": sign(other, SECRET)})
    raise AssertionError(how)


def _fields(r: AlarmReport) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}


FORGERIES = ["unsigned", "other-secret", "tampered", "garbage", "replayed-on-other-device"]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
async def test_spoofed_reports_are_refused_on_every_channel(
    tmp_path: Path, ptys: list[PtyLine], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
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
            clock_start=CLOCK,
        )
        async with running(cfg) as d:
            for i, how in enumerate(FORGERIES):
                body = json.loads(alarm_json(forged(f"h-{i}", "http", how)))
                status, answer = await d.post("/api/v1/alarms", body, role="agent")
                assert (status, answer) == (400, {"error": "bad-signature"}), how

            def mail() -> list[tuple[int, bytes]]:
                out = []
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as s:
                    s.ehlo("agent.example.jp")
                    for i, how in enumerate(FORGERIES):
                        r = forged(f"s-{i}", "smtp", how)
                        assert s.mail("agent@rely-smtp.example.jp")[0] == 250
                        assert s.rcpt(ACCEPT)[0] == 250
                        out.append(s.data(express_mail(r)))
                return out

            for code, text in await asyncio.to_thread(mail):
                assert code == 550 and text.startswith(b"5.7.1 bad-signature"), (code, text)

            def dial() -> list[tuple[str, str]]:
                client = DialupClient(line.port, DteOptions(guard_time=0.3))
                client.initialize()
                client.dial(NUMBER)
                out = []
                for i, how in enumerate(FORGERIES):
                    r = forged(f"d-{i}", "serial", how)
                    result = client.send(r.id, alarm_json(r))
                    out.append((result.outcome, result.reason))
                client.hangup()
                return out

            assert await asyncio.to_thread(dial) == [("rejected", "bad-signature")] * len(FORGERIES)
            agent = MqttSender(threading.Event(), broker.host, broker.port)
            agent.open()
            try:
                for i, how in enumerate(FORGERIES):
                    r = forged(f"m-{i}", "mqtt", how)
                    assert await asyncio.to_thread(agent.try_send, r)
                good = report("m-good", "mqtt", serial=SIGNED, secret=SECRET)
                assert await asyncio.to_thread(agent.try_send, good)
            finally:
                agent.close()

            async def mqtt_done() -> bool:
                return await stored_ids(d, SIGNED) == ["m-good"]

            for _ in range(300):
                if await mqtt_done():
                    break
                await asyncio.sleep(0.1)
            assert await stored_ids(d, SIGNED) == ["m-good"]  # the genuine one only
            for channel in ("http", "smtp", "serial", "mqtt"):
                assert await quarantined(d, channel) == ["bad-signature"] * len(FORGERIES), channel


# -- what an attacker can make us keep -----------------------------------------------------


async def test_a_many_event_redfish_payload_is_not_stored_once_per_event(tmp_path: Path) -> None:
    """One ~1 MiB push of 8,000 small events (valid and invalid mixed): the
    payload's bytes are kept once, not once per event (which made one request
    cost ~500 MiB of raw bytes in the alarms and quarantine tables)."""
    events: list[dict[str, Any]] = []
    for i in range(8000):
        if i % 2:
            events.append(
                {"EventId": f"e{i}", "MessageId": "A.B", "Severity": "OK", "Message": "x"}
            )
        else:
            events.append({"EventId": f"e{i}", "Message": "no severity" + " " * 60})
    body = json.dumps({"Events": events}).encode()
    assert len(body) < MAX_BODY
    with hook_server() as hook:
        cfg = channels_config(tmp_path, hook=hook.url, clock_start=CLOCK)
        async with running(cfg) as d:
            async with d.session.post(
                d.url + "/api/v1/redfish/RELY0001",
                data=io.BytesIO(body),
                headers=d.headers("agent"),
            ) as resp:
                assert resp.status == 202
                items = (await resp.json())["items"]
            assert len(items) == len(events)
            assert sum(1 for it in items if "seq" in it) == 4000

            def held(conn: sqlite3.Connection) -> tuple[int, int]:
                raw = conn.execute("SELECT coalesce(sum(length(raw)), 0) FROM alarms").fetchone()
                return int(raw[0]), quarantine_bytes(conn)

            alarm_raw, quarantine_raw = await d.rt.store.read(held)
            assert alarm_raw + quarantine_raw <= 2 * len(body), (alarm_raw, quarantine_raw)


async def test_quarantine_flood_is_capped_by_size(tmp_path: Path) -> None:
    """Garbage pushes of 200 KiB each: a row keeps at most 64 KiB, and the
    retention pass brings the quarantine under `quarantine_max_bytes`,
    oldest first."""
    cap = 1_000_000
    extra = f'\n[retention]\nquarantine = "30d"\nquarantine_max_bytes = {cap}\n'
    with hook_server() as hook:
        cfg = channels_config(tmp_path, hook=hook.url, clock_start=CLOCK, extra=extra)
        async with running(cfg) as d:
            junk = b"{" + b"x" * 200_000
            for _ in range(60):
                async with d.session.post(
                    d.url + "/api/v1/alarms", data=junk, headers=d.headers("agent")
                ) as resp:
                    assert resp.status == 400
            rows = await d.rt.store.read(
                lambda c: c.execute("SELECT max(length(raw)), count(*) FROM quarantine").fetchone()
            )
            assert rows[0] <= 64 * 1024 and rows[1] == 60
            assert await d.rt.store.read(quarantine_bytes) > cap
            await RetentionJob(d.rt).run_once()
            held = await d.rt.store.read(quarantine_bytes)
            assert 0 < held <= cap


async def test_bodies_over_the_limit_are_refused(tmp_path: Path) -> None:
    with hook_server() as hook:
        cfg = channels_config(tmp_path, hook=hook.url, clock_start=CLOCK)
        async with running(cfg) as d:
            for path in ("/api/v1/alarms", "/api/v1/redfish/RELY0001"):
                async with d.session.post(
                    d.url + path, data=io.BytesIO(b"{" * (MAX_BODY + 1)), headers=d.headers("agent")
                ) as resp:
                    assert resp.status == 413, path
            async with d.session.get(d.url + "/healthz") as resp:
                assert resp.status == 200


def test_quarantine_byte_budget() -> None:
    """The bucket behind "a flood keeps rows, not bytes" (monitor.pipeline)."""
    now = [0.0]
    budget = ByteBudget(rate=100.0, burst=1000.0, now=lambda: now[0])
    assert budget.take(600) and budget.take(400)
    assert not budget.take(1)  # spent
    now[0] += 2.0
    assert budget.take(200) and not budget.take(1)
    now[0] += 1000.0
    assert budget.take(1000) and not budget.take(1)  # never more than the burst
    # The daemon's own: a minute of flood keeps at most burst + rate * 60 s.
    assert QUARANTINE_RAW_BURST + 60 * QUARANTINE_RAW_RATE < 128 * 1024 * 1024
