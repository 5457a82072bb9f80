"""STX/ETX framing with CRC-16/CCITT-FALSE, both directions (SPEC 3.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.frames import (
    MAX_PAYLOAD,
    Ack,
    AnswerDecoder,
    EndOfTransmission,
    FrameDecoder,
    FrameError,
    FrameEvent,
    FramePayload,
    Line,
    LooseText,
    Nak,
    answer_field,
    crc16,
    encode_ack,
    encode_frame,
    encode_nak,
)


def _crc_reference(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, straight from the definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogue check value of CCITT-FALSE
    assert crc16(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_crc_matches_the_definition(data: bytes) -> None:
    assert crc16(data) == _crc_reference(data)


def test_encode_frame_layout() -> None:
    assert encode_frame(b"123456789") == b"\x02123456789\x0329B1\r"
    assert encode_frame(b"") == b"\x02\x03FFFF\r"


def test_encode_frame_refuses_what_cannot_be_framed() -> None:
    assert len(encode_frame(b"x" * MAX_PAYLOAD)) == MAX_PAYLOAD + 7
    with pytest.raises(ValueError):
        encode_frame(b"x" * (MAX_PAYLOAD + 1))
    for bad in (b"a\x02b", b"a\x03b", b"a\x04b"):
        with pytest.raises(ValueError):
            encode_frame(bad)


def test_answers() -> None:
    assert encode_ack("b2f0-1") == b"\x06b2f0-1\r"
    assert encode_nak("busy") == b"\x15busy\r"
    assert answer_field("a\r\nb\x7f") == b"a??b?"
    assert answer_field("製造") == "製造".encode()


def decode(*chunks: bytes) -> list[FrameEvent]:
    decoder = FrameDecoder()
    events: list[FrameEvent] = []
    for chunk in chunks:
        i = 0
        while i < len(chunk):
            got, i = decoder.feed(chunk, i)
            events += got
    return events


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"\x02123456789\x0329B1\r", [FramePayload(b"123456789")]),
        (b"\x02123456789\x0329b1\r", [FramePayload(b"123456789")]),
        (b"\x02123456789\x0329B2\r", [FrameError("crc", b"\x02123456789\x0329B2")]),
        (b"\x02123456789\x0329B\r", [FrameError("crc", b"\x02123456789\x0329B")]),
        (b"\x02123456789\x0329B1\n", [FrameError("crc", b"\x02123456789\x0329B1")]),
        (b"\x02ab\x02cd\x03", [FrameError("truncated", b"\x02ab")]),
        (b"\x02ab\x04", [FrameError("truncated", b"\x02ab"), EndOfTransmission()]),
        (b"\x02ab\x03FF\x04", [FrameError("crc", b"\x02ab\x03FF"), EndOfTransmission()]),
        (b"hello\x02", [LooseText(b"hello")]),
        (b"\x03stray\x04", [LooseText(b"\x03stray"), EndOfTransmission()]),
        # After a malformed trailer the rest is skipped up to the next STX.
        (b"\x02a\x03XX" + b"junk\x02b\x03", [FrameError("crc", b"\x02a\x03")]),
    ],
)
def test_decoder_table(wire: bytes, expected: list[FrameEvent]) -> None:
    assert decode(wire) == expected
    assert _merge_text(decode(*(bytes([b]) for b in wire))) == _merge_text(expected)


def _merge_text(events: list[FrameEvent]) -> list[FrameEvent]:
    """Byte-at-a-time decoding yields text in pieces; compare it joined."""
    out: list[FrameEvent] = []
    for e in events:
        if isinstance(e, LooseText) and out and isinstance(out[-1], LooseText):
            out[-1] = LooseText(out[-1].data + e.data)
        else:
            out.append(e)
    return out


def test_decoder_stops_after_eot() -> None:
    decoder = FrameDecoder()
    events, stop = decoder.feed(b"ab\x04AT\r")
    assert events == [LooseText(b"ab"), EndOfTransmission()]
    assert stop == 3
    assert decoder.feed(b"ab\x04AT\r", 0, 2) == ([LooseText(b"ab")], 2)


def test_too_long_is_reported_at_the_first_excess_byte() -> None:
    decoder = FrameDecoder()
    events, _ = decoder.feed(b"\x02" + b"x" * MAX_PAYLOAD)
    assert events == []
    events, _ = decoder.feed(b"xyz\x03FFFF\r")
    assert [e.reason for e in events if isinstance(e, FrameError)] == ["too-long"]
    assert decoder.buffered == 0
    events, _ = decoder.feed(encode_frame(b"ok"))
    assert events == [FramePayload(b"ok")]


def test_abort_reports_a_partial_frame_only() -> None:
    decoder = FrameDecoder()
    assert decoder.abort() is None
    decoder.feed(b"\x02abc")
    assert decoder.abort() == FrameError("truncated", b"\x02abc")
    assert not decoder.in_frame


payloads = st.binary(max_size=600).map(
    lambda b: b.replace(b"\x02", b"").replace(b"\x03", b"").replace(b"\x04", b"")
)


@given(st.lists(payloads, max_size=5), st.data())
def test_roundtrip_in_any_chunking(items: list[bytes], data: st.DataObject) -> None:
    wire = b"".join(encode_frame(p) for p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert decode(*chunks) == [FramePayload(p) for p in items]


# ------------------------------------------------------------------ sender side


def test_answer_decoder_splits_answers_and_lines() -> None:
    decoder = AnswerDecoder()
    got = decoder.feed(b"\r\nCONNECT 9600\r\n\x06id-")
    got += decoder.feed(b"1\r\x15busy\r\r\nNO CARRIER\r\n")
    assert got == [Line("CONNECT 9600"), Ack("id-1"), Nak("busy"), Line("NO CARRIER")]


def test_answer_decoder_numeric_results_and_utf8_ids() -> None:
    decoder = AnswerDecoder()
    assert decoder.feed(b"0\r" + encode_ack("製造-1")) == [Line("0"), Ack("製造-1")]


def test_answer_decoder_memory_is_bounded() -> None:
    decoder = AnswerDecoder(max_line=100)
    assert decoder.feed(b"x" * 1000) == []
    assert decoder.feed(b"y" * 1000 + b"\r\x06ok\r") == [Ack("ok")]
