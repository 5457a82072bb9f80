"""Data mode of the emulated modem: frames, answers, escape, EOT, idle (SPEC 3.5)."""

from __future__ import annotations

from typing import TypeVar

import pytest

from monitor.frames import MAX_PAYLOAD, encode_frame
from monitor.modem import (
    MAX_IN_FLIGHT,
    MAX_LEGACY,
    Action,
    CallEnded,
    FrameReceived,
    FrameRejected,
    LegacyText,
    ModemEngine,
    ModemSettings,
    Write,
)

OK, NO_CARRIER = b"\r\nOK\r\n", b"\r\nNO CARRIER\r\n"
CONNECT = b"\r\nCONNECT 9600\r\n"
T = TypeVar("T")
REPORT = b'{"v":1,"id":"r-1","serial":"JPN0012345","severity":"critical","code":"X","message":"m"}'


def connected(idle: float = 60.0, t: float = 100.0) -> ModemEngine:
    modem = ModemEngine(ModemSettings(numbers=("0120223042",), idle_timeout=idle))
    actions = modem.feed(b"ATE0DT0120223042\r", t)
    assert modem.state == "data", actions
    return modem


def writes(actions: list[Action]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Write) and a.kind != "echo"]


def of(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def frames(actions: list[Action]) -> list[FrameReceived]:
    return [a for a in actions if isinstance(a, FrameReceived)]


# ------------------------------------------------------------------ frames


def test_good_frame_is_received_and_acked_after_the_result() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(REPORT), 100.1)
    [frame] = frames(actions)
    assert frame.payload == REPORT
    assert writes(actions) == []  # nothing until the daemon stored it
    assert writes(modem.report_result(frame.token, "r-1", None, 100.2)) == [b"\x06r-1\r"]


@pytest.mark.parametrize("reason", ["invalid", "bad-signature", "busy"])
def test_daemon_nak(reason: str) -> None:
    modem = connected()
    [frame] = frames(modem.feed(encode_frame(REPORT), 100.1))
    out = modem.report_result(frame.token, None, reason, 100.2)
    assert writes(out) == [b"\x15" + reason.encode() + b"\r"]


def test_frame_split_into_single_bytes() -> None:
    modem = connected()
    actions: list[Action] = []
    for b in encode_frame(REPORT):
        actions += modem.feed(bytes([b]), 100.1)
    assert [f.payload for f in frames(actions)] == [REPORT]


def test_answers_leave_in_frame_order() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(b'{"id":"a"}') + encode_frame(b'{"id":"b"}'), 100.1)
    first, second = frames(actions)
    assert writes(modem.report_result(second.token, "b", None, 100.2)) == []
    assert writes(modem.report_result(first.token, "a", None, 100.3)) == [b"\x06a\r", b"\x06b\r"]


def test_bad_crc_is_nakked_and_quarantined() -> None:
    modem = connected()
    frame = encode_frame(REPORT)
    bad = frame[:-5] + (b"0000\r" if not frame.endswith(b"0000\r") else b"0001\r")
    actions = modem.feed(bad, 100.1)
    assert of(actions, FrameRejected) == [FrameRejected("crc", bad[:-1])]
    assert writes(actions) == [b"\x15crc\r"]
    assert frames(actions) == []


def test_corrupted_payload_byte_is_a_crc_error() -> None:
    modem = connected()
    frame = bytearray(encode_frame(REPORT))
    frame[10] ^= 0x01
    assert writes(modem.feed(bytes(frame), 100.1)) == [b"\x15crc\r"]


@pytest.mark.parametrize(
    "trailer", [b"\x0329B\r", b"\x0329B1X", b"\x03ZZZZ\r", b"\x0329B1\n", b"\x03\r"]
)
def test_malformed_trailer_is_a_crc_error_then_resync(trailer: bytes) -> None:
    modem = connected()
    actions = modem.feed(b"\x02123456789" + trailer + b"junk" + encode_frame(REPORT), 100.1)
    assert [r.reason for r in of(actions, FrameRejected)] == ["crc"]
    assert [f.payload for f in frames(actions)] == [REPORT]
    assert writes(actions) == [b"\x15crc\r"]


def test_lower_case_crc_is_accepted() -> None:
    modem = connected()
    assert [f.payload for f in frames(modem.feed(b"\x02123456789\x0329b1\r", 100.1))] == [
        b"123456789"
    ]


