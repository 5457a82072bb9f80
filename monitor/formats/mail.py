"""Mail → alarms, an acknowledgement, or a reject reason (SPEC 3.3). Sans-I/O.

`parse_mail` is what the SMTP listener calls for each DATA; `parse_text` is
what the serial line calls for a legacy agent's unframed text.  Both are
pure and total: any input gives exactly one outcome, never an exception.

Order of checks (first match wins):

1. size (`too-large`);
2. `[INC-<n>]` in the Subject: a contact's reply, so an acknowledgement —
   checked before anything else because a reply quotes the alarm it answers
   and must not raise it again; automatic replies (out-of-office, bounces)
   are refused (`auto-reply`) because nobody read the notice;
3. `[EXPRESS-REPORT]` subject: the native format;
4. any `application/json` part: 3.1 objects;
5. vendor formats: HP AlertMail (subject), smartd (subject), mdadm (subject
   or sentence), iLO, iDRAC, ESMPRO (body), each mapped by SPEC 3.3's table
   and bound to a configured device (`DeviceIndex.resolve`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from monitor.formats import mime
from monitor.formats.alarm_json import Invalid, decode_alarm
from monitor.formats.charset import decode_bytes
from monitor.formats.devices import DeviceIndex
from monitor.formats.esmpro import parse_esmpro
from monitor.formats.express import is_express_subject, looks_like_body, parse_express
from monitor.formats.hp import parse_alertmail, parse_ilo
from monitor.formats.idrac import parse_idrac
from monitor.formats.mailtext import MAX_FIELD, Extracted, FormatError, MailText, address_of
from monitor.formats.mdadm import parse_mdadm
from monitor.formats.smartd import parse_smartd
from monitor.model import AlarmReport

MAX_MAIL_BYTES = 1_048_576  # the [smtp] max_message_bytes default
MAX_TEXT_BYTES = 65_536  # SPEC 3.5: a legacy serial text is buffered up to 64 KiB

# Reject reason codes (documented in docs/formats.md; also metric labels).
REASONS: dict[str, str] = {
    "too-large": "over the size limit",
    "unrecognised": "no known format",
    "unknown-device": "a vendor format, but no configured device matches it",
    "invalid": "a known format with missing or bad fields",
    "bad-charset": "text undecodable in its declared charset and every fallback, "
    "and no format recognised",
    "auto-reply": "an automatic reply (out-of-office, bounce) to a notice",
    "parser-error": "a bug in a parser; the mail is quarantined for a report",
}


@dataclass(frozen=True, slots=True)
class MailReports:
    """The mail carried these alarms (one for every format but JSON)."""

    format: str  # express | json | esmpro | hp | ilo | idrac | smartd | mdadm
    reports: list[AlarmReport]


@dataclass(frozen=True, slots=True)
class MailAck:
    """A contact's reply acknowledging incident `INC-<incident_id>`."""

    incident_id: int
    sender: str  # lower-cased address: From, else the envelope sender


@dataclass(frozen=True, slots=True)
class MailReject:
    reason: str  # a key of REASONS
    detail: str  # for the log and the SMTP reply text; never contains CR/LF


MailOutcome = MailReports | MailAck | MailReject

_INC = re.compile(r"\[INC-(\d{1,18})\]", re.IGNORECASE)
_MSGID = re.compile(r"<([^<>]*)>")
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})

# Vendor parsers in the order they are tried: cheap subject matches first.
_VENDOR: tuple[Callable[[MailText], Extracted | FormatError | None], ...] = (
    parse_alertmail,
    parse_smartd,
    parse_mdadm,
    parse_ilo,
    parse_idrac,
    parse_esmpro,
)


def parse_mail(
    raw: bytes, envelope_from: str, index: DeviceIndex, *, max_bytes: int = MAX_MAIL_BYTES
) -> MailOutcome:
    """One received mail (its DATA bytes) → outcome.

    `envelope_from` is the SMTP MAIL FROM address ("" or "<>" for the null
    sender of bounces).
    """
    if len(raw) > max_bytes:
        return MailReject("too-large", f"{len(raw)} bytes > {max_bytes}")
    try:
        return _parse_mail(raw, envelope_from, index)
    except Exception as exc:  # bad input is data, never a crash
        return MailReject("parser-error", _clean(f"{type(exc).__name__}: {exc}"))


def parse_text(data: bytes, index: DeviceIndex, *, max_bytes: int = MAX_TEXT_BYTES) -> MailOutcome:
    """A legacy agent's unframed text from a serial line, parsed like a mail body.

    The report id is the sha256 of the text.  A text that starts with mail
    headers including a Subject is parsed as the whole mail it is; a text
    that is a bare JSON object is read as a 3.1 alarm.
    """
    if len(data) > max_bytes:
        return MailReject("too-large", f"{len(data)} bytes > {max_bytes}")
    try:
        return _parse_text(data, index)
    except Exception as exc:  # bad input is data, never a crash
        return MailReject("parser-error", _clean(f"{type(exc).__name__}: {exc}"))


