"""The DTE side of the serial dial-up channel (SPEC 3.5): an agent's modem port.

A small blocking helper around any pyserial-like port (a real ``serial.Serial``,
``serial_for_url("socket://…")``, a pty): initialise the modem, dial, send
framed reports with stop-and-wait retransmission, hang up.  Blocking keeps it
usable from a thread (``asyncio.to_thread``) in the agent and from the
simulator's worker threads alike; the protocol details live in
`monitor.frames`, shared with the daemon's side.

Timers use a monotonic clock (protocol timers run on wall time, SPEC 3.5);
both the clock and `sleep` can be injected.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Literal, Protocol

from monitor.frames import (
    FINAL_NAK_REASONS,
    MAX_PAYLOAD,
    Ack,
    Answer,
    AnswerDecoder,
    Line,
    Nak,
    answer_field,
    encode_frame,
)


class PortLike(Protocol):
    """What the helper needs of a pyserial port."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def write(self, data: bytes, /) -> int | None: ...

    def read(self, size: int = 1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class DteOptions:
    # E0Q0V1 first: its own result is already verbose and unechoed-from-now-on,
    # whatever state an earlier user left the modem in.
    init: tuple[str, ...] = ("ATE0Q0V1", "AT&C1&D2")
    command_timeout: float = 5.0
    connect_timeout: float = 60.0  # real modems take 20-40 s to train
    # Per try.  FORMATS 7.5 quotes 2.5 s for alarm panels; our ACK waits for a
    # durable commit, so allow for a busy store.
    answer_timeout: float = 5.0
    tries: int = 4
    busy_delay: float = 1.0  # NAK busy: storage unavailable, wait before the next try
    guard_time: float = 1.2  # silence around +++; above the modem's S12 (1 s)
    poll: float = 0.05  # port read timeout: the granularity of our own timeouts


Outcome = Literal["ack", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one report fared.

    ``ack``: stored by the daemon.  ``rejected``: refused for good (NAK
    invalid/bad-signature, or refused locally); move it out of the spool.
    ``failed``: no ACK after all tries (`reason` is the last NAK or
    ``timeout``); keep it for a later call.
    """

    report_id: str
    outcome: Outcome
    reason: str = ""
    tries: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "ack"


@dataclass(frozen=True, slots=True)
class CommandResult:
    final: str  # OK, ERROR, CONNECT 9600, BUSY, …
    info: tuple[str, ...] = ()  # information text lines (ATI, ATSn?)


class DteError(Exception):
    """The modem or the line failed; reports not acknowledged stay spooled."""


class ModemError(DteError):
    def __init__(self, command: str, result: str) -> None:
        super().__init__(f"{command}: {result}")
        self.command = command
        self.result = result


class DialError(DteError):
    def __init__(self, number: str, result: str) -> None:
        super().__init__(f"dial {number}: {result}")
        self.number = number
        self.result = result  # BUSY, NO CARRIER, ERROR, timeout, …


class CarrierLost(DteError):
    """NO CARRIER while a call was up (the daemon dropped it, idle timeout)."""


_FINAL = frozenset({"OK", "ERROR", "NO CARRIER", "BUSY", "NO DIALTONE", "NO ANSWER"})


def _is_final(text: str) -> bool:
    return text in _FINAL or text.startswith("CONNECT")


def _squash(text: str) -> str:
    return text.replace(" ", "").upper()


class DialupClient:
    """One modem line.  Not thread-safe: one thread drives one port."""

    def __init__(
        self,
        port: PortLike,
        options: DteOptions | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._port = port
        self._opt = options or DteOptions()
        self._monotonic = monotonic
        self._sleep = sleep
        self._decoder = AnswerDecoder()
        self._events: deque[Answer] = deque()
        self._connected = False
        # Short reads make every wait below a deadline loop; set once, because
        # changing a pyserial timeout reconfigures the port each time.
        port.timeout = self._opt.poll

    @property
    def connected(self) -> bool:
        return self._connected

    # ---------------------------------------------------------------- command mode

    def command(self, line: str, timeout: float | None = None) -> CommandResult:
        """Send one command line (with its AT) and wait for its final result code."""
        self._discard_input()  # a stale CONNECT or OK must not pass for our answer
        self._write(line.encode("ascii") + b"\r")
        deadline = self._monotonic() + (self._opt.command_timeout if timeout is None else timeout)
        info: list[str] = []
        while (event := self._next(deadline)) is not None:
            if not isinstance(event, Line) or _squash(event.text) == _squash(line):
                continue  # a stale frame answer, or our own echo
            if _is_final(event.text):
                return CommandResult(event.text, tuple(info))
            info.append(event.text)
        raise ModemError(line, "timeout")

    def initialize(self) -> None:
        """Send the init lines; if the modem does not answer, end a stale call first.

        A modem still in data mode (our previous run died mid-call and the
        daemon's idle timeout has not struck yet) takes commands for data and
        stays silent: escape to command mode, hang up, and start again.
        """
        try:
            self._init_lines()
        except ModemError as exc:
            if exc.result != "timeout":
                raise
            self.escape()
            self.command("ATH")
            self._init_lines()

    def _init_lines(self) -> None:
        for line in self._opt.init:
            result = self.command(line)
            if result.final != "OK":
                raise ModemError(line, result.final)

    def dial(self, number: str) -> str:
        """ATDT<number>; returns the CONNECT line or raises DialError."""
        try:
            result = self.command(f"ATDT{number}", self._opt.connect_timeout)
        except ModemError as exc:
            raise DialError(number, exc.result) from None
        if not result.final.startswith("CONNECT"):
            raise DialError(number, result.final)
        self._connected = True
        return result.final

    @contextmanager
    def call(self, number: str) -> Iterator[DialupClient]:
        """Initialise, dial, and hang up at the end whatever happens."""
        self.initialize()
        self.dial(number)
        try:
            yield self
        finally:
            if self._connected:
                with suppress(DteError):
                    self.hangup()

    # ---------------------------------------------------------------- data mode

    def send(self, report_id: str, payload: bytes) -> SendResult:
        """Send one framed report and wait for its answer, retrying per DteOptions.

        Raises CarrierLost if the line drops (the report may or may not have
        been stored: the next call re-sends it and the daemon ACKs the exact
        re-send).
        """
        if not self._connected:
            raise DteError("not connected")
        if len(payload) > MAX_PAYLOAD:
            return SendResult(report_id, "rejected", "too-long")
        try:
            frame = encode_frame(payload)
        except ValueError:
            return SendResult(report_id, "rejected", "invalid")  # raw control bytes: not JSON
        want = answer_field(report_id).decode("utf-8", "replace")
        reason = "timeout"
        self._events.clear()
        for attempt in range(1, self._opt.tries + 1):
            self._write(frame)
            answer = self._await_answer(want)
            if isinstance(answer, Ack):
                return SendResult(report_id, "ack", "", attempt)
            reason = "timeout" if answer is None else answer.reason
            if reason in FINAL_NAK_REASONS:
                return SendResult(report_id, "rejected", reason, attempt)
            if reason == "busy" and attempt < self._opt.tries:
                self._sleep(self._opt.busy_delay)
        return SendResult(report_id, "failed", reason, self._opt.tries)

    def send_alarm(self, alarm: Mapping[str, object]) -> SendResult:
        """Send a SPEC 3.1 alarm object (compact JSON, UTF-8)."""
        payload = json.dumps(alarm, separators=(",", ":"), ensure_ascii=False).encode()
        return self.send(str(alarm.get("id", "")), payload)

    def send_text(self, text: bytes) -> None:
        """Plain text, as a legacy agent sends it; the daemon parses it at hang-up."""
        if not self._connected:
            raise DteError("not connected")
        self._write(text)

    def hangup(self) -> None:
        """End the call: EOT, or if the modem does not answer, +++ then ATH."""
        if not self._connected:
            return
        self._connected = False
        self._events.clear()
        self._write(b"\x04")
        deadline = self._monotonic() + self._opt.command_timeout
        while (event := self._next(deadline)) is not None:
            if isinstance(event, Line) and event.text == "NO CARRIER":
                return
        self.escape()
        self.command("ATH")

    def escape(self) -> None:
        """+++ with the guard time around it: back to command mode, call still up."""
        self._sleep(self._opt.guard_time)
        self._events.clear()
        self._write(b"+++")
        deadline = self._monotonic() + self._opt.guard_time + self._opt.command_timeout
        while (event := self._next(deadline)) is not None:
            if isinstance(event, Line) and event.text in ("OK", "NO CARRIER"):
                return
        raise ModemError("+++", "timeout")

    # ---------------------------------------------------------------- plumbing

    def _await_answer(self, want: str) -> Ack | Nak | None:
        deadline = self._monotonic() + self._opt.answer_timeout
        while (event := self._next(deadline)) is not None:
            if isinstance(event, Ack):
                if event.id == want:
                    return event
                # An ACK for an earlier copy of an earlier report: already done.
            elif isinstance(event, Nak):
                return event
            elif event.text == "NO CARRIER":
                self._connected = False
                raise CarrierLost("NO CARRIER while waiting for an answer")
        return None

    def _next(self, deadline: float) -> Answer | None:
        while not self._events:
            if self._monotonic() >= deadline:
                return None
            waiting = self._port.in_waiting
            data = self._port.read(waiting if waiting > 0 else 1)
            if data:
                self._events.extend(self._decoder.feed(data))
        return self._events.popleft()

    def _discard_input(self) -> None:
        waiting = self._port.in_waiting
        if waiting > 0:
            self._port.read(waiting)
        self._decoder = AnswerDecoder()
        self._events.clear()

    def _write(self, data: bytes) -> None:
        self._port.write(data)
        flush = getattr(self._port, "flush", None)
        if flush is not None:
            flush()  # the guard time only counts once the bytes are on the line


def deliver(
    port: PortLike,
    number: str,
    reports: Iterable[tuple[str, bytes]],
    options: DteOptions | None = None,
) -> Iterator[SendResult]:
    """One call that sends `(report_id, payload)` pairs in order, yielding each result.

    Results are yielded as they come, so a caller can move each report out of
    its spool even if the line drops half-way (DteError is raised then).
    """
    client = DialupClient(port, options)
    with client.call(number):
        for report_id, payload in reports:
            yield client.send(report_id, payload)
