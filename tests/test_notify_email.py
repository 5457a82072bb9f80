"""E-mail transport against a real aiosmtpd server (and raw sockets for the
failure modes a well-behaved server won't produce)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from monitor.model import NotifyConfig
from monitor.notify.email import _is_loopback, build_message, message_id, send_email
from monitor.notify.errors import TransportError
from monitor.notify.keys import idempotency_key
from monitor.notify.render import NoticeContent, render_email

SENDER = "monitor@center.example"
REPLY_TO = "alarms@monitor.example"
TO = "sato@example.jp"
KEY = idempotency_key(42, 1, "raised", "critical", "Sato")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Handler:
    """aiosmtpd handler that records messages; replies can be forced."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        raw = envelope.original_content or b""
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw))
        return "250 OK queued"


@dataclass
class Relay:
    handler: Handler
    port: int

    def config(self, sender: str = SENDER) -> NotifyConfig:
        return NotifyConfig(smtp_host="127.0.0.1", smtp_port=self.port, sender=sender)


async def _serve(factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    # The daemon's own listener runs aiosmtpd on its loop the same way.
    handler = Handler()
    server = await _serve(lambda: SMTPServer(handler, hostname="relay.test"))
    try:
        yield Relay(handler, _port(server))
    finally:
        server.close()
        await server.wait_closed()


class Silent(asyncio.Protocol):
    """Accepts the connection, then says nothing (or only a banner)."""

    def __init__(self, banner: bytes, peers: list[asyncio.Transport]) -> None:
        self.banner = banner
        self.peers = peers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.peers.append(transport)
        if self.banner:
            transport.write(self.banner)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Any]]:
    """Factory: a TCP server that sends `banner` and then stays silent."""
    servers: list[asyncio.Server] = []
    peers: list[asyncio.Transport] = []

    async def start(banner: bytes) -> int:
        server = await _serve(lambda: Silent(banner, peers))
        servers.append(server)
        return _port(server)

    try:
        yield start
    finally:
        for peer in peers:
            peer.close()
        for server in servers:
            server.close()
            await server.wait_closed()


def a_notice(**over: Any) -> NoticeContent:
    inc = {
        "id": 42,
        "contract": "C-0001",
        "device": "JPN0012345",
        "component": "PSU",
        "code": "PSU0003",
        "severity": "critical",
        "state": "open",
        "title": "電源ユニット2の障害 / Power supply 2 failed",
        "count": 1,
        "first_seen": "2026-11-20T09:10:00+09:00",
        "last_seen": "2026-11-20T09:10:00+09:00",
        "respond_by": "2026-11-20T11:10:00+09:00",
    }
    fields: dict[str, Any] = {
        "kind": "raised",
        "incident": inc,
        "contract_id": "C-0001",
        "customer": "株式会社サンプル",
        "contact": "佐藤",
        "attempt": 1,
        "round": 1,
        "fee_estimate": None,
        "plan": "express-5x9",
    }
    fields.update(over)
    return NoticeContent(**fields)


# --- delivery -----------------------------------------------------------------


async def test_rendered_notice_arrives_intact(relay: Relay) -> None:
    subject, body = render_email(a_notice())
    await send_email(relay.config(), TO, REPLY_TO, subject, body, KEY)

    [got] = relay.handler.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == [TO]
    msg = got.message
    assert msg["Subject"] == "[INC-42] critical C-0001 JPN0012345 PSU0003"
    assert msg["From"] == SENDER
    assert msg["To"] == TO
    assert msg["Reply-To"] == REPLY_TO
    assert msg["Message-ID"] == f"<{KEY}@express-monitor>"
    assert msg["X-Idempotency-Key"] == KEY
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] is not None
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content() == body  # Japanese round-trips
    assert "電源ユニット2の障害" in msg.get_content()


async def test_resend_has_the_same_message_id(relay: Relay) -> None:
    cfg = relay.config()
    subject, first = render_email(a_notice(attempt=1))
    _, second = render_email(a_notice(attempt=2))
    other = idempotency_key(42, 2, "reminder", "critical", "佐藤")
    await send_email(cfg, TO, REPLY_TO, subject, first, KEY)
    await send_email(cfg, TO, REPLY_TO, subject, second, KEY)
    await send_email(cfg, TO, REPLY_TO, subject, first, other)
    ids = [r.message["Message-ID"] for r in relay.handler.received]
    assert ids == [message_id(KEY), message_id(KEY), message_id(other)]
    assert ids[0] != ids[2]


async def test_non_ascii_subject_is_rfc2047_encoded(relay: Relay) -> None:
    subject = "[INC-7] warning C-0002 JPN0099 温度異常"
    await send_email(relay.config(), TO, REPLY_TO, subject, "本文\n", KEY)
    [got] = relay.handler.received
    raw_headers = got.raw.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    assert b"=?utf-8?" in raw_headers.lower()
    assert got.message["Subject"] == subject
    assert got.message.get_content() == "本文\n"