def _parse_mail(raw: bytes, envelope_from: str | None, index: DeviceIndex) -> MailOutcome:
    parts = mime.split(raw)
    headers = parts.headers
    subject = mime.decode_header_value(headers.get("subject", ""))
    mail = MailText(subject, parts.text, headers.get("from", ""), headers.get("date", ""))

    inc = _INC.search(subject)
    if inc is not None and int(inc.group(1)) > 0:
        return _ack(int(inc.group(1)), mail, headers, parts.content_type, envelope_from)

    message_id = _message_id(headers.get("message-id", ""))
    fallback_id = message_id or hashlib.sha256(parts.body_raw).hexdigest()

    if is_express_subject(subject):
        return _express(subject, mail, fallback_id)
    if parts.json_parts:
        return _json(parts.json_parts)
    senders = [envelope_from or "", mail.from_header]
    outcome = _vendor(mail, index, senders, fallback_id)
    if outcome is None:
        if not parts.text_ok:
            return MailReject("bad-charset", _clean(f"undecodable text; subject {subject[:80]!r}"))
        return MailReject("unrecognised", _clean(f"subject {subject[:80]!r}"))
    return outcome


def _parse_text(data: bytes, index: DeviceIndex) -> MailOutcome:
    if _looks_like_mail(data):
        return _parse_mail(data, None, index)
    text, ok = decode_bytes(data, None)
    mail = MailText("", text.replace("\r\n", "\n"))
    fallback_id = hashlib.sha256(data).hexdigest()
    if looks_like_body(mail.lines()):
        return _express("", mail, fallback_id)
    if text.lstrip().startswith("{"):
        return _json([text.strip().encode("utf-8", "surrogatepass")])
    outcome = _vendor(mail, index, [], fallback_id)
    if outcome is None:
        return MailReject("unrecognised" if ok else "bad-charset", "legacy text: no known format")
    return outcome


def _looks_like_mail(data: bytes) -> bool:
    """A text that starts with a header block (every line `Name: …` or folded)
    holding a Subject: a legacy agent printing a whole mail."""
    head, _ = mime.split_head(data)
    lines = [line for line in head.split(b"\n") if line.strip()]
    if not lines:
        return False
    subject = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            continue
        if _HEADER_LINE.match(line) is None:
            return False
        subject = subject or line[:8].lower() == b"subject:"
    return subject


def _ack(
    incident: int,
    mail: MailText,
    headers: dict[str, str],
    content_type: str,
    envelope_from: str | None,
) -> MailOutcome:
    why = _automatic(headers, content_type, envelope_from)
    if why is not None:
        return MailReject("auto-reply", _clean(f"INC-{incident}: {why}"))
    sender = mail.sender() or address_of(envelope_from or "")
    return MailAck(incident, sender)


def _automatic(headers: dict[str, str], content_type: str, envelope_from: str | None) -> str | None:
    """Why a reply is machine-made (RFC 3834 and common practice), or None."""
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto[:40]}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if name in headers:
            return f"{name} header"
    if headers.get("precedence", "").strip().lower() in _AUTO_PRECEDENCE:
        return "Precedence: " + headers["precedence"].strip()[:20]
    if content_type == "multipart/report":
        return "a delivery or read report"
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return "null envelope sender (a bounce)"
    return None


def _message_id(value: str) -> str:
    m = _MSGID.search(value)
    text = (m.group(1) if m is not None else value).strip()
    text = "".join(text.split())
    if len(text) > MAX_FIELD:
        # Over the schema's id limit: its digest is just as unique.
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _express(subject: str, mail: MailText, fallback_id: str) -> MailOutcome:
    report = parse_express(subject, mail.lines(), fallback_id)
    if isinstance(report, Invalid):
        return MailReject(report.reason, _clean(f"express: {report.detail}"))
    return MailReports("express", [report])


def _json(payloads: list[bytes]) -> MailOutcome:
    # All or nothing: the SMTP reply is one code for the whole mail, and a
    # partly-refused mail must reach quarantine whole for someone to look at.
    reports: list[AlarmReport] = []
    for i, payload in enumerate(payloads):
        try:
            report = decode_alarm(payload)
        except UnicodeDecodeError:
            # msgspec raises this (not DecodeError) for bad UTF-8 in a string.
            report = Invalid("invalid", "JSON is not UTF-8")
        if isinstance(report, Invalid):
            return MailReject(report.reason, _clean(f"JSON part {i + 1}: {report.detail}"))
        reports.append(report)
    return MailReports("json", reports)


def _vendor(
    mail: MailText, index: DeviceIndex, senders: list[str], fallback_id: str
) -> MailOutcome | None:
    for parse in _VENDOR:
        found = parse(mail)
        if found is None:
            continue
        if isinstance(found, FormatError):
            return MailReject("invalid", _clean(f"{found.format}: {found.detail}"))
        resolution = index.resolve((mail.subject, mail.body), [s for s in senders if s])
        if resolution is None:
            who = mail.sender() or (senders[0] if senders else "") or "?"
            return MailReject(
                "unknown-device",
                _clean(f"{found.format} mail from {who}, host {found.host or '?'}: no device"),
            )
        device = resolution.device
        report = AlarmReport(
            id=fallback_id,
            serial=device.serial,
            severity=found.severity,
            code=found.code,
            message=found.message,
            # The configured model and host are the stable names; what the
            # mail calls itself (ESMPRO's 製品名, an FQDN) only fills gaps.
            model=device.model or found.model,
            host=device.host or found.host,
            occurred=found.occurred,
            occurred_raw=found.occurred_raw,
            component=found.component,
        )
        return MailReports(found.format, [report])
    return None


def _clean(text: str) -> str:
    """One printable line (SMTP reply text, log fields)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:200]