def test_truncated_frame_gets_no_nak_and_the_next_frame_is_read() -> None:
    modem = connected()
    actions = modem.feed(b'\x02{"id":"lost' + encode_frame(REPORT), 100.1)
    assert [(r.reason, r.raw) for r in of(actions, FrameRejected)] == [
        ("truncated", b'\x02{"id":"lost')
    ]
    assert writes(actions) == []
    assert [f.payload for f in frames(actions)] == [REPORT]


def test_partial_frame_at_call_end_is_reported_truncated() -> None:
    modem = connected()
    modem.feed(b'\x02{"id":', 100.1)
    actions = modem.feed(b"\x04", 100.2)
    assert of(actions, FrameRejected) == [FrameRejected("truncated", b'\x02{"id":')]
    assert writes(actions) == [NO_CARRIER]


def test_oversized_payload_nakked_as_soon_as_it_passes_the_limit() -> None:
    modem = connected()
    actions = modem.feed(b"\x02" + b"x" * MAX_PAYLOAD, 100.1)
    assert writes(actions) == []  # exactly at the limit: still fine
    actions = modem.feed(b"x", 100.2)
    [rejected] = of(actions, FrameRejected)
    assert rejected.reason == "too-long"
    assert len(rejected.raw) == MAX_PAYLOAD + 2
    assert writes(actions) == [b"\x15too-long\r"]
    # The rest up to the next STX is skipped (not legacy text, no second NAK).
    actions = modem.feed(b"y" * 20000 + b"\x03ABCD\r" + encode_frame(REPORT) + b"\x04", 100.3)
    assert [f.payload for f in frames(actions)] == [REPORT]
    assert of(actions, LegacyText) == []
    assert modem.buffered_bytes < 1000


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    modem = connected()
    payload = b"x" * MAX_PAYLOAD
    assert [f.payload for f in frames(modem.feed(encode_frame(payload), 100.1))] == [payload]


def test_exact_resend_is_a_new_frame_to_answer() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(REPORT) * 2, 100.1)
    a, b = frames(actions)
    assert a.payload == b.payload and a.token != b.token
    out = modem.report_result(a.token, "r-1", None, 100.2)
    out += modem.report_result(b.token, "r-1", None, 100.2)
    assert writes(out) == [b"\x06r-1\r", b"\x06r-1\r"]


def test_engine_nak_waits_behind_an_unanswered_frame() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(REPORT) + b"\x02bad\x030000\r", 100.1)
    assert writes(actions) == []  # the NAK must not overtake the first frame's ACK
    [frame] = frames(actions)
    assert writes(modem.report_result(frame.token, "r-1", None, 100.2)) == [
        b"\x06r-1\r",
        b"\x15crc\r",
    ]


def test_ack_id_control_characters_are_neutralised() -> None:
    modem = connected()
    [frame] = frames(modem.feed(encode_frame(REPORT), 100.1))
    assert writes(modem.report_result(frame.token, "a\rb\x06", None, 100.2)) == [b"\x06a?b?\r"]


def test_report_result_needs_exactly_one_verdict() -> None:
    modem = connected()
    with pytest.raises(ValueError):
        modem.report_result(1, None, None, 100.1)
    with pytest.raises(ValueError):
        modem.report_result(1, "x", "busy", 100.1)


def test_answer_after_the_call_ended_is_dropped() -> None:
    modem = connected()
    [frame] = frames(modem.feed(encode_frame(REPORT), 100.1))
    modem.feed(b"\x04", 100.2)
    assert modem.report_result(frame.token, "r-1", None, 100.3) == []
    assert modem.report_result(frame.token, "r-1", None, 100.3) == []  # and unknown tokens


def test_too_many_unanswered_frames_overrun() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(REPORT) * (MAX_IN_FLIGHT + 1), 100.1)
    assert len(frames(actions)) == MAX_IN_FLIGHT
    assert [r.reason for r in of(actions, FrameRejected)] == ["overrun"]


# ------------------------------------------------------------------ EOT, legacy text


def test_eot_ends_the_call_and_returns_to_command_mode() -> None:
    modem = connected()
    actions = modem.feed(b"\x04AT\r", 100.1)
    assert writes(actions) == [NO_CARRIER, OK]  # bytes after EOT are commands again
    assert of(actions, CallEnded) == [CallEnded("eot")]
    assert modem.state == "command"
    assert modem.next_deadline() is None


