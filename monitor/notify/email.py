"""E-mail transport: one SMTP submission of a rendered notice per try.

The Message-ID is derived from the idempotency key, so every try of one
notice (including a resend after a crash) is the same message to mail
clients and archives, which collapse duplicates by Message-ID.
"""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate, parseaddr

import aiosmtplib

from monitor.model import NotifyConfig
from monitor.notify.errors import TransportError

MESSAGE_ID_DOMAIN = "express-monitor"

# aiosmtplib applies `timeout` to each step (connect, each command); the
# whole exchange is a handful of steps.  The outer limit stops a server that
# answers every command just in time from holding a notice for minutes.
_STEPS_PER_SEND = 4


def message_id(key: str) -> str:
    """`<key@express-monitor>`: the same for every try of one notice."""
    return f"<{key}@{MESSAGE_ID_DOMAIN}>"


def build_message(
    sender: str,
    to: str,
    reply_to: str | None,
    subject: str,
    body: str,
    key: str,
    date: datetime | None = None,
) -> EmailMessage:
    """The notice as a text/plain UTF-8 message (no I/O; tested on its own).

    Raises ValueError for header values that cannot be put in a message
    (a line break in an address or subject), which `send_email` reports as
    a permanent failure.
    """
    msg = EmailMessage()
    # The default policy RFC 2047-encodes non-ASCII header text on output.
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    if reply_to:
        # Replies go to the daemon's own [smtp] listener, where a reply with
        # [INC-<id>] in the subject acknowledges the incident (SPEC 3.3).
        msg["Reply-To"] = reply_to
    # Date is the wall-clock time the message leaves (a protocol fact, like
    # retry back-off), not the daemon clock; callers may pass it for tests.
    msg["Date"] = format_datetime(date) if date is not None else formatdate(localtime=True)
    msg["Message-ID"] = message_id(key)
    msg["X-Idempotency-Key"] = key
    # RFC 3834: tells vacation responders not to answer.  An out-of-office
    # reply keeps "[INC-<id>]" in its subject and would otherwise look like
    # an acknowledgement; the Exchange header does the same for Outlook.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    # base64 rather than 8bit: no reliance on the relay's 8BITMIME, and for
    # Japanese text it is shorter than quoted-printable.
    msg.set_content(body, subtype="plain", charset="utf-8", cte="base64")
    return msg


def _envelope_address(header_value: str) -> str:
    """The addr-spec of a From value that may carry a display name."""
    address = parseaddr(header_value)[1]
    return address or header_value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def send_email(
    cfg: NotifyConfig,
    to: str,
    reply_to: str | None,
    subject: str,
    body: str,
    key: str,
    timeout: float = 10.0,
) -> None:
    """Submit one notice to `[notify] smtp`; raise `TransportError` on failure.

    SMTP 5xx replies are permanent (the mailbox or the sender is refused);
    4xx replies, refused connections, dropped connections and timeouts are
    temporary.  STARTTLS is used when a remote relay offers it (certificate
    checked); a loopback relay is spoken to in plain text, since encryption
    adds nothing there and local MTAs commonly carry self-signed certificates.
    """
    if not cfg.smtp_host:
        raise TransportError("e-mail: no [notify] smtp relay configured", True)
    try:
        msg = build_message(cfg.sender, to, reply_to, subject, body, key)
    except ValueError as exc:
        raise TransportError(f"e-mail to {to}: unusable message: {exc}", True) from exc

    try:
        async with asyncio.timeout(timeout * _STEPS_PER_SEND):
            await aiosmtplib.send(
                msg,
                sender=_envelope_address(cfg.sender),
                recipients=[_envelope_address(to)],
                hostname=cfg.smtp_host,
                port=cfg.smtp_port,
                timeout=timeout,
                start_tls=False if _is_loopback(cfg.smtp_host) else None,
            )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        code = codes[0] if codes else None
        raise _from_code(f"e-mail to {to}: recipient refused: {exc.recipients}", code) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _from_code(
            f"e-mail to {to}: {type(exc).__name__}: {exc.code} {exc.message}", exc.code
        ) from exc
    except TimeoutError as exc:
        # Also aiosmtplib's own SMTPTimeoutError, a TimeoutError subclass.
        raise TransportError(f"e-mail to {to}: relay timed out: {exc}", False) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Connection refused/dropped, STARTTLS failures, no common auth...:
        # all things an operator can fix without the notice changing.
        raise TransportError(f"e-mail to {to}: {type(exc).__name__}: {exc}", False) from exc


def _from_code(message: str, code: int | None) -> TransportError:
    # 5xx: the relay refuses this message for good; anything else (4xx, or no
    # code at all) may pass later.
    permanent = code is not None and 500 <= code < 600
    return TransportError(message, permanent, status=code)
