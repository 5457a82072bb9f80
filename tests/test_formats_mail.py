"""parse_mail on the synthetic fixtures (tests/fixtures/mail) and on edge cases."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.formats.alarm_json import verify_sig
from monitor.formats.mail import (
    REASONS,
    MailAck,
    MailReject,
    MailReports,
    parse_mail,
    parse_text,
)
from monitor.model import AlarmReport
from tests.fixtures.mail import generate
from tests.fixtures.mail.devices import INDEX, SECRET

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mail"
JST = timezone(timedelta(hours=9))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def one(outcome: object, fmt: str) -> AlarmReport:
    assert isinstance(outcome, MailReports), outcome
    assert outcome.format == fmt
    assert len(outcome.reports) == 1
    return outcome.reports[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


# file → format, serial, severity, code, component, id (None: sha256 of body)
CASES: list[tuple[str, str, str, str, str, str, str | None]] = [
    # express, one per charset / transfer encoding
    (
        "express_utf8_qp.eml",
        "express",
        "JPN0012345",
        "critical",
        "PSU-0003",
        "PSU1",
        "b2f0c6e1-0d7e-4a53-9d43-1c1d7e0a9f10",
    ),
    (
        "express_iso2022jp.eml",
        "express",
        "JPN0012345",
        "warning",
        "MEM-0101",
        "DIMM5",
        "r-iso-0002",
    ),
    ("express_sjis_b64.eml", "express", "JPN0012345", "major", "FAN-0001", "FAN1", "r-sjis-0003"),
    (
        "express_eucjp_no_report_id.eml",
        "express",
        "JPN0012345",
        "clear",
        "FAN-0001",
        "FAN1",
        "agent-0004@db01.example.jp",
    ),
    ("json_multipart.eml", "json", "JPN0012345", "critical", "PSU-0003", "PSU1", "json-0001"),
    ("json_single.eml", "json", "JPN0012345", "critical", "PSU-0003", "PSU1", "json-0002"),
    # ESMPRO: host in the text / sender / serial in the text; every charset
    (
        "esmpro_iso2022jp.eml",
        "esmpro",
        "JPN0020014",
        "critical",
        "C0000837",
        "ESMCommonService",
        "esm-0001@srv-tky-014.example.jp",
    ),
    (
        "esmpro_relay_sjis_fullwidth.eml",
        "esmpro",
        "JPN0030002",
        "warning",
        "800003FE",
        "ESMCommonService",
        "esm-0002@osk.example.jp",
    ),
    (
        "esmpro_eucjp_qp.eml",
        "esmpro",
        "JPN0012345",
        "critical",  # (異常) beats the informational hex id 4…
        "40001004",
        "ESMDiskArray",
        "esm-0003@db01.example.jp",
    ),
    (
        "esmpro_cp50220_no_msgid.eml",
        "esmpro",
        "JPN0020014",
        "critical",
        "C0000899",
        "ESMCommonService",
        None,
    ),
    (
        "esmpro_utf8_undeclared.eml",
        "esmpro",
        "JPN0020014",
        "info",
        "1300",
        "ESMCommonService",
        "esm-0005@srv-tky-014.example.jp",
    ),
    (
        "esmpro_cp932_undeclared.eml",
        "esmpro",
        "JPN0020014",
        "critical",
        "C0000837",
        "ESMCommonService",
        "esm-0006@srv-tky-014.example.jp",
    ),
    # HP
    (
        "hp_alertmail_critical.eml",
        "hp",
        "CZJ1234567",
        "critical",
        "Failed",
        "Power Supply #4",
        "oa-417@ops.example.net",
    ),
    (
        "hp_alertmail_normal.eml",
        "hp",
        "CZJ1234567",
        "clear",
        "OK",
        "Fan #6",
        "oa-002@ops.example.net",
    ),
    (
        "hp_alertmail_warning_major.eml",
        "hp",
        "CZJ1234567",
        "major",
        "Overload",
        "Enclosure Power",
        "oa-003@ops.example.net",
    ),
    (
        "ilo_critical.eml",
        "ilo",
        "CZ2J0A1B2C",
        "critical",
        "0x1A3",
        "Hardware Failure",
        "ilo-77@oob.example.org",
    ),
    # Dell
    (
        "idrac_psu.eml",
        "idrac",
        "7QX2K3M",
        "critical",
        "PSU0003",
        "PSU",
        "idrac-psu-1@oob.example.com",
    ),
    (
        "idrac_fan_alternative.eml",
        "idrac",
        "4ZT9P2L",
        "warning",
        "FAN0001",
        "FAN",
        "idrac-fan-1@app11.example.com",
    ),
    (
        "drac4_temperature.eml",
        "idrac",
        "3HJK9L1",
        "critical",
        "Temperature sensor reading above critical threshold",
        "",
        "drac4-1@mgmt.example.com",
    ),
    # smartd
    (
        "smartd_pending.eml",
        "smartd",
        "NAS02-0001",
        "major",
        "CurrentPendingSector",
        "/dev/sdc",
        "smartd-CurrentPendingSector@nas02.example.net",
    ),
    (
        "smartd_temperature.eml",
        "smartd",
        "DB07-0001",
        "warning",
        "Temperature",
        "/dev/nvme0",
        "smartd-Temperature@db07.example.net",
    ),
    (
        "smartd_emailtest.eml",
        "smartd",
        "APP01-0001",
        "info",
        "EmailTest",
        "/dev/sda",
        "smartd-EmailTest@app01.example.net",
    ),
    # mdadm
    (
        "mdadm_fail.eml",
        "mdadm",
        "FS01-0001",
        "major",
        "Fail",
        "/dev/md1",
        "mdadm-mdadm_fail.eml@example.org",
    ),
    (
        "mdadm_degraded.eml",
        "mdadm",
        "NAS09-0001",
        "major",
        "DegradedArray",
        "/dev/md/data",
        "mdadm-mdadm_degraded.eml@example.org",
    ),
    (
        "mdadm_rebuildfinished.eml",
        "mdadm",
        "WEB12-0001",
        "clear",
        "RebuildFinished",
        "/dev/md0",
        "mdadm-mdadm_rebuildfinished.eml@example.org",
    ),
]


@pytest.mark.parametrize(
    ("name", "fmt", "serial", "severity", "code", "component", "report_id"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_fixture(
    name: str,
    fmt: str,
    serial: str,
    severity: str,
    code: str,
    component: str,
    report_id: str | None,
) -> None:
    raw = load(name)
    report = one(parse_mail(raw, "sender@example.net", INDEX), fmt)
    assert (report.serial, report.severity, report.code, report.component) == (
        serial,
        severity,
        code,
        component,
    )
    assert report.id == (report_id if report_id is not None else sha(body_of(raw)))
    assert report.message
    assert len(report.message) <= 8192


def test_every_fixture_is_covered() -> None:
    named = {c[0] for c in CASES} | {
        "reply_inc.eml",
        "autoreply_inc.eml",
        "unknown_newsletter.eml",
        "bad_charset.eml",
    }
    assert {p.name for p in FIXTURES.glob("*.eml")} == named


def test_fixtures_match_their_generator() -> None:
    for name, data in generate.fixtures().items():
        assert load(name) == data, f"{name} is stale: run tests/fixtures/mail/generate.py"


# ---- field details ---------------------------------------------------------


def test_express_fields_and_signature() -> None:
    report = one(parse_mail(load("express_utf8_qp.eml"), "", INDEX), "express")
    assert report.message == "電源ユニット1の障害を検出しました (Power supply 1 failure detected)"
    assert report.model == "N8100-2801"
    assert report.host == "db01"
    assert report.occurred == datetime(2026, 11, 20, 17, 45, 12, tzinfo=JST)
    assert report.occurred_raw == "2026-11-20T17:45:12+09:00"
    assert verify_sig(report, SECRET)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("express_iso2022jp.eml", "メモリ訂正可能エラーがしきい値を超えました"),
        ("express_sjis_b64.eml", "①番ファンが停止しました"),  # CP932-only character
        ("express_eucjp_no_report_id.eml", "ファンが回復しました"),
    ],
)
def test_express_japanese_messages(name: str, message: str) -> None:
    assert one(parse_mail(load(name), "", INDEX), "express").message == message


def test_esmpro_fields() -> None:
    report = one(parse_mail(load("esmpro_iso2022jp.eml"), "", INDEX), "esmpro")
    assert report.message == "電源ユニット2で障害を検出しました。"
    # 発生日付/発生時間 are local times of an unnamed zone: text kept, no guess.
    assert report.occurred is None
    assert report.occurred_raw == "2025/7/3 02:41:17"
    # The configured names win over what the mail calls itself.
    assert (report.host, report.model) == ("srv-tky-014", "N8100-2500")


def test_esmpro_relay_stamp_has_a_zone() -> None:
    report = one(parse_mail(load("esmpro_relay_sjis_fullwidth.eml"), "", INDEX), "esmpro")
    assert report.occurred == datetime(2025, 11, 20, 23, 5, tzinfo=JST)
    assert report.occurred_raw == "2025年11月20日 23:05 (+09:00)"
    # The stamp line is not the message.
    assert report.message == "DIMM #5 で訂正可能エラーがしきい値を超えました。"


def test_esmpro_nec_special_characters_in_iso2022jp() -> None:
    report = one(parse_mail(load("esmpro_cp50220_no_msgid.eml"), "", INDEX), "esmpro")
    assert report.message == "①番ファンの回転数が低下しました。"


def test_hp_time_from_date_header() -> None:
    report = one(parse_mail(load("hp_alertmail_critical.eml"), "", INDEX), "hp")
    assert report.occurred == datetime(2025, 3, 4, 3, 12, 9, tzinfo=JST)
    assert report.message == "Power Supply #4: Failed"


def test_idrac_fields() -> None:
    report = one(parse_mail(load("idrac_psu.eml"), "", INDEX), "idrac")
    assert report.message == "The power input for power supply 2 is lost."
    assert report.occurred is None and report.occurred_raw == "2025-06-02 08:14:55"


def test_ilo_fields() -> None:
    report = one(parse_mail(load("ilo_critical.eml"), "", INDEX), "ilo")
    assert report.message == "Uncorrectable Memory Error detected on Processor 2 DIMM 7."
    assert report.occurred_raw == "05/19/2025 14:02"


def test_smartd_and_mdadm_messages() -> None:
    smart = one(parse_mail(load("smartd_pending.eml"), "", INDEX), "smartd")
    assert smart.message == "Device: /dev/sdc [SAT], 16 Currently unreadable (pending) sectors"
    assert smart.occurred == datetime(2025, 10, 1, 4, 0, tzinfo=UTC)
    md = one(parse_mail(load("mdadm_fail.eml"), "", INDEX), "mdadm")
    assert md.message == "Fail event on md device /dev/md1 (component device /dev/sdb2)"


# ---- acknowledgements --------------------------------------------------------


def test_reply_acks_even_though_it_quotes_an_express_report() -> None:
    outcome = parse_mail(load("reply_inc.eml"), "sato@example.jp", INDEX)
    assert outcome == MailAck(42, "sato@example.jp")


def test_autoreply_does_not_ack() -> None:
    outcome = parse_mail(load("autoreply_inc.eml"), "sato@example.jp", INDEX)
    assert isinstance(outcome, MailReject) and outcome.reason == "auto-reply"


def _reply(subject: str, *extra: str, sender: str = "From: Ops <ops@example.jp>") -> bytes:
    head = "\r\n".join([sender, f"Subject: {subject}", *extra])
    return (head + "\r\n\r\nok\r\n").encode()


@pytest.mark.parametrize(
    ("subject", "incident"),
    [
        ("Re: [INC-7] critical C-0001 JPN0012345 PSU-0003", 7),
        ("RE: RE: [inc-123456] warning", 123456),
        ("[EXPRESS-REPORT] JPN0012345 critical X [INC-9]", 9),  # the ack check comes first
        ("=?utf-8?b?6L+U5L+hOiBbSU5DLTExXQ==?=", 11),  # 返信: [INC-11], RFC 2047
    ],
)
def test_inc_subjects(subject: str, incident: int) -> None:
    assert parse_mail(_reply(subject), "bounce@example.jp", INDEX) == MailAck(
        incident, "ops@example.jp"
    )


def test_ack_sender_falls_back_to_envelope() -> None:
    raw = b"Subject: Re: [INC-5] x\r\n\r\nack\r\n"
    assert parse_mail(raw, "Oncall@Example.JP", INDEX) == MailAck(5, "oncall@example.jp")


@pytest.mark.parametrize(
    ("extra", "envelope"),
    [
        ("Precedence: bulk", "ops@example.jp"),
        ("X-Autoreply: yes", "ops@example.jp"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=x", "ops@x.jp"),
        ("X-Mailer: test", ""),  # null envelope sender: a bounce
        ("X-Mailer: test", "<>"),
    ],
)
def test_automatic_replies(extra: str, envelope: str) -> None:
    outcome = parse_mail(_reply("Undeliverable: [INC-5] critical", extra), envelope, INDEX)
    assert isinstance(outcome, MailReject) and outcome.reason == "auto-reply"


def test_inc_zero_is_not_an_incident() -> None:
    outcome = parse_mail(_reply("Re: [INC-0] hello"), "ops@example.jp", INDEX)
    assert isinstance(outcome, MailReject) and outcome.reason == "unrecognised"


# ---- rejects -----------------------------------------------------------------


def reason(outcome: object) -> str:
    assert isinstance(outcome, MailReject), outcome
    assert outcome.reason in REASONS
    assert "\n" not in outcome.detail and "\r" not in outcome.detail
    return outcome.reason


def test_unrecognised_and_bad_charset() -> None:
    assert reason(parse_mail(load("unknown_newsletter.eml"), "", INDEX)) == "unrecognised"
    assert reason(parse_mail(load("bad_charset.eml"), "", INDEX)) == "bad-charset"
    assert reason(parse_mail(b"", "", INDEX)) == "unrecognised"


def test_too_large() -> None:
    raw = load("express_utf8_qp.eml")
    assert reason(parse_mail(raw, "", INDEX, max_bytes=100)) == "too-large"
    assert isinstance(parse_mail(raw, "", INDEX, max_bytes=len(raw)), MailReports)


def test_unknown_device() -> None:
    raw = load("esmpro_iso2022jp.eml").replace(b"SRV-TKY-014", b"SRV-XYZ-999")
    raw = raw.replace(b"srv-tky-014", b"srv-xyz-999")
    assert reason(parse_mail(raw, "nobody@example.jp", INDEX)) == "unknown-device"


def express_mail(
    body: str, subject: str = "[EXPRESS-REPORT] JPN0012345 critical PSU-0003"
) -> bytes:
    return f"Subject: {subject}\r\nMessage-ID: <m1@x>\r\n\r\n{body}".encode()


@pytest.mark.parametrize(
    "body",
    [
        "Serial: JPN0012345\nSeverity: critical\nCode: X\n",  # no Message
        "Serial: JPN0012345\nSeverity: dire\nCode: X\nMessage: m\n",  # bad severity
        "Serial: JPN0012345\nSeverity: critical\nCode: X\nMessage: m\nOccurred: yesterday\n",
        "Serial: JPN0012345\nSeverity: critical\nCode: X\nMessage: m\nOccurred: 2026-01-01T00:00\n",
        "Serial: OTHER\nSeverity: critical\nCode: X\nMessage: m\n",  # subject/body mismatch
        "Serial: JPN0012345\nSeverity: critical\nCode: X\nMessage: " + "m" * 8193 + "\n",
    ],
)
def test_express_invalid(body: str) -> None:
    assert reason(parse_mail(express_mail(body), "", INDEX)) == "invalid"


def test_express_subject_fills_missing_fields() -> None:
    report = one(parse_mail(express_mail("Message: only a message\n"), "", INDEX), "express")
    assert (report.serial, report.severity, report.code, report.id) == (
        "JPN0012345",
        "critical",
        "PSU-0003",
        "m1@x",
    )


def test_json_part_invalid() -> None:
    raw = b'Subject: x\r\nContent-Type: application/json\r\n\r\n{"v": 1, "id": "x"}'
    assert reason(parse_mail(raw, "", INDEX)) == "invalid"
    raw = b"Subject: x\r\nContent-Type: application/json\r\n\r\nnot json"
    assert reason(parse_mail(raw, "", INDEX)) == "invalid"


def test_esmpro_without_event_id_is_invalid() -> None:
    raw = load("esmpro_utf8_undeclared.eml").replace(b"[\xe3\x82\xa4\xe3\x83\x99", b"[XX")
    assert reason(parse_mail(raw, "", INDEX)) == "invalid"


# ---- MIME and header details -------------------------------------------------


def test_message_id_fallback_and_long_ids() -> None:
    body = "Serial: JPN0012345\r\nSeverity: info\r\nCode: C\r\nMessage: m\r\n"
    raw = f"Subject: [EXPRESS-REPORT] JPN0012345\r\n\r\n{body}".encode()
    assert one(parse_mail(raw, "", INDEX), "express").id == sha(body.encode())
    long_id = "x" * 300 + "@example"
    raw = f"Subject: [EXPRESS-REPORT] JPN0012345\r\nMessage-ID: <{long_id}>\r\n\r\n{body}".encode()
    assert one(parse_mail(raw, "", INDEX), "express").id == sha(long_id.encode())


def test_lf_line_endings_mbox_line_and_folded_subject() -> None:
    raw = (
        b"From agent@db01 Tue Mar  4 03:12:09 2025\n"
        b"Subject: HP AlertMail-417: (CRITICAL)\n"
        b"  Power Supply #4: Failed\n"
        b"From: ENC-RACK07@ops.example.net\n\n"
        b"EVENT (04 Mar 03:12): x\n"
    )
    report = one(parse_mail(raw, "", INDEX), "hp")
    assert (report.component, report.code) == ("Power Supply #4", "Failed")


def test_raw_8bit_subject_header() -> None:
    subject = "[EXPRESS-REPORT] JPN0012345 warning 温度".encode("cp932")
    raw = (
        b"Subject: "
        + subject
        + b"\r\n\r\nSerial: JPN0012345\r\nSeverity: warning\r\nMessage: m\r\n"
    )
    assert one(parse_mail(raw, "", INDEX), "express").code == "温度"


def test_long_vendor_message_is_cut_not_refused() -> None:
    text = load("esmpro_utf8_undeclared.eml").decode()
    raw = text.replace("温度が正常範囲に戻りました。", "長" * 9000).encode()
    report = one(parse_mail(raw, "", INDEX), "esmpro")
    assert len(report.message) == 8192


def test_html_only_mail() -> None:
    raw = (
        b"Subject: iDRAC alert\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>Message ID: PSU0003</p><p>Severity: Critical</p><p>Service Tag: 7QX2K3M</p>\r\n"
        b"--b--\r\n"
    )
    report = one(parse_mail(raw, "", INDEX), "idrac")
    assert (report.serial, report.code, report.severity) == ("7QX2K3M", "PSU0003", "critical")


def test_multiple_json_parts_all_or_nothing() -> None:
    ok = b'{"v":1,"id":"a","serial":"S1","severity":"info","code":"C","message":"m"}'
    bad = b'{"v":1,"id":"b"}'

    def mail(*parts: bytes) -> bytes:
        out = b'Subject: x\r\nContent-Type: multipart/mixed; boundary="q"\r\n\r\n'
        for p in parts:
            out += b"--q\r\nContent-Type: application/json\r\n\r\n" + p + b"\r\n"
        return out + b"--q--\r\n"

    outcome = parse_mail(mail(ok, ok.replace(b'"a"', b'"a2"')), "", INDEX)
    assert isinstance(outcome, MailReports) and [r.id for r in outcome.reports] == ["a", "a2"]
    assert reason(parse_mail(mail(ok, bad), "", INDEX)) == "invalid"


# ---- parse_text (legacy serial agents) ---------------------------------------


def test_text_express_body() -> None:
    data = b"Serial: JPN0012345\r\nSeverity: major\r\nCode: FAN-1\r\nMessage: fan\r\n"
    report = one(parse_text(data, INDEX), "express")
    assert report.id == sha(data)


def test_text_vendor_bodies() -> None:
    esm = generate.ESMPRO_1.encode("cp932")
    report = one(parse_text(esm, INDEX), "esmpro")
    assert (report.serial, report.id) == ("JPN0020014", sha(esm))
    md = b"A Fail event had been detected on md device /dev/md1.\r\nhost fs01\r\n"
    assert one(parse_text(md, INDEX), "mdadm").serial == "FS01-0001"


def test_text_whole_mail_and_json() -> None:
    assert one(parse_text(load("hp_alertmail_critical.eml"), INDEX), "hp").serial == "CZJ1234567"
    data = b'{"v":1,"id":"t1","serial":"S1","severity":"info","code":"C","message":"m"}\r\n'
    assert one(parse_text(data, INDEX), "json").id == "t1"


def test_text_rejects() -> None:
    assert reason(parse_text(b"hello world\r\n", INDEX)) == "unrecognised"
    assert reason(parse_text(b"\xff\xfe\x80garbage", INDEX)) == "bad-charset"
    assert reason(parse_text(b"x" * 70000, INDEX)) == "too-large"


def test_text_with_a_subject_line_in_its_body_is_not_a_mail() -> None:
    data = b"ESMPRO\r\nnote: x\r\nSubject: not a header block\r\nfree text here\r\n"
    assert reason(parse_text(data, INDEX)) == "unrecognised"


def test_resolution_order_on_a_real_mail() -> None:
    raw = load("esmpro_iso2022jp.eml")  # コンピュータ名 srv-tky-014 → JPN0020014 by host
    assert one(parse_mail(raw, "someone@example.jp", INDEX), "esmpro").serial == "JPN0020014"
    # a configured sender (envelope) beats the host
    assert one(parse_mail(raw, "esmpro@db01.example.jp", INDEX), "esmpro").serial == "JPN0012345"
    # a serial in the text beats both
    raw = raw.replace(b"ESMPRO ALERT", b"ESMPRO ALERT JPN0030002")
    assert one(parse_mail(raw, "esmpro@db01.example.jp", INDEX), "esmpro").serial == "JPN0030002"