def test_legacy_text_is_delivered_when_the_call_ends() -> None:
    modem = connected()
    modem.feed(b"Subject: PSU failure\r\n\r\nPower supply 1 failed\r\n", 100.1)
    modem.feed(encode_frame(REPORT), 100.2)  # frames in between are not text
    modem.feed(b"more text\r\n", 100.3)
    actions = modem.feed(b"\x04", 100.4)
    text = LegacyText(b"Subject: PSU failure\r\n\r\nPower supply 1 failed\r\nmore text\r\n")
    assert of(actions, LegacyText) == [text]
    assert actions.index(text) < actions.index(CallEnded("eot"))


def test_whitespace_between_frames_is_not_legacy_text() -> None:
    modem = connected()
    actions = modem.feed(encode_frame(REPORT) + b"\n\r\n  \x04", 100.1)
    assert of(actions, LegacyText) == []


def test_legacy_text_is_capped() -> None:
    modem = connected()
    for i in range(10):
        modem.feed(b"z" * 10000, 100.0 + i / 10)
    [text] = of(modem.feed(b"\x04", 102.0), LegacyText)
    assert text == LegacyText(b"z" * MAX_LEGACY, 100000 - MAX_LEGACY)
    assert modem.buffered_bytes < 1000


# ------------------------------------------------------------------ escape


def test_escape_with_guard_times_then_ato_and_ath() -> None:
    modem = connected(t=100.0)
    modem.feed(b"legacy line\r\n", 100.5)
    assert modem.feed(b"+++", 102.0) == []
    assert modem.next_deadline() == pytest.approx(103.0)
    assert modem.tick(102.9) == []
    assert writes(modem.tick(103.0)) == [OK]
    states = [modem.state]
    assert writes(modem.feed(b"ATO\r", 104.0)) == [CONNECT]
    states.append(modem.state)
    assert states == ["online-command", "data"]
    assert modem.feed(b"+++", 106.0) == []
    assert writes(modem.tick(107.0)) == [OK]
    actions = modem.feed(b"ATH\r", 108.0)
    assert writes(actions) == [OK]
    assert of(actions, LegacyText) == [LegacyText(b"legacy line\r\n")]
    assert of(actions, CallEnded) == [CallEnded("hangup")]
    assert modem.state == "command"


def test_escape_fires_before_a_late_byte_is_read() -> None:
    modem = connected(t=100.0)
    modem.feed(b"+++", 102.0)
    actions = modem.feed(b"ATH\r", 105.0)  # no tick in between: the timer runs first
    assert writes(actions) == [OK, OK]
    assert of(actions, CallEnded) == [CallEnded("hangup")]


def test_escape_characters_spread_over_chunks() -> None:
    modem = connected(t=100.0)
    for t in (102.0, 102.4, 102.8):
        assert modem.feed(b"+", t) == []
    assert writes(modem.tick(103.8)) == [OK]


@pytest.mark.parametrize(
    ("steps", "legacy"),
    [
        ([(100.5, b"+++")], b"+++"),  # no guard silence before
        ([(102.0, b"+++x")], b"+++x"),  # no guard silence after
        ([(102.0, b"+++"), (102.5, b"x")], b"+++x"),
        ([(102.0, b"++++")], b"++++"),
        ([(102.0, b"+"), (103.5, b"+"), (103.6, b"+"), (103.7, b"!")], b"+++!"),
        ([(102.0, b"a+++")], b"a+++"),
    ],
)
def test_not_an_escape_the_characters_are_data(
    steps: list[tuple[float, bytes]], legacy: bytes
) -> None:
    modem = connected(t=100.0)
    for t, data in steps:
        assert writes(modem.feed(data, t)) == []
    assert modem.state == "data"
    actions = modem.feed(b"\x04", 110.0)
    assert of(actions, LegacyText) == [LegacyText(legacy)]


def test_escape_after_a_one_plus_false_start() -> None:
    # `+`, too long a pause (it becomes data), then a real escape.
    modem = connected(t=100.0)
    modem.feed(b"+", 102.0)
    modem.feed(b"+++", 103.5)
    assert writes(modem.tick(104.5)) == [OK]


def test_guard_time_follows_s12() -> None:
    modem = ModemEngine(ModemSettings())
    modem.feed(b"ATE0S12=10DT1\r", 100.0)  # 10/50 s = 0.2 s
    modem.feed(b"+++", 100.3)
    assert modem.next_deadline() == pytest.approx(100.5)
    assert writes(modem.tick(100.5)) == [OK]


