"""Hayes-modem emulator: the DCE side of the serial dial-up channel (SPEC 3.5).

Sans-I/O (DESIGN rule 4): the serial listener feeds received bytes and the
wall time in, and gets `Action`s back (bytes to write, frames to store, call
events).  The engine never reads a clock and never touches a port, so the
whole V.250 subset and the framing can be table- and hypothesis-tested.

States: command mode without a call; data mode (a call is up, bytes are
frames); online-command mode (a call is up, but `+++` brought the DTE back to
commands; ``ATO`` resumes data, ``ATH`` hangs up).  See docs/protocols.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final, Literal

from monitor import __version__
from monitor.frames import (
    FrameDecoder,
    FrameError,
    FramePayload,
    LooseText,
    encode_ack,
    encode_frame,
    encode_nak,
)

if TYPE_CHECKING:
    from monitor.model import SerialConfig

DEFAULT_IDENTITY: Final = f"express-monitor {__version__} modem emulator"
#: Longest command line body (after AT, spaces and control characters removed).
MAX_LINE: Final = 256
#: Unframed text kept per call for the legacy-agent path.
MAX_LEGACY: Final = 64 * 1024
#: Frames (and engine NAKs) waiting for their in-order answer.  A correct DTE
#: waits for each answer, so more than a handful means a misbehaving peer.
MAX_IN_FLIGHT: Final = 32

# Characters of a dial string that select nothing (SPEC 3.5); what is left
# must be dial digits.
_DIAL_IGNORED: Final = frozenset("TPW,!@()- ")
_DIAL_DIGITS: Final = frozenset("0123456789*#ABCD")


class Result(IntEnum):
    """Result codes and their numeric (ATV0) values."""

    OK = 0
    CONNECT = 1
    RING = 2
    NO_CARRIER = 3
    ERROR = 4
    NO_DIALTONE = 6
    BUSY = 7
    NO_ANSWER = 8

    @property
    def text(self) -> str:
        return self.name.replace("_", " ")


# Hayes extended numeric codes for `CONNECT <rate>` (FORMATS 7.2); a rate
# without one is reported as plain 1.
_CONNECT_CODES: Final = {
    1200: 5,
    2400: 10,
    4800: 11,
    7200: 24,
    9600: 12,
    12000: 25,
    14400: 13,
    19200: 14,
    38400: 28,
    57600: 18,
    115200: 19,
    230400: 20,
}

# V.250 / tcpser defaults: S2 escape char '+', S3 CR, S4 LF, S5 BS, S12 = 1 s.
_DEFAULT_REGISTERS: Final = {
    2: 43,
    3: 13,
    4: 10,
    5: 8,
    6: 2,
    7: 50,
    8: 2,
    9: 6,
    10: 14,
    11: 95,
    12: 50,
}


def normalize_number(dial: str) -> str:
    """The digits that select a receiver: modifiers and punctuation removed."""
    return "".join(ch for ch in dial.upper() if ch not in _DIAL_IGNORED)


@dataclass(frozen=True, slots=True)
class ModemSettings:
    baud: int = 9600
    numbers: tuple[str, ...] = ()  # empty: any number connects
    idle_timeout: float = 60.0  # seconds without a byte during a call; <= 0: never
    identity: str = DEFAULT_IDENTITY

    @classmethod
    def from_config(cls, config: SerialConfig, identity: str = DEFAULT_IDENTITY) -> ModemSettings:
        return cls(
            baud=config.baud,
            numbers=config.numbers,
            idle_timeout=config.idle_timeout.total_seconds(),
            identity=identity,
        )


# --------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------

WriteKind = Literal["echo", "result", "info", "answer"]


@dataclass(frozen=True, slots=True)
class Write:
    """Bytes for the port.  `kind` is for logs and tests; the listener just writes."""

    data: bytes
    kind: WriteKind = "result"


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A frame with a good CRC: store it, then call `report_result(token, …)`."""

    token: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameRejected:
    """An unusable frame, to quarantine.

    For ``crc`` and ``too-long`` the engine has already written (or queued, to
    keep answers in order) the NAK.  ``truncated`` (cut by a new STX or the end
    of the call) and ``overrun`` (too many unanswered frames) get no answer:
    the sender times out and sends again.
    """

    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class LegacyText:
    """Unframed text of a call, delivered when the call ends (parse as a mail body)."""

    text: bytes
    dropped: int = 0  # bytes past MAX_LEGACY that were discarded


