"""The SMTP listener (SPEC 3.3) with real smtplib clients against the
in-process daemon: formats over the wire, session rules, limits, AUTH,
STARTTLS, reply-to-acknowledge, storage trouble, shutdown, reload.

smtplib blocks, so every client call runs in a thread (asyncio.to_thread):
the daemon shares this test's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from monitor.formats.devices import DeviceIndex
from monitor.formats.mail import MailAck, MailReject, MailReports, parse_mail
from monitor.store import StorageUnavailable
from tests.support.daemon import RunningDaemon, running, write_config
from tests.test_smtp_helpers import (
    ACCEPT,
    CONTACT,
    OTHER,
    SERIAL,
    Client,
    express,
    new_port,
    reply,
    rows,
    send_one,
    smtp_extra,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mail"
T = TypeVar("T")


async def io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def wire(raw: bytes) -> bytes:
    """What the server receives from smtplib.data(bytes): as is, plus a final
    CRLF (smtplib fixes line ends only in str messages)."""
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def from_header(raw: bytes) -> str:
    m = re.search(rb"^From:.*?<?([^<>\s]+@[^<>\s]+)>?\s*$", raw, re.MULTILINE | re.IGNORECASE)
    return m.group(1).decode() if m else "someone@example.jp"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def incident_of(d: RunningDaemon, report_id: str) -> int:
    db = Path(d.rt.store.path)
    found = await io(rows, db, "SELECT incident FROM alarms WHERE report_id = ?", report_id)
    assert found and found[0][0] is not None, found
    return int(found[0][0])


# -- formats over the wire -------------------------------------------------------------


async def test_every_fixture_over_the_wire(tmp_path: Path) -> None:
    """Each fixture mail (every format and charset) is stored with the
    device, severity and code the parser finds; the others are refused with
    550 and quarantined whole."""
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port, max_message_bytes=1048576))
    db = tmp_path / "monitor.db"
    async with running(cfg) as d:
        index = DeviceIndex(d.rt.config.current.devices)
        stored = rejected = 0
        for path in sorted(FIXTURES.glob("*.eml")):
            raw = path.read_bytes()
            sender = from_header(raw)
            code, text = await io(send_one, port, raw, mail_from=sender)
            expected = parse_mail(wire(raw), sender, index)
            if isinstance(expected, MailReports):
                assert code == 250, (path.name, code, text)
                for report in expected.reports:
                    got = await io(
                        rows,
                        db,
                        "SELECT format, device, severity, code, channel FROM alarms"
                        " WHERE device = ? AND report_id = ?",
                        report.serial,
                        report.id,
                    )
                    assert got == [
                        (expected.format, report.serial, report.severity, report.code, "smtp")
                    ], path.name
                stored += 1
            else:
                # Rejects, and replies to incidents that do not exist here.
                reason = expected.reason if isinstance(expected, MailReject) else "unknown-incident"
                assert isinstance(expected, MailReject | MailAck)
                assert code == 550, (path.name, code, text)
                assert text.startswith(f"5.6.0 {reason}"), (path.name, text)
                assert text.isascii()
                got = await io(
                    rows,
                    db,
                    "SELECT reason, channel, raw FROM quarantine ORDER BY seq DESC LIMIT 1",
                )
                assert got == [(reason, "smtp", wire(raw))], path.name
                rejected += 1
        assert stored >= 20 and rejected >= 3, (stored, rejected)
        formats = {r[0] for r in await io(rows, db, "SELECT DISTINCT format FROM alarms")}
        assert formats == {"express", "json", "esmpro", "hp", "ilo", "idrac", "smartd", "mdadm"}
        assert await d.metric('monitor_alarms_received_total{channel="smtp",format="esmpro"}') > 0


# -- session rules ----------------------------------------------------------------------


async def test_session_rules(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port, max_message_bytes=4096))
    db = tmp_path / "monitor.db"
    async with running(cfg) as d:
        assert await d.metric('monitor_listener_up{listener="smtp"}') == 1
        c = await io(Client, port)
        try:
            ehlo = c.smtp.ehlo_resp or b""
            assert b"SIZE 4096" in ehlo and b"8BITMIME" in ehlo
            assert b"AUTH" not in ehlo and b"STARTTLS" not in ehlo  # no users, no cert

            # Unknown recipient; the accept list is case-insensitive.
            code, text = await io(c.send, express("r-1"), rcpt="nobody@monitor.example")
            assert (code, text[:5]) == (550, "5.1.1")
            code, text = await io(c.send, express("r-1"), rcpt="second@monitor.example")
            assert code == 250 and text.startswith("2.0.0 OK stored as alarm")

            # The exact re-send (same report id, same device): 250, one row.
            code, text = await io(c.send, express("r-1"))
            assert code == 250 and "duplicate" in text
            assert await io(rows, db, "SELECT count(*) FROM alarms") == [(1,)]
            assert await d.metric('monitor_alarms_duplicate_total{kind="exact"}') == 1

            # SIZE declared over the limit: refused at MAIL.
            code, msg = await io(c.smtp.mail, "agent@mail01.example.jp", ["SIZE=5000"])
            assert code == 552 and msg.startswith(b"5.3.4")
            await io(c.smtp.rset)

            # Too big without SIZE: refused after DATA, nothing stored; the
            # session goes on.
            big = express("r-big", message="x" * 900 + "\n" + "y" * 900 + "\n" + "z" * 3000)
            code, text = await io(c.send, big)
            assert code == 552 and text.startswith("5.3.4"), text
            assert (
                await d.metric('monitor_alarms_rejected_total{channel="smtp",reason="too-large"}')
                == 1
            )
            code, text = await io(c.send, express("r-2", severity="critical"))
            assert code == 250, text

            # Unrecognised mail: 550 5.6.0 with the reason (ASCII even for a
            # Japanese subject), and the raw message quarantined.
            junk = "Subject: 週報のお知らせ\r\nFrom: news@example.jp\r\n\r\nhello\r\n".encode()
            code, text = await io(c.send, junk)
            assert code == 550 and text.startswith("5.6.0 unrecognised"), text
            assert text.isascii() and "??" in text
            got = await io(rows, db, "SELECT reason, raw, peer FROM quarantine")
            assert [(r[0], r[1]) for r in got] == [("unrecognised", junk)]
            assert got[0][2].startswith("127.0.0.1:")

            # One mail, two JSON parts: 250 once both are stored.
            code, text = await io(c.send, json_mail(["j-1", "j-2"]))
            assert code == 250 and "2 alarms stored" in text, text
            got = await io(rows, db, "SELECT report_id, format FROM alarms WHERE format = 'json'")
            assert sorted(got) == [("j-1", "json"), ("j-2", "json")]
        finally:
            await io(c.close)
        assert await d.metric('monitor_alarms_received_total{channel="smtp",format="express"}') == 2
        assert await d.metric("monitor_alarms_rejected_total") == 2


def json_mail(ids: list[str]) -> bytes:
    parts = []
    for report_id in ids:
        body = json.dumps(
            {
                "v": 1,
                "id": report_id,
                "serial": SERIAL,
                "severity": "major",
                "component": "FAN1",
                "code": "FAN-0001",
                "message": "Fan 1 slow",
            }
        )
        parts.append(f"--b0\r\nContent-Type: application/json\r\n\r\n{body}\r\n")
    return (
        f"From: agent@mail01.example.jp\r\nTo: {ACCEPT}\r\nSubject: alarms\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        + "".join(parts)
        + "--b0--\r\n"
    ).encode()


async def test_storage_unavailable_answers_451(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    async with running(cfg) as d:

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StorageUnavailable("disk full")

        monkeypatch.setattr(d.rt.pipeline, "accept", down)
        code, text = await io(send_one, port, express("r-451"))
        assert (code, text[:5]) == (451, "4.3.0")
        monkeypatch.undo()
        # The sender's retry then succeeds.
        code, text = await io(send_one, port, express("r-451"))
        assert code == 250 and "stored" in text


async def test_client_hanging_up_mid_commit_does_not_cancel_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    async with running(cfg) as d:
        gate, entered = asyncio.Event(), asyncio.Event()
        real = d.rt.pipeline.accept

        async def slow(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await gate.wait()
            return await real(*args, **kwargs)

        monkeypatch.setattr(d.rt.pipeline, "accept", slow)
        sock = await io(socket.create_connection, ("127.0.0.1", port), timeout=10)
        # Commands sent at once: the server still reads them one by one.
        await io(
            sock.sendall,
            b"EHLO x\r\nMAIL FROM:<a@mail01.example.jp>\r\nRCPT TO:<"
            + ACCEPT.encode()
            + b">\r\nDATA\r\n"
            + express("r-hangup")
            + b"\r\n.\r\n",
        )
        await asyncio.wait_for(entered.wait(), 10)
        sock.close()
        while await d.metric("monitor_smtp_sessions") != 0:  # the server saw the hang-up
            await asyncio.sleep(0.02)
        gate.set()
        db = tmp_path / "monitor.db"

        def stored() -> bool:
            return rows(db, "SELECT report_id FROM alarms") == [("r-hangup",)]

        await poll(stored, "the alarm stored")
        assert await d.metric('monitor_alarms_received_total{channel="smtp",format="express"}') == 1


async def poll(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- reply-to-acknowledge -----------------------------------------------------------------


async def test_reply_acknowledges_only_for_a_contact(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    db = tmp_path / "monitor.db"
    async with running(cfg) as d:
        code, _ = await io(send_one, port, express("r-ack"))
        assert code == 250
        n = await incident_of(d, "r-ack")
        assert (await d.incident(n))["state"] in ("open", "notified")

        # A contact of another contract may not acknowledge it.
        code, text = await io(send_one, port, reply(n, OTHER), mail_from=OTHER)
        assert code == 550 and text.startswith("5.7.1 not-a-contact"), text
        # Nor may an automatic reply from the right address.
        auto = reply(n, CONTACT, extra_headers="Auto-Submitted: auto-replied\r\n")
        code, text = await io(send_one, port, auto, mail_from=CONTACT)
        assert code == 550 and text.startswith("5.6.0 auto-reply"), text
        assert (await d.incident(n))["state"] in ("open", "notified")
        reasons = await io(rows, db, "SELECT reason FROM quarantine ORDER BY seq")
        assert reasons == [("not-a-contact",), ("auto-reply",)]

        # The contact (address compared case-insensitively): acknowledged.
        code, text = await io(send_one, port, reply(n, "SATO@example.jp"), mail_from=CONTACT)
        assert code == 250 and text == f"2.0.0 INC-{n} acknowledged by {CONTACT}", text
        inc = await d.incident(n)
        assert inc["state"] == "acknowledged" and inc["acknowledged_by"] == CONTACT
        code, text = await io(send_one, port, reply(n, CONTACT), mail_from=CONTACT)
        assert code == 250 and "already acknowledged" in text

        # No such incident; a resolved one.
        code, text = await io(send_one, port, reply(99999, CONTACT), mail_from=CONTACT)
        assert code == 550 and text.startswith("5.6.0 unknown-incident"), text
        status, _ = await d.post(f"/api/v1/incidents/{n}/resolve", {"by": "staff"})
        assert status == 200
        code, text = await io(send_one, port, reply(n, CONTACT), mail_from=CONTACT)
        assert code == 550 and text.startswith("5.6.0 incident-resolved"), text

        # The envelope sender counts too (From: a personal alias).
        code, _ = await io(send_one, port, express("r-ack2", component="FAN9", code="FAN-9"))
        m = await incident_of(d, "r-ack2")
        assert m != n
        code, text = await io(
            send_one, port, reply(m, "taro@home.example"), mail_from="suzuki@example.jp"
        )
        assert code == 250 and "acknowledged by suzuki@example.jp" in text, text


# -- AUTH, STARTTLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path, ca


def users(**accounts: str) -> list[str]:
    return [
        f'{{ name = "{name}", password_sha256 = "{sha(pw)}" }}' for name, pw in accounts.items()
    ]


async def test_auth_over_starttls(tmp_path: Path, tls_files: tuple[Path, Path, trustme.CA]) -> None:
    cert, key, ca = tls_files
    port = new_port()
    extra = smtp_extra(
        port,
        require_auth=True,
        users=users(agent="s3cret"),
        tls_cert=str(cert),
        tls_key=str(key),
        auth_require_tls=True,
    )
    cfg = write_config(tmp_path, extra=extra)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with running(cfg) as d:
        c = await io(Client, port)
        try:
            ehlo = c.smtp.ehlo_resp or b""
            assert b"STARTTLS" in ehlo and b"AUTH" not in ehlo  # AUTH only after TLS
            code, text = await io(c.send, express("r-tls"))
            assert (code, text) == (530, "5.7.0 Authentication required")

            await io(c.smtp.starttls, context=client_ctx)
            ehlo = (await io(c.smtp.ehlo, "test.example"))[1]
            assert b"AUTH LOGIN PLAIN" in ehlo and b"STARTTLS" not in ehlo
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                await io(c.smtp.login, "agent", "guess")
            assert wrong.value.smtp_code == 535
            code, text = await io(c.send, express("r-tls"))
            assert code == 530
            code, _ = await io(c.smtp.login, "agent", "s3cret")  # PLAIN
            assert code == 235
            code, text = await io(c.send, express("r-tls"))
            assert code == 250, text
        finally:
            await io(c.close)

        # AUTH LOGIN (the two-step one) works too.
        c = await io(Client, port)
        try:
            await io(c.smtp.starttls, context=client_ctx)
            await io(c.smtp.ehlo, "test.example")
            c.smtp.user, c.smtp.password = "agent", "s3cret"
            code, _ = await io(c.smtp.auth, "LOGIN", c.smtp.auth_login, initial_response_ok=False)
            assert code == 235
            code, text = await io(c.send, express("r-tls-2"))
            assert code == 250, text
        finally:
            await io(c.close)

        # Guessing: after AUTH_ATTEMPTS tries the session is closed with 421.
        c = await io(Client, port)
        try:
            await io(c.smtp.starttls, context=client_ctx)
            await io(c.smtp.ehlo, "test.example")
            c.smtp.user, c.smtp.password = "agent", "guess"
            codes = []
            for _ in range(4):
                try:
                    codes.append((await io(c.smtp.auth, "PLAIN", c.smtp.auth_plain))[0])
                except smtplib.SMTPAuthenticationError as exc:
                    codes.append(exc.smtp_code)
                except smtplib.SMTPServerDisconnected:
                    codes.append(-1)
                    break
            assert codes == [535, 535, 535, 421], codes
        finally:
            c.smtp.close()
        assert await d.metric('monitor_smtp_refused_total{reason="auth-required"}') == 2


async def test_auth_without_tls_when_allowed(tmp_path: Path) -> None:
    port = new_port()
    extra = smtp_extra(port, require_auth=True, users=users(agent="pw"), auth_require_tls=False)
    cfg = write_config(tmp_path, extra=extra)
    async with running(cfg):
        c = await io(Client, port)
        try:
            assert b"AUTH LOGIN PLAIN" in (c.smtp.ehlo_resp or b"")
            code, _ = await io(c.send, express("r-plain"))
            assert code == 530
            code, _ = await io(c.smtp.login, "agent", "pw")
            assert code == 235
            code, text = await io(c.send, express("r-plain"))
            assert code == 250, text
        finally:
            await io(c.close)


# -- limits ------------------------------------------------------------------------------------


async def test_rate_per_peer(tmp_path: Path) -> None:
    # One an hour: the second message within the test is always over.
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port, rate_per_peer="1/h"))
    async with running(cfg) as d:
        c = await io(Client, port)
        try:
            code, _ = await io(c.send, express("r-rate-1"))
            assert code == 250
            code, text = await io(c.send, express("r-rate-2"))
            assert code == 421 and text.startswith("4.7.0 Rate limit"), text
            with pytest.raises(smtplib.SMTPServerDisconnected):
                await io(c.smtp.noop)  # 421 closes the session
        finally:
            c.smtp.close()
        assert await d.metric('monitor_smtp_refused_total{reason="rate"}') == 1
        assert await io(rows, tmp_path / "monitor.db", "SELECT report_id FROM alarms") == [
            ("r-rate-1",)
        ]


async def test_max_sessions(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port, max_sessions=2))
    async with running(cfg) as d:
        a = await io(Client, port)
        b = await io(Client, port)
        with pytest.raises(smtplib.SMTPConnectError) as busy:
            await io(smtplib.SMTP, "127.0.0.1", port, timeout=10)
        assert busy.value.smtp_code == 421
        assert await d.metric('monitor_smtp_refused_total{reason="sessions"}') == 1
        assert await d.metric("monitor_smtp_sessions") == 2
        # A session that ends makes room for the next.
        await io(a.close)
        c = await io(connect_when_free, port)
        code, _ = await io(c.send, express("r-after"))
        assert code == 250
        await io(c.close)
        await io(b.close)


async def test_idle_timeout(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port, idle_timeout="1s"))
    async with running(cfg) as d:
        c = await io(Client, port)
        # The server closes the idle session after idle_timeout, saying why.
        assert (await io(read_until_closed, c.smtp.sock)).startswith(b"421 4.4.2")
        c.smtp.close()
        assert await d.metric('monitor_smtp_refused_total{reason="idle"}') == 1


def read_until_closed(sock: socket.socket | None, timeout: float = 20.0) -> bytes:
    """What the server sends until it closes the connection."""
    assert sock is not None
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(1024):
        out += chunk
    return out


def connect_when_free(port: int, timeout: float = 10.0) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(port)
        except smtplib.SMTPConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- lifecycle ------------------------------------------------------------------------------------


async def test_shutdown_closes_sessions_with_421(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    async with running(cfg) as d:
        sock = await io(socket.create_connection, ("127.0.0.1", port), timeout=10)
        banner = await io(sock.recv, 1024)
        assert banner.startswith(b"220 ") and b"express-monitor ESMTP" in banner
        assert d.rt.listeners["smtp"] is True
    try:
        got = await io(sock.recv, 1024)
        assert got.startswith(b"421 4.3.2"), got
    finally:
        sock.close()


async def test_reload_changes_accept_and_users(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    async with running(cfg) as d:
        code, _ = await io(send_one, port, express("r-new"), rcpt="new@monitor.example")
        assert code == 550
        text = cfg.read_text().replace('"Second@Monitor.Example"', '"new@monitor.example"')
        cfg.write_text(text)
        assert await d.daemon.reload()
        code, _ = await io(send_one, port, express("r-new"), rcpt="new@monitor.example")
        assert code == 250