def test_s12_zero_escapes_at_once() -> None:
    modem = ModemEngine(ModemSettings())
    actions = modem.feed(b"ATE0S12=0DT1\rdata+++ATH\r", 100.0)
    assert writes(actions) == [CONNECT, OK, OK]
    [text] = of(actions, LegacyText)
    assert text == LegacyText(b"data")


def test_s2_above_127_disables_the_escape() -> None:
    modem = ModemEngine(ModemSettings())
    modem.feed(b"ATE0S2=200DT1\r", 100.0)
    modem.feed(b"+++", 102.0)
    assert modem.tick(110.0) == []
    assert modem.state == "data"


def test_escape_char_follows_s2() -> None:
    modem = ModemEngine(ModemSettings())
    modem.feed(b"ATE0S2=42DT1\r", 100.0)
    modem.feed(b"***", 102.0)
    assert writes(modem.tick(103.0)) == [OK]


def test_quiet_mode_escape_has_no_ok() -> None:
    modem = ModemEngine(ModemSettings())
    assert writes(modem.feed(b"ATE0Q1DT1\r", 100.0)) == []
    modem.feed(b"+++", 102.0)
    assert modem.tick(103.0) == []
    assert modem.state == "online-command"


def test_answers_wait_in_online_command_mode_until_ato() -> None:
    modem = connected(t=100.0)
    [frame] = frames(modem.feed(encode_frame(REPORT), 100.1))
    modem.feed(b"+++", 102.0)
    modem.tick(103.0)
    assert writes(modem.report_result(frame.token, "r-1", None, 103.1)) == []
    assert writes(modem.feed(b"ATO\r", 103.2)) == [CONNECT, b"\x06r-1\r"]


def test_partial_frame_survives_an_escape_and_ato() -> None:
    modem = connected(t=100.0)
    frame = encode_frame(REPORT)
    modem.feed(frame[:20], 100.1)
    modem.feed(b"+++", 102.0)
    modem.tick(103.0)
    modem.feed(b"ATO\r", 103.1)
    assert [f.payload for f in frames(modem.feed(frame[20:], 103.2))] == [REPORT]


# ------------------------------------------------------------------ idle, DTR, hangup


def test_idle_call_is_dropped() -> None:
    modem = connected(idle=60.0, t=100.0)
    modem.feed(b"some text", 130.0)
    assert modem.next_deadline() == pytest.approx(190.0)
    assert modem.tick(189.9) == []
    actions = modem.tick(190.0)
    assert writes(actions) == [NO_CARRIER]
    assert of(actions, LegacyText) == [LegacyText(b"some text")]
    assert of(actions, CallEnded) == [CallEnded("idle")]
    assert modem.next_deadline() is None


def test_idle_also_drops_an_online_command_call() -> None:
    modem = connected(idle=10.0, t=100.0)
    modem.feed(b"+++", 102.0)
    assert writes(modem.tick(103.0)) == [OK]
    assert of(modem.tick(112.0), CallEnded) == [CallEnded("idle")]


def test_idle_timeout_zero_never_drops() -> None:
    modem = connected(idle=0.0)
    assert modem.next_deadline() is None
    assert modem.tick(1e9) == []


def test_dtr_drop_ends_the_call() -> None:
    modem = connected()
    modem.feed(b"text", 100.1)
    actions = modem.dtr_dropped(100.2)
    assert writes(actions) == [NO_CARRIER]
    assert of(actions, CallEnded) == [CallEnded("dtr")]
    assert of(actions, LegacyText) == [LegacyText(b"text")]
    assert modem.dtr_dropped(100.3) == []


def test_daemon_hangup() -> None:
    modem = connected()
    assert of(modem.hangup(100.1), CallEnded) == [CallEnded("dropped")]
    assert modem.hangup(100.2) == []


def test_second_call_after_eot_starts_clean() -> None:
    modem = connected()
    modem.feed(b"\x02partial", 100.1)
    modem.feed(b"\x04", 100.2)
    modem.feed(b"ATDT0120223042\r", 100.3)
    assert modem.state == "data"
    actions = modem.feed(encode_frame(REPORT), 100.4)
    assert [f.payload for f in frames(actions)] == [REPORT]
    assert of(actions, FrameRejected) == []