@dataclass(frozen=True, slots=True)
class CallStarted:
    number: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    reason: str  # eot | hangup (ATH) | reset (ATZ) | idle | dtr | dropped (hangup())


Action = Write | FrameReceived | FrameRejected | LegacyText | CallStarted | CallEnded


class _Pending:
    """One answer slot; answers leave in the order their frames arrived."""

    __slots__ = ("answer", "token")

    def __init__(self, token: int, answer: bytes | None) -> None:
        self.token = token
        self.answer = answer


# Prefix scanner states of command mode.
_WAIT_A, _GOT_A, _IN_LINE = range(3)
# Stands for an over-long line; never a real body, which holds no control chars.
_OVERFLOW: Final = "\x00"


class ModemEngine:
    """One emulated modem on one line.  Not thread-safe; one owner drives it."""

    def __init__(self, config: ModemSettings) -> None:
        self.config = config
        self._numbers = frozenset(normalize_number(n) for n in config.numbers)
        self._identity = "".join(
            ch if " " <= ch <= "~" else "?" for ch in config.identity[:MAX_LINE]
        ).encode("ascii")
        self._regs = bytearray(256)
        self._echo = True
        self._verbose = True
        self._quiet = False
        self._x = 4
        self._reset_settings()
        # Command-line scanner.
        self._pstate = _WAIT_A
        self._line = bytearray()
        self._overflow = False
        self._last_line = ""
        # Call.
        self._number: str | None = None
        self._data = False
        self._last_rx = 0.0
        self._esc_count = 0
        self._esc_last = 0.0
        self._decoder = FrameDecoder()
        self._legacy = bytearray()
        self._legacy_dropped = 0
        self._queue: deque[_Pending] = deque()
        self._pending: dict[int, _Pending] = {}
        self._next_token = 1

    # ---------------------------------------------------------------- state

    @property
    def number(self) -> str | None:
        """The dialled number while a call is up."""
        return self._number

    @property
    def state(self) -> Literal["command", "data", "online-command"]:
        if self._number is None:
            return "command"
        return "data" if self._data else "online-command"

    @property
    def buffered_bytes(self) -> int:
        """Bytes held inside the engine (bounded; for metrics and tests)."""
        return (
            len(self._line)
            + len(self._last_line)
            + len(self._legacy)
            + self._decoder.buffered
            + self._esc_count
            + sum(len(p.answer or b"") for p in self._queue)
        )

    def register(self, n: int) -> int:
        return self._regs[n]

    # ---------------------------------------------------------------- inputs

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes received from the DTE at wall time `now` (monotonic seconds)."""
        if not isinstance(data, bytes):
            data = bytes(data)  # a bytearray/memoryview must not leak into Write.data
        out = self._run_timers(now)
        i, n = 0, len(data)
        while i < n:
            if self._data:
                i = self._feed_data(data, i, now, out)
            else:
                i = self._feed_command(data, i, now, out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Run the timers due at `now`; call it at `next_deadline()`."""
        return self._run_timers(now)

    def next_deadline(self) -> float | None:
        """When `tick` has something to do, or None (nothing until the next byte)."""
        due = min(self._escape_due(), self._idle_due())
        return None if math.isinf(due) else due

    def report_result(
        self, token: int, ok_id: str | None, nak_reason: str | None, now: float
    ) -> list[Action]:
        """Answer the frame `token`: ACK with `ok_id` or NAK with `nak_reason`.

        Answers are written in frame order, so this may write nothing yet (an
        earlier frame is still unanswered) or several answers at once.  An
        answer for a call that has ended is dropped: the sender will re-send.
        """
        if (ok_id is None) == (nak_reason is None):
            raise ValueError("exactly one of ok_id and nak_reason must be given")
        out = self._run_timers(now)
        slot = self._pending.pop(token, None)
        if slot is not None:
            slot.answer = encode_ack(ok_id) if ok_id is not None else encode_nak(nak_reason or "")
            out.extend(self._flush_answers())
        return out

    def hangup(self, now: float, reason: str = "dropped") -> list[Action]:
        """The daemon drops the call (shutdown, line reset): NO CARRIER."""
        out = self._run_timers(now)
        if self._number is not None:
            out.extend(self._end_call(reason))
            out.extend(self._result(Result.NO_CARRIER))
        return out

    def dtr_dropped(self, now: float) -> list[Action]:
        """The DTE dropped DTR: hang up (as with &D2, whatever &D says, like tcpser)."""
        self._pstate = _WAIT_A
        return self.hangup(now, "dtr")

    # ---------------------------------------------------------------- timers

    def _guard(self) -> float:
        return self._regs[12] / 50.0  # S12 is in 1/50 s

    def _escape_due(self) -> float:
        if self._data and self._esc_count == 3:
            return self._esc_last + self._guard()
        return math.inf

    def _idle_due(self) -> float:
        idle = self.config.idle_timeout
        if self._number is None or not idle > 0:
            return math.inf
        return self._last_rx + idle

    def _run_timers(self, now: float) -> list[Action]:
        out: list[Action] = []
        while self._number is not None:
            escape, idle = self._escape_due(), self._idle_due()
            # `not <=` so that a NaN `now` fires nothing.
            if not min(escape, idle) <= now:
                break
            if escape <= idle:
                self._enter_online_command(out)
            else:
                out.extend(self._end_call("idle"))
                out.extend(self._result(Result.NO_CARRIER))
        return out

    # ---------------------------------------------------------------- data mode

    def _feed_data(self, data: bytes, i: int, now: float, out: list[Action]) -> int:
        """Consume data-mode bytes from `i`; return where data mode stopped."""
        n = len(data)
        esc = self._regs[2]
        escape_on = esc <= 127  # S2 > 127 disables the escape (Hayes convention)
        guard = self._guard()
        while i < n:
            if escape_on:
                if self._esc_count == 3 and now - self._esc_last >= guard:
                    # Only reachable with S12=0: the post-guard is already over.
                    self._enter_online_command(out)
                    return i
                byte = data[i]
                if self._esc_count:
                    if self._esc_count < 3 and byte == esc and now - self._esc_last <= guard:
                        self._esc_count += 1
                        self._esc_last = self._last_rx = now
                        i += 1
                        continue
                    # Not an escape after all: the held characters are data.
                    held = bytes([esc]) * self._esc_count
                    self._esc_count = 0
                    self._deliver(held, 0, len(held), out)
                if byte == esc and now - self._last_rx >= guard:
                    self._esc_count = 1
                    self._esc_last = self._last_rx = now
                    i += 1
                    continue
            self._last_rx = now
            # All bytes of one chunk arrive at the same instant, so after this
            # byte nothing in the chunk has a pre-guard silence: hand the rest
            # to the decoder in one go.  With S12=0 every escape character
            # could start an escape, so stop at the next one.
            end = n
            if escape_on and guard <= 0:
                nxt = data.find(bytes([esc]), i + 1)
                end = n if nxt < 0 else nxt
            i, call_ended = self._deliver(data, i, end, out)
            if call_ended:
                return i
        return i

    def _deliver(self, data: bytes, start: int, end: int, out: list[Action]) -> tuple[int, bool]:
        """Run the frame decoder over data[start:end]; True once EOT ended the call."""
        events, stop = self._decoder.feed(data, start, end)
        for event in events:
            if isinstance(event, FramePayload):
                self._frame(event.payload, out)
            elif isinstance(event, LooseText):
                self._keep_legacy(event.data)
            elif isinstance(event, FrameError):
                out.append(FrameRejected(event.reason, event.raw))
                if event.reason != "truncated":
                    self._queue_answer(encode_nak(event.reason))
                    out.extend(self._flush_answers())
            else:  # EndOfTransmission
                out.extend(self._end_call("eot"))
                out.extend(self._result(Result.NO_CARRIER))
                return stop, True
        return stop, False

    def _frame(self, payload: bytes, out: list[Action]) -> None:
        if len(self._queue) >= MAX_IN_FLIGHT:
            out.append(FrameRejected("overrun", encode_frame(payload)))
            return
        token = self._next_token
        self._next_token += 1
        slot = _Pending(token, None)
        self._queue.append(slot)
        self._pending[token] = slot
        out.append(FrameReceived(token, payload))

    def _queue_answer(self, answer: bytes) -> None:
        if len(self._queue) < MAX_IN_FLIGHT:
            self._queue.append(_Pending(0, answer))

    def _flush_answers(self) -> list[Action]:
        # In online-command mode the DTE reads result codes; answers wait for ATO
        # like remote data in a real modem's buffer.
        out: list[Action] = []
        if not self._data:
            return out
        queue = self._queue
        while queue and queue[0].answer is not None:
            out.append(Write(queue.popleft().answer or b"", "answer"))
        return out

    def _keep_legacy(self, text: bytes) -> None:
        room = MAX_LEGACY - len(self._legacy)
        if len(text) > room:
            self._legacy_dropped += len(text) - max(room, 0)
            text = text[: max(room, 0)]
        self._legacy += text

    # ---------------------------------------------------------------- calls

    def _start_call(self, number: str, now: float) -> None:
        self._number = number
        self._last_rx = now
        self._enter_data(now)

    def _enter_data(self, now: float) -> None:
        self._data = True
        self._esc_count = 0
        self._last_rx = now  # the escape's pre-guard counts from here

    def _enter_online_command(self, out: list[Action]) -> None:
        self._data = False
        self._esc_count = 0  # the escape characters are consumed, never data
        self._pstate = _WAIT_A
        out.extend(self._result(Result.OK))

    def _end_call(self, reason: str) -> list[Action]:
        out: list[Action] = []
        partial = self._decoder.abort()
        if partial is not None:
            out.append(FrameRejected(partial.reason, partial.raw))
        if self._legacy.strip():
            out.append(LegacyText(bytes(self._legacy), self._legacy_dropped))
        out.append(CallEnded(reason))
        self._number = None
        self._data = False
        self._esc_count = 0
        self._legacy.clear()
        self._legacy_dropped = 0
        # Unanswered frames stay stored by the daemon; the sender re-sends them
        # on its next call and gets an ACK for the exact re-send then.
        self._queue.clear()
        self._pending.clear()
        return out

    # ---------------------------------------------------------------- command mode

    def _feed_command(self, data: bytes, i: int, now: float, out: list[Action]) -> int:
        """Consume command-mode bytes from `i`; return where data mode began, or len."""
        n = len(data)
        if self._number is not None:
            self._last_rx = now  # online-command mode: bytes keep the call alive
        echo_from = i
        s3, s5 = self._regs[3], self._regs[5]
        while i < n:
            c = data[i] & 0x7F  # V.250: only the low 7 bits matter
            i += 1
            line: str | None = None
            if self._pstate == _IN_LINE:
                if c == s3:
                    self._pstate = _WAIT_A
                    line = _OVERFLOW if self._overflow else self._line.decode("ascii")
                elif c == s5:
                    if self._line and not self._overflow:
                        self._line.pop()  # the AT prefix itself cannot be erased
                elif c <= 0x20 or c == 0x7F:
                    pass  # spaces and control characters are ignored
                elif len(self._line) >= MAX_LINE:
                    self._overflow = True  # answered ERROR at the terminator
                else:
                    self._line.append(c - 0x20 if 0x61 <= c <= 0x7A else c)
            elif self._pstate == _GOT_A:
                if c in (0x54, 0x74):  # T t
                    self._pstate = _IN_LINE
                    self._line.clear()
                    self._overflow = False
                elif c == 0x2F:  # A/ repeats the last line at once
                    self._pstate = _WAIT_A
                    line = self._last_line
                elif c not in (0x41, 0x61):  # another A restarts the prefix
                    self._pstate = _WAIT_A
            elif c in (0x41, 0x61):
                self._pstate = _GOT_A
            if line is None:
                continue
            # Echo before the answer, and with the E setting in force while the
            # characters were typed.
            if self._echo and echo_from < i:
                out.append(Write(data[echo_from:i], "echo"))
            echo_from = i
            out.extend(self._run_line(line, now))
            s3, s5 = self._regs[3], self._regs[5]
            if self._data:
                return i
        if self._echo and echo_from < n:
            out.append(Write(data[echo_from:n], "echo"))
        return n

    def _run_line(self, line: str, now: float) -> list[Action]:
        if line == _OVERFLOW:
            return self._result(Result.ERROR)
        self._last_line = line
        return self._execute(line, now)

    def _execute(self, body: str, now: float) -> list[Action]:
        out: list[Action] = []
        i, n = 0, len(body)
        while i < n:
            cmd = body[i]
            i += 1
            if cmd == "&":
                if i >= n:
                    return out + self._result(Result.ERROR)
                cmd += body[i]
                i += 1
            if cmd == "D":
                end = body.find(";", i)
                number = normalize_number(body[i:] if end < 0 else body[i:end])
                if self._number is not None or not set(number) <= _DIAL_DIGITS:
                    return out + self._result(Result.ERROR)
                if end >= 0:
                    i = end + 1  # `;`: stay in command mode, go on with the line
                    continue
                return out + self._dial(number, now)
            if cmd == "S":
                return_now, i = self._s_register(body, i, out)
                if return_now:
                    return out + self._result(Result.ERROR)
                continue
            digits_end = i
            while digits_end < n and body[digits_end].isdigit():
                digits_end += 1
            arg = int(body[i:digits_end]) if digits_end > i else 0
            i = digits_end
            final = self._basic(cmd, arg, now, out)
            if final is not None:
                return out + final
        return out + self._result(Result.OK)

    def _basic(self, cmd: str, arg: int, now: float, out: list[Action]) -> list[Action] | None:
        """One basic command; a list is the line's final result (rest ignored)."""
        if cmd in ("E", "V", "Q", "H", "O", "Z") and arg > 1:
            return self._result(Result.ERROR)
        if cmd == "E":
            self._echo = bool(arg)
        elif cmd == "V":
            self._verbose = bool(arg)
        elif cmd == "Q":
            self._quiet = bool(arg)
        elif cmd == "X":
            if arg > 4:
                return self._result(Result.ERROR)
            self._x = arg
        elif cmd == "I":
            out.extend(self._info(self._identity))
        elif cmd == "H":
            if arg == 0 and self._number is not None:
                out.extend(self._end_call("hangup"))
        elif cmd == "O":
            if self._number is None:
                return self._result(Result.NO_CARRIER)
            self._enter_data(now)
            return self._result(Result.CONNECT) + self._flush_answers()
        elif cmd == "Z":
            if self._number is not None:
                out.extend(self._end_call("reset"))
            self._reset_settings()
            return self._result(Result.OK)  # V.250: the rest of the line is ignored
        elif cmd == "&F":
            self._reset_settings()
        elif cmd in ("&C", "&D", "&K", "&W", "L", "M", "B", "N", "W"):
            pass  # accepted for the usual init strings; nothing to emulate
        else:
            return self._result(Result.ERROR)
        return None

    def _s_register(self, body: str, i: int, out: list[Action]) -> tuple[bool, int]:
        """ATSn=v / ATSn?; returns (error, next index)."""
        n = len(body)
        j = i
        while j < n and body[j].isdigit():
            j += 1
        if j == i or j >= n or body[j] not in "=?":
            return True, j
        reg = int(body[i:j])
        if reg > 255:
            return True, j
        if body[j] == "?":
            out.extend(self._info(b"%03d" % self._regs[reg]))
            return False, j + 1
        k = j + 1
        while k < n and body[k].isdigit():
            k += 1
        value = int(body[j + 1 : k]) if k > j + 1 else 0
        if value > 255:
            return True, k
        self._regs[reg] = value
        return False, k

    def _dial(self, number: str, now: float) -> list[Action]:
        if not number:
            return self._result(Result.NO_CARRIER)  # nobody to call
        if self._numbers and number not in self._numbers:
            return self._result(Result.BUSY)
        self._start_call(number, now)
        return [*self._result(Result.CONNECT), CallStarted(number)]

    def _reset_settings(self) -> None:
        self._regs[:] = bytes(256)
        for reg, value in _DEFAULT_REGISTERS.items():
            self._regs[reg] = value
        self._echo = True
        self._verbose = True
        self._quiet = False
        self._x = 4

    # ---------------------------------------------------------------- output

    def _result(self, code: Result) -> list[Action]:
        if self._quiet:
            return []
        cr, lf = bytes((self._regs[3],)), bytes((self._regs[4],))
        if code is Result.CONNECT and self._x > 0:
            text = b"CONNECT %d" % self.config.baud
            number = _CONNECT_CODES.get(self.config.baud, 1)
        else:
            text = code.text.encode("ascii")
            number = code.value
        if self._verbose:
            return [Write(cr + lf + text + cr + lf, "result")]
        return [Write(b"%d" % number + cr, "result")]

    def _info(self, text: bytes) -> list[Action]:
        """Information text (ATI, ATSn?): V.250 frames it like a verbose result."""
        cr, lf = bytes((self._regs[3],)), bytes((self._regs[4],))
        head = cr + lf if self._verbose else b""
        return [Write(head + text + cr + lf, "info")]
