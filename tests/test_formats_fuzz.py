"""Property tests: the parsers are total on any input.

The private `_parse_mail`/`_parse_text` are called, not the public functions,
because those wrap everything in a last-resort `parser-error` catch; a
property failure here is a real bug that the catch would only hide.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.formats.mail import (
    REASONS,
    MailAck,
    MailReject,
    MailReports,
    _parse_mail,
    _parse_text,
    parse_mail,
)
from monitor.formats.redfish import RedfishReject, parse_redfish
from monitor.model import SEVERITIES, AlarmReport
from tests.fixtures.mail.devices import INDEX

FIXTURES = sorted((Path(__file__).resolve().parent / "fixtures" / "mail").glob("*.eml"))
SAMPLES = [p.read_bytes() for p in FIXTURES]

# database=None: no .hypothesis/ example store left in the working tree.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(outcome: object) -> None:
    assert isinstance(outcome, MailReports | MailAck | MailReject)
    if isinstance(outcome, MailReject):
        assert outcome.reason in REASONS
    elif isinstance(outcome, MailReports):
        assert outcome.reports
        for r in outcome.reports:
            assert isinstance(r, AlarmReport)
            assert r.severity in SEVERITIES
            assert r.id and r.serial and r.code
            assert len(r.message) <= 8192
            assert r.occurred is None or r.occurred.tzinfo is not None
    else:
        assert outcome.incident_id > 0


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup", "truncate", "crlf"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 60))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b"\x1b$B", b"=?"]))
    return bytes(data)


HEADER_NAMES = [
    "Subject",
    "From",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Message-ID",
    "Date",
    "Auto-Submitted",
    "Precedence",
]
HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "multipart/mixed; boundary=x",
            'multipart/alternative; boundary="',
            "text/plain; charset=iso-2022-jp",
            'text/plain; charset="shift_jis',
            "text/plain; charset*=utf-8''x",
            "application/json",
            "base64",
            "quoted-printable",
            "[EXPRESS-REPORT] JPN0012345 critical X",
            "HP AlertMail-1: (CRITICAL) a: b",
            "SMART error (Health) detected on host: nas02",
            "Fail event on /dev/md0:fs01",
            "=?utf-8?b?====?=",
            "=?iso-2022-jp?q?=1B$B?=",
            "Re: [INC-99999999999999999999]",
            "<>",
            "Tue, 99 Foo 2025 99:99:99 +9999",
        ]
    ),
)


@st.composite
def synthetic(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUES), max_size=8))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8", "surrogatepass")
    body = draw(
        st.one_of(
            st.binary(max_size=400),
            st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.sampled_from(SAMPLES).map(lambda s: s.partition(b"\r\n\r\n")[2]),
        )
    )
    return head + b"\r\n" + body


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(_parse_mail(raw, "x@example.jp", INDEX))
    check(_parse_text(raw, INDEX))


@FUZZ
@given(mutated(), st.sampled_from(["", "<>", "ops@example.jp", "ENC-RACK07@ops.example.net"]))
def test_mutated_fixtures(raw: bytes, envelope: str) -> None:
    check(_parse_mail(raw, envelope, INDEX))
    check(_parse_text(raw, INDEX))


@FUZZ
@given(synthetic())
def test_synthetic_mails(raw: bytes) -> None:
    check(_parse_mail(raw, "x@example.jp", INDEX))


@settings(max_examples=50, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_public_entry_points(raw: bytes) -> None:
    check(parse_mail(raw, "", INDEX, max_bytes=200))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
EVENT_KEYS = [
    "MessageSeverity",
    "Severity",
    "MessageId",
    "Message",
    "EventTimestamp",
    "EventId",
    "OriginOfCondition",
]


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(EVENT_KEYS),
            JSON
            | st.sampled_from(["Critical", "OK", "Warning", "A.1.0.K", "2025-01-01T00:00:00Z"])
            | st.fixed_dictionaries({"@odata.id": JSON}),
        )
        | JSON,
        max_size=5,
    )
)
def test_redfish_events(events: list[object]) -> None:
    data = json.dumps({"Events": events}).encode()
    out = parse_redfish(data, "S")
    assert len(out) == len(events)
    for item in out:
        assert isinstance(item, AlarmReport | RedfishReject)
        if isinstance(item, AlarmReport):
            assert item.severity in ("critical", "warning", "info") and item.code and item.id


@FUZZ
@given(st.binary(max_size=500) | JSON.map(lambda v: json.dumps(v).encode()))
def test_redfish_any_bytes(data: bytes) -> None:
    out = parse_redfish(data, "S")
    assert all(isinstance(i, AlarmReport | RedfishReject) for i in out)


def _mail(subject: bytes, body: bytes, *headers: bytes) -> bytes:
    return (
        b"Subject: " + subject + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    )


N = 400_000
PATHOLOGICAL = {
    "label spaces": _mail(b"x", b"Severity:" + b" " * N + b"x\r\nEvent Code: 1 iLO"),
    "section spaces": _mail(b"x", "[イベント".encode() + b" " * N + "\r\n[ソース名]\r\n".encode()),
    "stamp spaces": _mail(
        b"x",
        "[ソース名]\r\nS\r\n[イベントID]\r\n1\r\n[詳細メッセージ]\r\n".encode()
        + "発生時刻 : 2025年1月1日 1:00".encode()
        + b" " * N,
    ),
    "hp spaces": _mail(b"HP AlertMail-1:" + b" " * N, b""),
    "html lt": _mail(b"x", b"<br" * (N // 3), b"Content-Type: text/html"),
    "tags": _mail(b"x", b"<" * N, b"Content-Type: text/html"),
    "at signs": _mail(b"Re: [INC-1]", b"", b"From: " + b"a@" * (N // 2)),
    "encoded words": _mail(b"=?a?q?" * (N // 6), b""),
    "mdadm": _mail(b"Fail event on /dev/" + b"a:" * (N // 2), b""),
    "long lines": _mail(b"x", b"a" * N + b"\r\n" + b"Message ID: " + b"A" * N),
    "many lines": _mail(b"x", b"\r\n" * N),
    "qp": _mail(b"x", b"=" * N, b"Content-Transfer-Encoding: quoted-printable"),
    "b64": _mail(b"x", b"!" * N, b"Content-Transfer-Encoding: base64"),
    "jis": _mail(b"x", b"\x1b$B" + b"!" * N, b"Content-Type: text/plain; charset=iso-2022-jp"),
}


def test_pathological_inputs_stay_linear() -> None:
    import time

    for name, raw in PATHOLOGICAL.items():
        start = time.perf_counter()
        check(_parse_mail(raw, "x@example.jp", INDEX))
        check(_parse_text(raw[:60_000], INDEX))
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"{name}: {elapsed:.2f} s"