async def test_without_reply_to_there_is_no_header(relay: Relay) -> None:
    await send_email(relay.config(), TO, None, "[INC-1] info C-1 S1 X", "body\n", KEY)
    [got] = relay.handler.received
    assert got.message["Reply-To"] is None


async def test_display_name_in_from_uses_the_bare_address_on_the_envelope(relay: Relay) -> None:
    cfg = relay.config(sender=f"Express Monitor <{SENDER}>")
    await send_email(cfg, f"佐藤 <{TO}>", REPLY_TO, "[INC-1] info C-1 S1 X", "body\n", KEY)
    [got] = relay.handler.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == [TO]
    assert got.message["From"].addresses[0].display_name == "Express Monitor"
    assert got.message["To"].addresses[0].display_name == "佐藤"


# --- failures -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "reply", "permanent", "code"),
    [
        ("rcpt", "550 5.1.1 no such user", True, 550),
        ("rcpt", "450 4.2.1 mailbox busy", False, 450),
        ("data", "552 5.3.4 message too big", True, 552),
        ("data", "451 4.3.0 try again later", False, 451),
    ],
)
async def test_smtp_replies_are_classified(
    relay: Relay, where: str, reply: str, permanent: bool, code: int
) -> None:
    if where == "rcpt":
        relay.handler.rcpt_reply = reply
    else:
        relay.handler.data_reply = reply
    with pytest.raises(TransportError) as caught:
        await send_email(relay.config(), TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY)
    assert caught.value.permanent is permanent
    assert caught.value.status == code
    assert relay.handler.received == []


@pytest.mark.parametrize(
    ("banner", "permanent", "code"),
    [(b"421 4.3.2 too busy\r\n", False, 421), (b"554 5.7.1 no relaying for you\r\n", True, 554)],
)
async def test_refusing_banner_is_classified(
    raw_server: Callable[[bytes], Any], banner: bytes, permanent: bool, code: int
) -> None:
    port = await raw_server(banner)
    cfg = NotifyConfig(smtp_host="127.0.0.1", smtp_port=port, sender=SENDER)
    with pytest.raises(TransportError) as caught:
        await send_email(cfg, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY, timeout=2)
    assert (caught.value.permanent, caught.value.status) == (permanent, code)


async def test_silent_relay_times_out_as_temporary(raw_server: Callable[[bytes], Any]) -> None:
    port = await raw_server(b"")
    cfg = NotifyConfig(smtp_host="127.0.0.1", smtp_port=port, sender=SENDER)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportError) as caught:
        await send_email(cfg, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY, timeout=0.3)
    assert caught.value.permanent is False
    assert loop.time() - started < 3


async def test_connection_refused_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = NotifyConfig(smtp_host="127.0.0.1", smtp_port=port, sender=SENDER)
    with pytest.raises(TransportError) as caught:
        await send_email(cfg, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY)
    assert caught.value.permanent is False


async def test_no_relay_configured_is_permanent() -> None:
    cfg = NotifyConfig(smtp_host=None, smtp_port=25, sender=SENDER)
    with pytest.raises(TransportError) as caught:
        await send_email(cfg, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY)
    assert caught.value.permanent is True


async def test_header_injection_is_refused_before_sending(relay: Relay) -> None:
    with pytest.raises(TransportError) as caught:
        await send_email(relay.config(), TO, REPLY_TO, "x\r\nBcc: evil@example.com", "b\n", KEY)
    assert caught.value.permanent is True
    assert relay.handler.received == []


# --- STARTTLS on a loopback relay -----------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ssl.SSLContext]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t"]
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield context


async def test_loopback_relay_with_self_signed_starttls_still_gets_mail(
    self_signed: ssl.SSLContext,
) -> None:
    # Like Debian's postfix with its snakeoil certificate on 127.0.0.1:25:
    # STARTTLS is offered, but verifying it would fail every notice.
    handler = Handler()
    server = await _serve(
        lambda: SMTPServer(handler, hostname="relay.test", tls_context=self_signed)
    )
    try:
        cfg = NotifyConfig(smtp_host="127.0.0.1", smtp_port=_port(server), sender=SENDER)
        await send_email(cfg, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "b\n", KEY)
    finally:
        server.close()
        await server.wait_closed()
    assert len(handler.received) == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.0.0.5", False),
        ("smtp.example.jp", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


# --- message building ---------------------------------------------------------


def test_message_layout_is_stable() -> None:
    when = datetime(2026, 11, 20, 9, 10, tzinfo=timezone(timedelta(hours=9)))
    msg = build_message(SENDER, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "本文\n", KEY, when)
    assert msg["Date"] == "Fri, 20 Nov 2026 09:10:00 +0900"
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert bytes(msg) == bytes(
        build_message(SENDER, TO, REPLY_TO, "[INC-1] info C-1 S1 X", "本文\n", KEY, when)
    )
