"""Property tests: every parser the network reaches is total, and what it
accepts is storable.

tests/test_formats_fuzz.py already drives whole mails through the mail
dispatcher and tests/test_modem_fuzz.py the modem engine; this module adds
the pieces beneath and beside them, each called directly:

- `alarm_json.decode_alarm` / `decode_object` (HTTP push, MQTT, serial
  frames, JSON mail parts) and the signature check on what they return;
- the express parser and each vendor parser (ESMPRO, HP AlertMail, iLO,
  iDRAC, smartd, mdadm) on label-rich text, and device resolution;
- the MQTT topic router and the heartbeat and status decoders;
- the serial frame decoder (daemon side) and the answer decoder (agent side);
- the agent's collectors (ipmitool SEL, smartctl JSON, mdstat, EDAC,
  sensors -j), with their memory carried from sample to sample.

The contract checked everywhere: no exception but the documented one
(`CollectorError` for collectors), every refusal carries a known reason
code, and every accepted report obeys SPEC 3.1's limits and is valid UTF-8
(so the store can take it).
"""

from __future__ import annotations

import json
import os
import string
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monitor_agent.collectors import CollectorError, CollectorSpec, Sample, make_collector

from monitor.formats.alarm_json import (
    MAX_FIELD,
    MAX_ID,
    MAX_MESSAGE,
    MAX_SERIAL,
    Invalid,
    decode_alarm,
    decode_object,
    sign,
    verify_sig,
)
from monitor.formats.esmpro import parse_esmpro
from monitor.formats.express import parse_express
from monitor.formats.hp import parse_alertmail, parse_ilo
from monitor.formats.idrac import parse_idrac
from monitor.formats.mailtext import Extracted, FormatError, MailText
from monitor.formats.mdadm import parse_mdadm
from monitor.formats.smartd import parse_smartd
from monitor.frames import MAX_PAYLOAD, AnswerDecoder, FrameDecoder, encode_frame
from monitor.listeners.mqtt_payloads import decode_heartbeat, decode_status, route
from monitor.model import SEVERITIES, AlarmReport
from tests.fixtures.mail.devices import INDEX

