"""Shared pieces of the SMTP listener tests: config sections, a blocking
smtplib client (run in a thread from async tests), database reads."""

from __future__ import annotations

import smtplib
import sqlite3
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.formats.express import build_express_mail
from monitor.model import AlarmReport
from tests.fixtures.mail.devices import DEVICES
from tests.support.ports import free_port

ACCEPT = "alarms@monitor.example"
CONTACT = "sato@example.jp"  # a contact of C-0100 (MAIL000001's contract)
OTHER = "other@example.jp"  # a contact of C-0200 only
SERIAL = "MAIL000001"

# Contracts and devices the mail tests need beyond tests/support/daemon.py's
# BASE: a 24x7 contract whose contact has an e-mail address (replies), and
# the devices the fixture mails (tests/fixtures/mail) name.
CONTRACTS = """
[[contracts]]
id = "C-0100"
customer = "Mail Reply KK"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
ack_timeout = "30m"
contacts = [
  { name = "Sato", email = "Sato@Example.JP" },
  { name = "Suzuki", email = "suzuki@example.jp" },
]

[[contracts]]
id = "C-0200"
customer = "Another Customer"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
contacts = [ { name = "Other", email = "other@example.jp" } ]

[[contracts]]
id = "C-0004"
customer = "Dell shop"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
contacts = [ { name = "D", email = "d@example.jp" } ]

[[contracts]]
id = "C-0005"
customer = "Linux shop"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
contacts = [ { name = "L", email = "l@example.jp" } ]

[[devices]]
serial = "MAIL000001"
model = "N8100-2801"
host = "mail01"
contract = "C-0100"
"""


def _devices_toml() -> str:
    out = []
    for d in DEVICES:
        if d.serial == "JPN0012345":  # already in BASE
            continue
        senders = ", ".join(f'"{s}"' for s in d.senders)
        out.append(
            f'[[devices]]\nserial = "{d.serial}"\nmodel = "{d.model}"\nhost = "{d.host}"\n'
            f'contract = "{d.contract}"\nsenders = [{senders}]\n'
        )
    return "\n".join(out)


def smtp_extra(port: int, **settings: Any) -> str:
    """An [smtp] section (listen on `port`) plus CONTRACTS and the fixture devices."""
    lines = [
        "[smtp]",
        f'listen = "127.0.0.1:{port}"',
        f'accept = ["{ACCEPT}", "Second@Monitor.Example"]',
    ]
    settings.setdefault("max_message_bytes", 65536)
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(value)}]")
        else:
            lines.append(f"{key} = {value}")
    return "\n" + "\n".join(lines) + "\n" + CONTRACTS + "\n" + _devices_toml()


def new_port() -> int:
    return free_port()


def express(
    report_id: str,
    *,
    serial: str = SERIAL,
    severity: str = "major",
    code: str = "PSU-0003",
    component: str = "PSU1",
    message: str = "Power supply 1 failure detected",
    message_id: str | None = None,
) -> bytes:
    report = AlarmReport(
        id=report_id,
        serial=serial,
        severity=severity,
        code=code,
        message=message,
        model="N8100-2801",
        host="mail01",
        component=component,
    )
    return build_express_mail(
        report, sender="agent@mail01.example.jp", to=ACCEPT, message_id=message_id
    )


def reply(incident: int, sender: str, *, extra_headers: str = "") -> bytes:
    return (
        f"From: Someone <{sender}>\r\nTo: {ACCEPT}\r\n"
        f"Subject: Re: [INC-{incident}] major C-0100 {SERIAL} PSU-0003\r\n"
        f"Message-ID: <reply-{incident}-{sender}@example.jp>\r\n{extra_headers}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nOn it.\r\n"
    ).encode()


@dataclass
class Client:
    """A blocking smtplib session; every method is meant for asyncio.to_thread."""

    port: int
    tls: ssl.SSLContext | None = None
    smtp: smtplib.SMTP = field(init=False)

    def __post_init__(self) -> None:
        self.smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
        self.smtp.ehlo("test.example")

    def send(
        self, raw: bytes, *, mail_from: str = "agent@mail01.example.jp", rcpt: str = ACCEPT
    ) -> tuple[int, str]:
        """MAIL, RCPT, DATA: the first reply that is not 2xx/3xx, else DATA's."""
        code, msg = self.smtp.mail(mail_from)
        if code != 250:
            self._rset(code)
            return code, msg.decode()
        code, msg = self.smtp.rcpt(rcpt)
        if code != 250:
            self._rset(code)
            return code, msg.decode()
        code, msg = self.smtp.data(raw)
        return code, msg.decode()

    def _rset(self, code: int) -> None:
        if code != 421:  # 421: the server has closed the session
            self.smtp.rset()

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


def send_one(port: int, raw: bytes, **kwargs: Any) -> tuple[int, str]:
    client = Client(port)
    try:
        return client.send(raw, **kwargs)
    finally:
        client.close()


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()
