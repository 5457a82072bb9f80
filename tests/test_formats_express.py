"""The express report mail: what build_express_mail writes, parse_mail reads back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from monitor.formats.alarm_json import sign, verify_sig
from monitor.formats.express import body_fields, build_express_mail, express_body
from monitor.formats.mail import MailReports, parse_mail
from monitor.model import AlarmReport
from tests.fixtures.mail.devices import INDEX, SECRET

JST = timezone(timedelta(hours=9))


def report(message: str = "電源ユニット1の障害 ① を検出しました", **kw: str) -> AlarmReport:
    base = AlarmReport(
        id="r-1",
        serial="JPN0012345",
        severity="critical",
        code="PSU-0003",
        message=message,
        model="N8100-2801",
        host="db01",
        occurred=datetime(2026, 11, 20, 17, 45, 12, tzinfo=JST),
        occurred_raw="2026-11-20T17:45:12+09:00",
        component="PSU1",
    )
    fields = {f: getattr(base, f) for f in base.__slots__}
    fields.update(kw)
    return AlarmReport(**fields)


def roundtrip(r: AlarmReport, charset: str) -> AlarmReport:
    raw = build_express_mail(
        r,
        sender="agent@db01.example.jp",
        to="alarms@monitor.example",
        charset=charset,
        message_id="mid-1@db01",
        date=datetime(2026, 11, 20, 17, 45, 13, tzinfo=JST),
    )
    outcome = parse_mail(raw, "agent@db01.example.jp", INDEX)
    assert isinstance(outcome, MailReports) and outcome.format == "express", outcome
    return outcome.reports[0]


@pytest.mark.parametrize("charset", ["utf-8", "shift_jis", "iso-2022-jp"])
def test_roundtrip_in_each_charset(charset: str) -> None:
    msg = "電源ユニット1の障害を検出しました" if charset == "iso-2022-jp" else None
    original = report(msg) if msg else report()
    signed = report(original.message, sig=sign(original, SECRET))
    back = roundtrip(signed, charset)
    assert back == signed
    assert verify_sig(back, SECRET)


def test_multiline_message_survives_and_verifies() -> None:
    original = report("line one\nline two\n  indented three")
    signed = report(original.message, sig=sign(original, SECRET))
    back = roundtrip(signed, "utf-8")
    assert back.message == original.message
    assert verify_sig(back, SECRET)


def test_empty_optional_fields_are_absent() -> None:
    r = AlarmReport(id="r-2", serial="JPN0012345", severity="info", code="C", message="m")
    back = roundtrip(r, "utf-8")
    assert back == r


def test_body_fields_first_wins_and_ignores_unknown_lines() -> None:
    lines = [
        "Hello,",
        "Serial: A",
        "serial: B",
        "X-Other: y",
        " continuation of nothing",
        "Message: first",
        " second",
        "",
        "CODE : c1",
    ]
    assert body_fields(lines) == {"serial": "A", "message": "first\nsecond", "code": "c1"}


def test_severity_case_is_forgiven() -> None:
    raw = (
        b"Subject: [EXPRESS-REPORT] JPN0012345 Critical X\r\n\r\n"
        b"Serial: JPN0012345\r\nSeverity: Critical\r\nCode: X\r\nMessage: m\r\n"
    )
    outcome = parse_mail(raw, "", INDEX)
    assert isinstance(outcome, MailReports) and outcome.reports[0].severity == "critical"


def test_express_body_order() -> None:
    keys = [line.split(":")[0] for line in express_body(report(sig="ab")).splitlines()]
    assert keys == [
        "Report-Id",
        "Serial",
        "Model",
        "Host",
        "Occurred",
        "Severity",
        "Component",
        "Code",
        "Message",
        "Signature",
    ]