# FUZZ_EXAMPLES scales the runs (e.g. 5000 for a long hunt; `make fuzz`).
SCALE = int(os.environ.get("FUZZ_EXAMPLES", "250"))
FUZZ = settings(
    max_examples=SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FORMATS = ("esmpro", "hp", "ilo", "idrac", "smartd", "mdadm")


def storable(text: str) -> None:
    """SQLite binds str as UTF-8: a lone surrogate would fail the insert."""
    text.encode("utf-8")


def check_report(r: AlarmReport) -> None:
    assert r.severity in SEVERITIES
    assert 0 < len(r.id) <= MAX_ID
    assert 0 < len(r.serial) <= MAX_SERIAL
    assert 0 < len(r.code) <= MAX_FIELD
    assert len(r.message) <= MAX_MESSAGE
    assert len(r.component) <= MAX_FIELD
    assert r.occurred is None or r.occurred.tzinfo is not None
    for value in (r.id, r.serial, r.code, r.message, r.component, r.model, r.host, r.sig):
        storable(value)
    # The signature check is total too: any `sig` a peer sends is just wrong.
    assert verify_sig(r, "secret") in (True, False)
    assert verify_sig(r, "secret") is (r.sig == sign(r, "secret"))


def check_decoded(out: AlarmReport | Invalid) -> None:
    if isinstance(out, Invalid):
        assert out.reason == "invalid" and out.detail
    else:
        assert isinstance(out, AlarmReport)
        check_report(out)


# -- the alarm schema (3.1) -------------------------------------------------------------

KEYS = [
    "v",
    "id",
    "serial",
    "severity",
    "code",
    "message",
    "model",
    "host",
    "occurred",
    "component",
    "sig",
    "extra",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(
        [
            *SEVERITIES,
            "CRITICAL",
            "",
            "2026-11-20T17:45:12+09:00",
            "2026-11-20T17:45:12",
            "2026-13-45T99:99:99Z",
            "é" * 300,
            "x" * 9000,
            "a" * 65,
            "ffff",
            "\u0000",
            "\ud7ff",
            "0" * 64,
            1,
            0,
            -1,
            1.0,
            True,
        ]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=12)
GOOD = {
    "v": 1,
    "id": "r-1",
    "serial": "JPN0012345",
    "severity": "critical",
    "code": "PSU-0003",
    "message": "Power supply 1 failure detected",
}


@FUZZ
@given(st.binary(max_size=600))
def test_decode_alarm_any_bytes(data: bytes) -> None:
    check_decoded(decode_alarm(data))


@FUZZ
@given(OBJECTS)
def test_decode_alarm_any_object(obj: dict[str, Any]) -> None:
    check_decoded(decode_alarm(json.dumps(obj, allow_nan=True).encode()))
    check_decoded(decode_object(obj))


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_decode_alarm_near_valid(changes: dict[str, Any]) -> None:
    obj = {**GOOD, **changes}
    check_decoded(decode_alarm(json.dumps(obj).encode()))


@FUZZ
@given(st.text(max_size=100), st.text(max_size=20))
def test_any_signature_text_is_just_wrong(sig: str, secret: str) -> None:
    out = decode_alarm(json.dumps({**GOOD, "sig": sig}).encode())
    assert isinstance(out, AlarmReport)
    assert verify_sig(out, secret) is False or sig.lower() == sign(out, secret)


# -- mail formats, parser by parser ---------------------------------------------------

EXPRESS_LABELS = [
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
    "X-Other",
]
VENDOR_LINES = [
    "コンピュータ名 : db01",
    "製品名 : Express5800",
    "発生日付 : 2025/11/20",
    "発生時間 : 17:45:12",
    "[トラップ名]",
    "[ソース名]",
    "[イベントID]",
    "2103 ( C0000837 )",
    "[詳細メッセージ]",
    "[対処方法]",
    "[アラートタイプ]",
    "(異常)",
    "(警告)",
    "(情報)",
    "ＣＰＵ　：　１",
    "EVENT (20 Nov 17:45): Power Supply #2: Failed",
    "Severity: Critical",
    "Severity: Caution",
    "Class: Power",
    "Event Code: 0x12",
    "Message ID: PSU0003",
    "Service Tag: 7QX2K3M",
    "Severity: Warning",
    "SMART error (Health) detected on host: nas02",
    "Device: /dev/sdb [SAT], FAILED SMART self-check",
    "Fail event on /dev/md0:fs01",
    "DegradedArray event on /dev/md127:db07",
    "This is an automatically generated mail",
    "Date: Thu, 20 Nov 2025 17:45:12 +0900",
    "Host: web03",
    "",
    ":",
    "：",
    "[",
    "]",
    "(",
    ")",
]
SUBJECTS = [
    "",
    "[EXPRESS-REPORT] JPN0012345 critical PSU-0003",
    "[EXPRESS-REPORT]",
    "[EXPRESS-REPORT] JPN0012345 bogus X",
    "HP AlertMail-12: (CRITICAL) Power Supply #2: Failed",
    "HP AlertMail-1: (WARNING MINOR) x",
    "HP AlertMail-: () :",
    "SMART error (Temperature) detected on host: nas02",
    "SMART error () detected on host: ",
    "Fail event on /dev/md0:fs01",
    "RebuildFinished event on :",
    "Alert from iDRAC",
    "iLO AlertMail-001: (Critical) x",
]
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@st.composite
def label_text(draw: st.DrawFn, labels: list[str]) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            lines.append(f"{draw(st.sampled_from(labels))}: {draw(TEXT)}")
        elif choice == 1:
            lines.append(draw(st.sampled_from(VENDOR_LINES)))
        elif choice == 2:
            lines.append(draw(TEXT))
        else:
            value = draw(
                st.sampled_from([*SEVERITIES, "x" * 9000, "", "2025-01-01T00:00:00+09:00"])
            )
            lines.append(f"{draw(st.sampled_from(labels))}:{value}")
    return lines


@FUZZ
@given(st.sampled_from(SUBJECTS) | TEXT, label_text(EXPRESS_LABELS), st.text(max_size=300))
def test_express_parser(subject: str, lines: list[str], fallback: str) -> None:
    out = parse_express(subject, lines, fallback or "fallback-id")
    check_decoded(out)


VENDORS = [parse_esmpro, parse_alertmail, parse_ilo, parse_idrac, parse_smartd, parse_mdadm]


@FUZZ
@given(
    st.sampled_from(VENDORS),
    st.sampled_from(SUBJECTS) | TEXT,
    label_text(
        [
            "Severity",
            "Class",
            "Event Code",
            "Message ID",
            "Service Tag",
            "Message",
            "Device",
            "Host",
            "Date",
            "Time",
        ]
    ),
    st.sampled_from(["", "esmpro@db01.example.jp", "x <y@z>", "<>", "a@b@c"]),
    st.sampled_from(["", "Thu, 20 Nov 2025 17:45:12 +0900", "garbage", "Mon, 99 Foo 9999"]),
)
def test_each_vendor_parser(
    parse: Any, subject: str, lines: list[str], sender: str, date: str
) -> None:
    mail = MailText(subject, "\n".join(lines), sender, date)
    out = parse(mail)
    if out is None:
        return
    if isinstance(out, FormatError):
        assert out.format in FORMATS and out.detail
        return
    assert isinstance(out, Extracted)
    assert out.format in FORMATS
    assert out.severity in SEVERITIES
    assert 0 < len(out.code) <= MAX_FIELD
    assert len(out.message) <= MAX_MESSAGE and len(out.component) <= MAX_FIELD
    assert out.occurred is None or out.occurred.tzinfo is not None
    for value in (out.code, out.message, out.component, out.host, out.model):
        storable(value)
    # Device resolution on the same text never raises either.
    found = INDEX.resolve((mail.subject, mail.body), [sender] if sender else [])
    assert found is None or found.device.serial


# -- MQTT topics and liveness payloads -----------------------------------------------

TOPIC_PARTS = st.sampled_from(
    [
        "express",
        "alarm",
        "heartbeat",
        "status",
        "redfish",
        "JPN0012345",
        "",
        "+",
        "#",
        "x" * 65,
        "$share",
        "é",
        "a/b",
    ]
)


@FUZZ
@given(
    st.lists(TOPIC_PARTS | TEXT, max_size=5).map("/".join), st.sampled_from(["express", "", "a/b"])
)
def test_topic_router(topic: str, prefix: str) -> None:
    where = route(topic, prefix)
    if where is not None:
        assert where.kind in ("alarm", "heartbeat", "status", "redfish")
        assert where.serial and "/" not in where.serial and len(where.serial) <= MAX_SERIAL
        assert topic == f"{prefix}/{where.kind}/{where.serial}"


@FUZZ
@given(
    st.binary(max_size=200)
    | st.dictionaries(st.sampled_from(["v", "serial", "interval", "sent", "x"]), VALUES).map(
        lambda o: json.dumps(o).encode()
    )
)
def test_heartbeat_and_status_payloads(data: bytes) -> None:
    beat = decode_heartbeat(data)
    if isinstance(beat, Invalid):
        assert beat.reason == "invalid"
    else:
        assert 0 < beat.interval <= 86400 and 0 < len(beat.serial) <= MAX_SERIAL
    status = decode_status(data)
    assert status in (True, False, None) or (
        isinstance(status, Invalid) and status.reason == "invalid"
    )


# -- serial frames: both decoders -------------------------------------------------------

FRAME_PIECES = st.sampled_from(
    [
        encode_frame(json.dumps(GOOD).encode()),
        b"\x02",
        b"\x03",
        b"\x04",
        b"\r",
        b"\x06ok\r",
        b"\x15busy\r",
        b"\x15\r",
        b"\x06\r",
        b"NO CARRIER\r\n",
        b"\r\nOK\r\n",
        b"CONNECT 9600\r\n",
        b"\x02" + b"{" * 9000,
        b"29B1\r",
        b"\xff\xfe",
    ]
)


@FUZZ
@given(st.lists(FRAME_PIECES | st.binary(max_size=40), max_size=12), st.integers(1, 64))
def test_frame_and_answer_decoders(pieces: list[bytes], step: int) -> None:
    data = b"".join(pieces)
    frames = FrameDecoder()
    answers = AnswerDecoder()
    for at in range(0, len(data), step):
        for item in frames.feed(data[at : at + step]):
            payload = getattr(item, "payload", None)
            assert payload is None or len(payload) <= MAX_PAYLOAD
        answers.feed(data[at : at + step])


# -- the agent's collectors ------------------------------------------------------------

SEL_LINES = [
    "   1 | 11/20/2025 | 17:45:12 | Power Supply PS2 | Failure detected | Asserted",
    "  1a | 11/20/2025 | 17:45:13 | Temperature #0x30 | Upper Critical going high | Deasserted",
    " 2 | Pre-Init | 0000000 | System Event | Timestamp Clock Sync | Asserted",
    "   3 | OEM record e0 | 000000 | 000000000000",
    "   4 | Linux kernel panic: Fatal excep",
    "SEL has no entries",
    "SEL Information",
    "ffff | | | | |",
    "| | |",
    "0 |",
]
MDSTAT_LINES = [
    "Personalities : [raid1] [raid6]",
    "md0 : active raid1 sdb1[1](F) sda1[0]",
    "      1046528 blocks super 1.2 [2/1] [U_]",
    "md1 : inactive sdc1[0](S)",
    "      [=>...................]  recovery =  8.5% (1/2) finish=1.0min speed=1K/sec",
    "md127 : active (auto-read-only) raid5 sdd[3] sde[1](F) sdf[0]",
    "      blocks [3/2] [U_U]",
    "unused devices: <none>",
    "md : ",
    "[",
    "(F)",
]
EDAC_LINES = [
    "/sys/devices/system/edac/mc/mc0/ce_count:3",
    "/sys/devices/system/edac/mc/mc0/ue_count:1",
    "mc1/dimm2/dimm_ce_count:7",
    "mc1/dimm2/dimm_label:CPU_SrcID#0_Ha#0_Chan#1_DIMM#0",
    "mc0/ce_noinfo_count:2",
    "mc0/rank3/dimm_ue_count:-1",
    "mc99999999999999999999/ce_count:1",
    "mc0/ce_count:99999999999999999999999999",
    "mc0/ce_count:x",
]
JSON_SEEDS = [
    {
        "smartctl": {"exit_status": 8, "messages": [{"severity": "error", "string": "x"}]},
        "device": {"name": "/dev/sda", "protocol": "ATA"},
        "smart_status": {"passed": False},
        "temperature": {"current": 70, "op_limit_max": 60, "limit_max": 65},
        "ata_smart_attributes": {
            "table": [{"id": 5, "name": "Reallocated", "raw": {"value": 9}, "when_failed": "now"}]
        },
        "nvme_smart_health_information_log": {"critical_warning": 1, "media_errors": 3},
    },
    {
        "coretemp-isa-0000": {
            "Adapter": "ISA adapter",
            "Core 0": {"temp2_input": 99.0, "temp2_max": 80.0, "temp2_crit": 100.0},
            "fan1": {"fan1_input": 0.0, "fan1_min": 300.0},
            "in0": {"in0_input": 1e308, "in0_lcrit": 1.0},
        }
    },
]


def _mutate_json(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if draw(st.integers(0, 9)) == 0:
                continue
            out[k] = _mutate_json(draw, v, depth + 1)
        return out
    if isinstance(value, list):
        return [_mutate_json(draw, v, depth + 1) for v in value]
    if draw(st.integers(0, 4)) == 0:
        return draw(VALUES)
    return value


@st.composite
def collector_text(draw: st.DrawFn, kind: str) -> str:
    if kind in ("smart", "sensors"):
        if draw(st.integers(0, 5)) == 0:
            return draw(st.text(max_size=80))
        seed = JSON_SEEDS[0] if kind == "smart" else JSON_SEEDS[1]
        return json.dumps(_mutate_json(draw, seed), allow_nan=True)
    pool = {"ipmi": SEL_LINES, "mdstat": MDSTAT_LINES, "edac": EDAC_LINES}[kind]
    lines = draw(st.lists(st.sampled_from(pool) | st.text(max_size=40), max_size=10))
    return "\n".join(lines)


def _spec(kind: str) -> CollectorSpec:
    return CollectorSpec(
        name=kind,
        type=kind,
        command=("true",),
        path=None,
        interval=timedelta(seconds=60),
        timeout=timedelta(seconds=60),
    )


@pytest.mark.parametrize("kind", ["ipmi", "smart", "mdstat", "edac", "sensors"])
@settings(
    max_examples=max(1, SCALE // 2),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_collectors(kind: str, data: st.DataObject) -> None:
    collector = make_collector(_spec(kind), "JPN0012345")
    memory: dict[str, Any] = {}
    now = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    for _ in range(data.draw(st.integers(1, 4))):
        text = data.draw(collector_text(kind))
        status = data.draw(st.sampled_from([None, 0, 0, 1, 2, 8]))
        now += timedelta(minutes=1)
        try:
            findings, memory = collector.evaluate(Sample(text, status, "stderr"), memory, now)
        except CollectorError as exc:
            assert str(exc)
            continue
        memory = json.loads(json.dumps(memory))  # the runner keeps it as JSON
        for f in findings:
            assert f.severity in SEVERITIES and f.id and f.code
            for value in (f.id, f.component, f.code, f.message):
                storable(value)
            assert f.occurred is None or f.occurred.tzinfo is not None


# -- memory stays bounded on big input ---------------------------------------------------


def test_big_inputs_stay_within_a_small_multiple_of_their_size() -> None:
    from monitor.formats.mail import parse_mail, parse_text
    from monitor.formats.redfish import parse_redfish

    big = 1_000_000
    printable = string.ascii_letters.encode()
    inputs = {
        "json": b'{"v":1,"id":"' + b"a" * big + b'"}',
        "json-nesting": b"[" * 100_000,
        "mail": b"Subject: x\r\n\r\n" + (printable * (big // len(printable))),
        "mail-lines": b"Subject: x\r\n\r\n" + b"Severity: Critical\r\n" * (big // 20),
        "redfish": b'{"Events":[' + b'{"MessageId":"a.b"},' * (big // 20) + b"{}]}",
    }
    for name, raw in inputs.items():
        tracemalloc.start()
        try:
            if name.startswith("json"):
                check_decoded(decode_alarm(raw))
            elif name == "redfish":
                assert parse_redfish(raw, "S")
            else:
                parse_mail(raw, "a@b", INDEX, max_bytes=2 * big)
                parse_text(raw[:65536], INDEX)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 40 * len(raw) + 8_000_000, (name, peak)
