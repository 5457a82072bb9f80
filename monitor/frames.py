"""Report framing of the serial dial-up channel (SPEC 3.5), shared by both ends.

A report travels as ``STX payload ETX CCCC CR`` where ``CCCC`` is the
CRC-16/CCITT-FALSE of the payload in upper-case hex.  The receiver answers
``ACK <report id> CR`` once the report is durably stored, or
``NAK <reason> CR``.

The payload is a JSON object, and JSON never contains raw control bytes, so
STX/ETX/EOT need no byte stuffing: a stray STX always means "a new frame
starts here", which is how the decoder resynchronises after line noise.

Everything here is sans-I/O: decoders take bytes and return events.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Final

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ACK: Final = 0x06
NAK: Final = 0x15
CR: Final = 0x0D

#: Largest payload the receiver accepts; NEC's largest report is 6148 bytes.
MAX_PAYLOAD: Final = 8192

#: NAK reasons of SPEC 3.5.  `invalid` and `bad-signature` are final: sending
#: the same bytes again cannot change the verdict.
NAK_REASONS: Final = ("crc", "too-long", "invalid", "bad-signature", "busy")
FINAL_NAK_REASONS: Final = frozenset({"invalid", "bad-signature"})

_RESERVED: Final = re.compile(rb"[\x02\x03\x04]")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no xorout).

    `binascii.crc_hqx` is exactly this polynomial, unreflected, in C; seeding
    it with 0xFFFF gives the -FALSE variant ("123456789" -> 0x29B1).
    """
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(payload: bytes) -> bytes:
    """Frame one payload.  Raises ValueError for what the receiver would refuse."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if _RESERVED.search(payload):
        # Without stuffing these would cut the frame short on the other side.
        raise ValueError("payload contains STX, ETX or EOT")
    return b"\x02" + payload + b"\x03" + b"%04X\r" % crc16(payload)


# ACK ids and NAK reasons are CR-terminated lines: no control characters inside.
_CONTROL_TO_QUESTION: Final = bytes((0x3F if (b < 0x20 or b == 0x7F) else b) for b in range(256))


def answer_field(text: str) -> bytes:
    """The bytes of an ACK id or NAK reason as they go on the wire.

    Control characters would break the CR-terminated answer line, so they
    become ``?``.  UTF-8 continuation bytes are all >= 0x80, so this never
    splits a character.  Both ends use this function, so a sender compares
    `Ack.id` with ``answer_field(id).decode()`` and still matches.
    """
    raw = text.encode("utf-8", "replace")
    return raw.translate(_CONTROL_TO_QUESTION)


def encode_ack(report_id: str) -> bytes:
    return b"\x06" + answer_field(report_id) + b"\r"


def encode_nak(reason: str) -> bytes:
    return b"\x15" + answer_field(reason) + b"\r"


# --------------------------------------------------------------------------
# Receiver side (the DCE): bytes in data mode -> frame events
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FramePayload:
    """A complete frame whose CRC matched."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that cannot be used.

    `reason` is ``crc`` (mismatch or malformed trailer), ``too-long`` (the
    payload passed MAX_PAYLOAD; the rest up to the next STX is skipped) or
    ``truncated`` (a new STX, EOT or the end of the call came before the
    trailer; the sender has already given up on it, so it gets no NAK).
    """

    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class LooseText:
    """Bytes outside any frame (a legacy agent's plain-text report, or noise)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfTransmission:
    """EOT: the sender ends the call.  The decoder stops right after it."""


FrameEvent = FramePayload | FrameError | LooseText | EndOfTransmission

_EOT_EVENT: Final = EndOfTransmission()
_OUTSIDE, _PAYLOAD, _TRAILER, _SKIP = range(4)
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")
# The decoder jumps between these bytes with a C-level search instead of a
# Python loop per byte: the payload path is the channel's hot path.
_SPECIAL_OUTSIDE: Final = re.compile(rb"[\x02\x04]")
_SPECIAL_PAYLOAD: Final = re.compile(rb"[\x02\x03\x04]")


class FrameDecoder:
    """Incremental decoder of the receiver side; memory is bounded by MAX_PAYLOAD."""

    __slots__ = ("_max", "_payload", "_state", "_trailer")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._max = max_payload
        self._state = _OUTSIDE
        self._payload = bytearray()
        self._trailer = bytearray()

    @property
    def in_frame(self) -> bool:
        return self._state in (_PAYLOAD, _TRAILER)

    @property
    def buffered(self) -> int:
        return len(self._payload) + len(self._trailer)

    def abort(self) -> FrameError | None:
        """Forget any partial frame (the call ended); report it if there was one."""
        partial = FrameError("truncated", self._raw()) if self.in_frame else None
        self._state = _OUTSIDE
        self._payload.clear()
        self._trailer.clear()
        return partial

    def feed(
        self, data: bytes, start: int = 0, end: int | None = None
    ) -> tuple[list[FrameEvent], int]:
        """Decode ``data[start:end]``; return the events and where decoding stopped.

        Decoding stops right after an EOT, because what follows belongs to the
        modem's command mode, not to this decoder.
        """
        stop_at = len(data) if end is None else end
        events: list[FrameEvent] = []
        i = start
        while i < stop_at:
            state = self._state
            if state == _PAYLOAD:
                i = self._feed_payload(data, i, stop_at, events)
                if i < 0:
                    return events, -i
            elif state == _TRAILER:
                i = self._feed_trailer(data, i, events)
                if i < 0:
                    return events, -i
            else:
                m = _SPECIAL_OUTSIDE.search(data, i, stop_at)
                cut = m.start() if m else stop_at
                if state == _OUTSIDE and cut > i:
                    events.append(LooseText(data[i:cut]))
                if m is None:
                    return events, stop_at
                i = cut + 1
                if data[cut] == EOT:
                    self._state = _OUTSIDE
                    events.append(_EOT_EVENT)
                    return events, i
                self._begin()
        return events, i

    # The two helpers return the next index, negated when an EOT ended decoding
    # (indexes after an EOT are always >= 1, so the sign is unambiguous).

    def _feed_payload(self, data: bytes, i: int, stop_at: int, events: list[FrameEvent]) -> int:
        m = _SPECIAL_PAYLOAD.search(data, i, stop_at)
        cut = m.start() if m else stop_at
        room = self._max - len(self._payload)
        if cut - i > room:
            # Reject as soon as the limit is passed, not at ETX: a runaway
            # sender must not make us buffer more than MAX_PAYLOAD.
            self._payload += data[i : i + room + 1]
            events.append(FrameError("too-long", self._raw()))
            self._payload.clear()
            self._state = _SKIP
            return i + room + 1
        self._payload += data[i:cut]
        if m is None:
            return stop_at
        byte = data[cut]
        if byte == ETX:
            self._state = _TRAILER
            self._trailer.clear()
            return cut + 1
        events.append(FrameError("truncated", self._raw()))
        if byte == STX:
            self._begin()
            return cut + 1
        self._end_outside()
        events.append(_EOT_EVENT)
        return -(cut + 1)

    def _feed_trailer(self, data: bytes, i: int, events: list[FrameEvent]) -> int:
        byte = data[i]
        i += 1
        trailer = self._trailer
        if len(trailer) < 4 and byte in _HEX:
            trailer.append(byte)
            return i
        if len(trailer) == 4 and byte == CR:
            payload = bytes(self._payload)
            if int(trailer, 16) == crc16(payload):
                events.append(FramePayload(payload))
            else:
                events.append(FrameError("crc", self._raw()))
            self._end_outside()
            return i
        events.append(FrameError("crc", self._raw()))
        if byte == STX:
            self._begin()
        elif byte == EOT:
            self._end_outside()
            events.append(_EOT_EVENT)
            return -i
        else:
            # The rest of a mangled frame is not legacy text: skip to the next STX.
            self._end_outside()
            self._state = _SKIP
        return i

    def _begin(self) -> None:
        self._state = _PAYLOAD
        self._payload.clear()
        self._trailer.clear()

    def _end_outside(self) -> None:
        self._state = _OUTSIDE
        self._payload.clear()
        self._trailer.clear()

    def _raw(self) -> bytes:
        raw = b"\x02" + self._payload
        if self._state == _TRAILER:
            raw += b"\x03" + self._trailer
        return bytes(raw)


# --------------------------------------------------------------------------
# Sender side (the DTE): bytes from the modem -> answers and text lines
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    id: str


@dataclass(frozen=True, slots=True)
class Nak:
    reason: str


@dataclass(frozen=True, slots=True)
class Line:
    """Any other non-empty line: a result code, an echo, information text."""

    text: str


Answer = Ack | Nak | Line

_LINE_END: Final = re.compile(rb"[\r\n]")


class AnswerDecoder:
    """Splits what the modem sends into ACK/NAK answers and text lines."""

    __slots__ = ("_buf", "_max_line", "_overflow")

    def __init__(self, max_line: int = 2 * MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        self._overflow = False

    def feed(self, data: bytes) -> list[Answer]:
        out: list[Answer] = []
        self._buf += data
        pos = 0
        buf = self._buf
        while (m := _LINE_END.search(buf, pos)) is not None:
            line = bytes(buf[pos : m.start()])
            pos = m.end()
            if self._overflow:
                # Tail of an over-long line: its head was already dropped.
                self._overflow = False
                continue
            if answer := _classify(line):
                out.append(answer)
        del buf[:pos]
        if len(buf) > self._max_line:
            buf.clear()
            self._overflow = True
        return out


def _classify(line: bytes) -> Answer | None:
    if not line:
        return None
    if line[0] == ACK:
        return Ack(line[1:].decode("utf-8", "replace"))
    if line[0] == NAK:
        return Nak(line[1:].decode("utf-8", "replace"))
    text = line.decode("ascii", "replace").strip()
    return Line(text) if text else None
