"""Mails as servers send them (SPEC 3.3), built from a trace record.

The record holds what the daemon should store (severity, component, code,
report id = the Message-ID); each builder writes the vendor's layout so
that SPEC 3.3's mapping gives those values back.  Layouts follow the
synthetic samples of FORMATS.md.  The device is named in the text the way
the format would (ESMPRO's 製造番号 line, iDRAC's Service Tag, HP's serial
line, smartd's and mdadm's host name); scenarios pick devices for which
that resolves to one device.

The native express mail comes from `monitor.formats.express` (the daemon's
own encoder), so the simulator and the parser cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

from monitor.formats.express import build_express_mail
from monitor.model import AlarmReport
from monitor_sim.trace import Record

CODECS = {"utf-8": "utf-8", "iso-2022-jp": "iso2022_jp", "shift_jis": "cp932", "us-ascii": "ascii"}

# ESMPRO alert types carry the severity word (SPEC 3.3 table).
_ESMPRO_WORD = {"critical": "異常", "warning": "警告", "info": "情報"}
# Reverse maps of the vendor severity words; one spelling per 3.1 severity.
_HP_WORD = {
    "critical": "CRITICAL",
    "major": "WARNING MAJOR",
    "minor": "WARNING MINOR",
    "warning": "WARNING",
    "clear": "NORMAL",
}
_ILO_WORD = {
    "critical": "Critical",
    "warning": "Caution",
    "info": "Informational",
    "clear": "Repaired",
}
_IDRAC_WORD = {"critical": "Critical", "warning": "Warning", "info": "Informational", "clear": "Ok"}


def report_of(rec: Record) -> AlarmReport:
    return AlarmReport(
        id=rec.id,
        serial=rec.serial,
        severity=rec.severity,
        code=rec.code,
        message=rec.message,
        model=rec.model,
        host=rec.host,
        occurred=None,
        occurred_raw=rec.occurred,
        component=rec.component,
        sig=rec.sig,
    )


def _date(rec: Record) -> datetime | None:
    return datetime.fromisoformat(rec.occurred) if rec.occurred else None


def _mail(headers: list[tuple[str, str]], text: str, charset: str) -> bytes:
    """Headers (ASCII or RFC 2047 already) + a text/plain body in `charset`."""
    body = text.replace("\r\n", "\n").replace("\n", "\r\n")
    data = body.encode(CODECS[charset])
    if charset == "shift_jis" or (charset == "utf-8" and not data.isascii()):
        cte, payload = "base64", base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif charset == "utf-8":
        cte, payload = "7bit", data
    else:
        cte, payload = "7bit", data  # iso-2022-jp and us-ascii are 7-bit already
    headers = [
        *headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", f"text/plain; charset={charset}"),
        ("Content-Transfer-Encoding", cte),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("ascii") + b"\r\n" + payload


def _common(rec: Record, sender: str, to: str, subject: str) -> list[tuple[str, str]]:
    headers = [("From", sender), ("To", to)]
    when = _date(rec)
    if when is not None:
        headers.append(("Date", format_datetime(when)))
    headers.append(("Message-ID", f"<{rec.id}>"))
    if not subject.isascii():
        subject = Header(
            subject, "iso-2022-jp" if rec.charset == "iso-2022-jp" else "utf-8"
        ).encode()
    headers.append(("Subject", subject))
    return headers


def express_mail(rec: Record, sender: str, to: str) -> bytes:
    return build_express_mail(
        report_of(rec),
        sender=sender,
        to=to,
        charset=rec.charset or "utf-8",
        message_id=f"mail-{rec.id}@sim.example",
        date=_date(rec),
    )


def json_mail(rec: Record, sender: str, to: str, payload: bytes) -> bytes:
    """A multipart mail with the 3.1 object as an application/json part."""
    boundary = "=_sim_" + binascii.hexlify(rec.id.encode()[:12]).decode()
    headers = [
        ("From", sender),
        ("To", to),
        ("Message-ID", f"<json-{rec.id}@sim.example>"),
        ("Subject", f"alarm {rec.serial}"),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    head = "".join(f"{n}: {v}\r\n" for n, v in headers)
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nAlarm attached.\r\n"
        f"--{boundary}\r\nContent-Type: application/json\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="alarm.json"\r\n\r\n'
        + base64.encodebytes(payload).decode("ascii").replace("\n", "\r\n")
        + f"--{boundary}--\r\n"
    )
    return (head + "\r\n").encode("ascii") + body.encode("ascii")


def esmpro_mail(rec: Record, sender: str, to: str) -> bytes:
    when = _date(rec) or datetime.fromisoformat("2026-01-01T00:00:00+09:00")
    word = _ESMPRO_WORD.get(rec.severity, "警告")
    text = (
        f"ESMPRO通報 製造番号 {rec.serial}\n"
        f"コンピュータ名 : {rec.host}\n"
        f"製品名 : Express5800/{rec.model}\n"
        f"発生日付 : {when.year}/{when.month}/{when.day}\n"
        f"発生時間 : {when:%H:%M:%S}\n"
        "[トラップ名]\n"
        f"{rec.message}\n"
        "[ソース名]\n"
        f"{rec.component}\n"
        "[イベントID]\n"
        f"{int(rec.code, 16) & 0xFFFF} ( {rec.code} )\n"
        "[詳細メッセージ]\n"
        f"{rec.message}\n"
        "[対処方法]\n"
        "保守員に連絡してください。\n"
        "[アラートタイプ]\n"
        f"{rec.component}({word})\n"
    )
    subject = f"ESMPRO通報 {rec.host}"
    return _mail(_common(rec, sender, to, subject), text, rec.charset or "iso-2022-jp")


def hp_mail(rec: Record, sender: str, to: str) -> bytes:
    seq = int(binascii.crc32(rec.id.encode())) % 1000
    subject = f"HP AlertMail-{seq:03d}: ({_HP_WORD[rec.severity]}) {rec.component}: {rec.code}"
    when = _date(rec)
    stamp = f"{when:%d %b %H:%M}" if when else "01 Jan 00:00"
    text = (
        f"EVENT ({stamp}): {rec.component} Status has changed to: {rec.code}.\n"
        f"Enclosure Serial Number: {rec.serial}\n"
        f"{rec.message}\n"
        "Enclosure Status: Degraded\n"
    )
    headers = _common(rec, sender, to, subject)
    headers += [("X-OS", "HP BladeSystem Enclosure Manager"), ("X-Priority", "1")]
    return _mail(headers, text, "us-ascii")


def ilo_mail(rec: Record, sender: str, to: str) -> bytes:
    subject = f"iLO AlertMail: {_ILO_WORD[rec.severity]} - {rec.component}"
    text = (
        f"Server Name: {rec.host}\n"
        f"Serial Number: {rec.serial}\n"
        f"Severity: {_ILO_WORD[rec.severity]}\n"
        f"Class: {rec.component}\n"
        f"Event Code: {rec.code}\n"
        f"Description: {rec.message}\n"
        "Count: 1\n"
    )
    return _mail(_common(rec, sender, to, subject), text, "utf-8")


def idrac_mail(rec: Record, sender: str, to: str) -> bytes:
    word = _IDRAC_WORD[rec.severity]
    subject = f"iDRAC alert on {rec.host or rec.serial}: {rec.code} {word}"
    text = (
        f"Message: {rec.message}\n"
        f"Message ID: {rec.code}\n"
        f"Severity: {word}\n"
        f"Category: System Health / {rec.component}\n"
        f"Host Name: {rec.host}\n"
        f"Service Tag: {rec.serial}\n"
        f"Model: {rec.model}\n"
    )
    return _mail(_common(rec, sender, to, subject), text, "utf-8")


def smartd_mail(rec: Record, sender: str, to: str) -> bytes:
    subject = f"SMART error ({rec.code}) detected on host: {rec.host}"
    text = (
        "This message was generated by the smartd daemon running on:\n\n"
        f"   host name:  {rec.host}\n"
        "   DNS domain: example.net\n\n"
        "The following warning/error was logged by the smartd daemon:\n\n"
        f"Device: {rec.component} [SAT], {rec.message}\n\n"
        "Device info:\n"
        f"Device: {rec.component} [SAT], EXAMPLE HDD 8TB, FW:EX01, 8.00 TB\n\n"
        "For details see host's SYSLOG.\n"
    )
    return _mail(_common(rec, sender, to, subject), text, "us-ascii")


def mdadm_mail(rec: Record, sender: str, to: str) -> bytes:
    subject = f"{rec.code} event on {rec.component}:{rec.host}"
    text = (
        "This is an automatically generated mail message from mdadm\n"
        f"running on {rec.host}\n\n"
        f"A {rec.code} event had been detected on md device {rec.component}.\n\n"
        "Faithfully yours, etc.\n"
    )
    return _mail(_common(rec, sender, to, subject), text, "us-ascii")


def newsletter_mail(rec: Record, sender: str, to: str) -> bytes:
    """Not an alarm at all: the daemon refuses it (`unrecognised`)."""
    text = "Dear customer,\nEverything is 20% off this week.\n"
    return _mail(_common(rec, sender, to, "Our autumn sale starts today"), text, "utf-8")


VENDOR: dict[str, Callable[[Record, str, str], bytes]] = {
    "esmpro": esmpro_mail,
    "hp": hp_mail,
    "ilo": ilo_mail,
    "idrac": idrac_mail,
    "smartd": smartd_mail,
    "mdadm": mdadm_mail,
}
