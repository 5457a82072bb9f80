"""The native express report mail (SPEC 3.3, item 1): parse and build.

    Subject: [EXPRESS-REPORT] JPN0012345 critical PSU-0003

    Report-Id: b2f0c6e1-0d7e-4a53-9d43-1c1d7e0a9f10
    Serial: JPN0012345
    ...
    Message: Power supply 1 failure detected
    Signature: 3f9a…

The body is authoritative (the signature covers its values); the subject
fills in a serial, severity or code the body lacks.  A subject serial that
contradicts the body's is refused: the serial decides which customer is
called, and a mismatch means the mail was mangled or forged.  Values are
stripped of surrounding blanks.  A multi-line `Message` continues on lines
starting with a space or tab (header-style folding); the fold removes that
one leading blank and joins the lines with `\n`.  Everything is validated by
the same code as the JSON schema (`alarm_json.decode_object`), so a report
means the same whichever channel it came by.
"""

from __future__ import annotations

import base64
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

from monitor.formats.alarm_json import Invalid, decode_object
from monitor.model import AlarmReport

SUBJECT_TAG = "[EXPRESS-REPORT]"

# Body key (lower-cased) → 3.1 field.
_KEYS: dict[str, str] = {
    "report-id": "id",
    "serial": "serial",
    "model": "model",
    "host": "host",
    "occurred": "occurred",
    "severity": "severity",
    "component": "component",
    "code": "code",
    "message": "message",
    "signature": "sig",
}


def is_express_subject(subject: str) -> bool:
    return subject.lstrip()[: len(SUBJECT_TAG)].upper() == SUBJECT_TAG


def body_fields(lines: list[str]) -> dict[str, str]:
    """The known `Key: value` lines of a body, as 3.1 field names."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if last == "message" and line.strip():
                fields["message"] += "\n" + line[1:].rstrip()
            continue
        key, colon, value = line.partition(":")
        field = _KEYS.get(key.strip().lower()) if colon else None
        if field is None or field in fields:
            last = None
            continue
        fields[field] = value.strip()
        last = field
    return fields


def looks_like_body(lines: list[str]) -> bool:
    """A subject-less text (legacy serial line) that is an express body."""
    fields = body_fields(lines)
    return "serial" in fields and "severity" in fields and "code" in fields


def parse_express(subject: str, lines: list[str], fallback_id: str) -> AlarmReport | Invalid:
    """Subject + body lines → a validated report (or why not).

    `fallback_id` is used when the body has no Report-Id (the Message-ID, or
    the sha256 of the body when even that is missing).
    """
    fields = body_fields(lines)
    words = subject.lstrip()[len(SUBJECT_TAG) :].split() if is_express_subject(subject) else []
    for name, value in zip(("serial", "severity", "code"), words, strict=False):
        if name not in fields:
            fields[name] = value
    if words and words[0] != fields["serial"]:
        return Invalid(
            "invalid", f"subject serial {words[0][:64]!r} != body serial {fields['serial'][:64]!r}"
        )
    obj: dict[str, object] = {"v": 1, **fields}
    if not fields.get("id"):
        obj["id"] = fallback_id
    if "severity" in fields:
        # 3.1 severities are lower-case words; accept `Critical` from
        # hand-written senders rather than lose their alarm.
        obj["severity"] = fields["severity"].lower()
    if not fields.get("occurred"):
        obj.pop("occurred", None)
    return decode_object(obj)


def express_body(report: AlarmReport) -> str:
    """The body text of a report, in the order SPEC 3.3 lists the keys."""
    message = "\n ".join(report.message.split("\n"))
    lines = [
        f"Report-Id: {report.id}",
        f"Serial: {report.serial}",
        f"Model: {report.model}",
        f"Host: {report.host}",
        f"Occurred: {report.occurred_raw}",
        f"Severity: {report.severity}",
        f"Component: {report.component}",
        f"Code: {report.code}",
        f"Message: {message}",
    ]
    if report.sig:
        lines.append(f"Signature: {report.sig}")
    return "\r\n".join(lines) + "\r\n"


def build_express_mail(
    report: AlarmReport,
    *,
    sender: str,
    to: str,
    charset: str = "utf-8",
    message_id: str | None = None,
    date: datetime | None = None,
) -> bytes:
    """A complete RFC 5322 express report mail (agents, simulator, tests).

    `charset` is `utf-8` (base64 when not ASCII), `iso-2022-jp` (7bit, what
    Japanese mailers send) or `shift_jis` (CP932, base64); a message the
    charset cannot hold raises UnicodeEncodeError (pick utf-8 then).
    """
    subject = f"{SUBJECT_TAG} {report.serial} {report.severity} {report.code}"
    body = express_body(report)
    codec = {"utf-8": "utf-8", "iso-2022-jp": "iso2022_jp", "shift_jis": "cp932"}[charset.lower()]
    data = body.encode(codec)
    if data.isascii():
        cte, payload = "7bit", data
    else:
        cte = "base64"
        payload = base64.encodebytes(data).replace(b"\n", b"\r\n")
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        "MIME-Version: 1.0",
        f"Content-Type: text/plain; charset={charset}",
        f"Content-Transfer-Encoding: {cte}",
    ]
    if date is not None:
        headers.append(f"Date: {format_datetime(date)}")
    if message_id is not None:
        headers.append(f"Message-ID: <{message_id}>")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + payload
