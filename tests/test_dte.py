"""The DTE helper against the real ModemEngine over a real pty pair.

A thread pumps the engine on the pty master (the daemon's side); the DTE opens
the slave with pyserial like an agent opens /dev/ttyS0.
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
import serial

from monitor.dte import (
    CarrierLost,
    DialError,
    DialupClient,
    DteOptions,
    SendResult,
    deliver,
)
from monitor.frames import MAX_PAYLOAD
from monitor.modem import (
    Action,
    CallEnded,
    CallStarted,
    FrameReceived,
    LegacyText,
    ModemEngine,
    ModemSettings,
    Write,
)

NUMBER = "0120223042"
# What the fake daemon does with frame number n (0-based) of a call:
# ("ack", None) ACK with the payload's id; ("nak", reason); ("lose", None) ACK
# that never reaches the line; ("late", None) ACK only when the next frame
# comes in; ("hangup", None) drop the call instead.
Verdict = tuple[str, str | None]
Policy = Callable[[int, bytes], Verdict]
T = TypeVar("T")


def always_ack(n: int, payload: bytes) -> Verdict:
    return ("ack", None)


@dataclass
class PtyDce:
    """ModemEngine on the master side of a pty, pumped by a thread."""

    policy: Policy = always_ack
    settings: ModemSettings = field(default_factory=lambda: ModemSettings(numbers=(NUMBER,)))
    swallow: bytes = b""  # bytes the "line" loses on the way to the modem
    actions: list[Action] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    _late: list[tuple[int, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = ModemEngine(self.settings)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="pty-dce", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            os.close(fd)

    def _run(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            ready, _, _ = select.select([self.master, self._stop_r], [], [], wait)
            if self._stop_r in ready:
                return
            now = time.monotonic()
            if self.master in ready:
                data = os.read(self.master, 65536)
                for b in self.swallow:
                    data = data.replace(bytes([b]), b"")
                self._handle(self.engine.feed(data, now), now)
            self._handle(self.engine.tick(now), now)

    def _handle(self, actions: list[Action], now: float) -> None:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, Write):
                os.write(self.master, action.data)
            elif isinstance(action, FrameReceived):
                self._answer(action, now)

    def _answer(self, frame: FrameReceived, now: float) -> None:
        for token, late_id in self._late:
            self._handle(self.engine.report_result(token, late_id, None, now), now)
        self._late.clear()
        n = len(self.frames)
        self.frames.append(frame.payload)
        verdict, reason = self.policy(n, frame.payload)
        if verdict == "hangup":
            self._handle(self.engine.hangup(now), now)
            return
        report_id = json.loads(frame.payload)["id"]
        if verdict == "nak":
            self._handle(self.engine.report_result(frame.token, None, reason, now), now)
            return
        if verdict == "late":
            self._late.append((frame.token, report_id))
            return
        answers = self.engine.report_result(frame.token, report_id, None, now)
        if verdict == "lose":
            answers = [a for a in answers if not (isinstance(a, Write) and a.kind == "answer")]
        self._handle(answers, now)

    def of(self, kind: type[T]) -> list[T]:
        return [a for a in self.actions if isinstance(a, kind)]


MakeLine = Callable[..., tuple[PtyDce, serial.Serial]]


@pytest.fixture
def make_line() -> Iterator[MakeLine]:
    opened: list[tuple[PtyDce, serial.Serial]] = []

    def make(**kwargs: object) -> tuple[PtyDce, serial.Serial]:
        dce = PtyDce(**kwargs)  # type: ignore[arg-type]
        port = serial.Serial(dce.path, baudrate=9600, timeout=0.05)
        opened.append((dce, port))
        return dce, port

    yield make
    for dce, port in opened:
        port.close()
        dce.close()


# Short enough for a quick suite, long enough for a loaded CI machine.
FAST = DteOptions(command_timeout=2.0, connect_timeout=2.0, answer_timeout=0.8, busy_delay=0.05)


def alarm(i: int) -> bytes:
    return json.dumps(
        {"v": 1, "id": f"r-{i}", "serial": "JPN0012345", "severity": "critical",
         "code": "PSU-0003", "message": "Power supply 1 failure detected"}
    ).encode()  # fmt: skip


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_full_session(make_line: MakeLine) -> None:
    dce, port = make_line()
    client = DialupClient(port, FAST)
    client.initialize()  # the modem starts with echo on: the client skips it
    assert client.command("ATI").info == (dce.settings.identity,)
    assert client.dial(NUMBER) == "CONNECT 9600"
    results = [client.send(f"r-{i}", alarm(i)) for i in range(3)]
    assert results == [SendResult(f"r-{i}", "ack", "", 1) for i in range(3)]
    client.hangup()
    assert not client.connected
    wait_for(lambda: dce.engine.state == "command")
    assert dce.frames == [alarm(i) for i in range(3)]
    assert dce.of(CallStarted) == [CallStarted(NUMBER)]
    assert dce.of(CallEnded) == [CallEnded("eot")]


def test_busy_number(make_line: MakeLine) -> None:
    _, port = make_line()
    client = DialupClient(port, FAST)
    client.initialize()
    with pytest.raises(DialError) as err:
        client.dial("999")
    assert err.value.result == "BUSY"
    assert not client.connected


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (("nak", "busy"), SendResult("r-0", "ack", "", 2)),
        (("nak", "crc"), SendResult("r-0", "ack", "", 2)),
        (("lose", None), SendResult("r-0", "ack", "", 2)),  # timeout, then re-send
        (("nak", "invalid"), SendResult("r-0", "rejected", "invalid", 1)),
        (("nak", "bad-signature"), SendResult("r-0", "rejected", "bad-signature", 1)),
    ],
)
def test_retransmission(make_line: MakeLine, first: Verdict, expected: SendResult) -> None:
    dce, port = make_line(policy=lambda n, p: first if n == 0 else ("ack", None))
    client = DialupClient(port, FAST)
    with client.call(NUMBER):
        assert client.send("r-0", alarm(0)) == expected
        # The line is still in step: the next report goes through at once.
        assert client.send("r-1", alarm(1)) == SendResult("r-1", "ack", "", 1)
    assert len(dce.frames) == expected.tries + 1


def test_gives_up_after_four_tries(make_line: MakeLine) -> None:
    dce, port = make_line(policy=lambda n, p: ("nak", "busy"))
    client = DialupClient(port, FAST)
    with client.call(NUMBER):
        assert client.send("r-0", alarm(0)) == SendResult("r-0", "failed", "busy", 4)
    assert len(dce.frames) == 4


def test_stale_ack_of_an_earlier_copy_is_ignored(
    make_line: MakeLine,
) -> None:
    # The store is slow: the first copy is answered only after the sender timed
    # out and sent a second one.  That ACK satisfies the sender; the second
    # copy's ACK (same id) then arrives while it waits for the next report.
    dce, port = make_line(policy=lambda n, p: ("late", None) if n == 0 else ("ack", None))
    client = DialupClient(port, FAST)
    with client.call(NUMBER):
        assert client.send("r-0", alarm(0)) == SendResult("r-0", "ack", "", 2)
        assert client.send("r-1", alarm(1)) == SendResult("r-1", "ack", "", 1)
    written = [a.data for a in dce.of(Write) if a.kind == "answer"]
    assert written == [b"\x06r-0\r", b"\x06r-0\r", b"\x06r-1\r"]


def test_carrier_lost_while_waiting(make_line: MakeLine) -> None:
    _, port = make_line(policy=lambda n, p: ("hangup", None))
    client = DialupClient(port, FAST)
    client.initialize()
    client.dial(NUMBER)
    with pytest.raises(CarrierLost):
        client.send("r-0", alarm(0))
    assert not client.connected


def test_hangup_falls_back_to_escape_and_ath(
    make_line: MakeLine,
) -> None:
    dce, port = make_line(swallow=b"\x04")  # the EOT never arrives
    options = DteOptions(
        init=("ATE0Q0V1", "ATS12=5"),  # 0.1 s guard keeps the test short
        command_timeout=1.0,
        guard_time=0.2,
    )
    client = DialupClient(port, options)
    with client.call(NUMBER):
        assert client.send("r-0", alarm(0)).ok
    wait_for(lambda: dce.engine.state == "command")
    assert dce.of(CallEnded) == [CallEnded("hangup")]


def test_legacy_text(make_line: MakeLine) -> None:
    dce, port = make_line()
    client = DialupClient(port, FAST)
    with client.call(NUMBER):
        client.send_text(b"Subject: PSU failure\r\n\r\nPower supply 1 failed\r\n")
    wait_for(lambda: bool(dce.of(CallEnded)))
    assert dce.of(LegacyText) == [
        LegacyText(b"Subject: PSU failure\r\n\r\nPower supply 1 failed\r\n")
    ]


def test_deliver_yields_each_result(make_line: MakeLine) -> None:
    dce, port = make_line(policy=lambda n, p: ("nak", "invalid") if n == 1 else ("ack", None))
    reports = [(f"r-{i}", alarm(i)) for i in range(3)]
    results = list(deliver(port, NUMBER, reports, FAST))
    assert [r.outcome for r in results] == ["ack", "rejected", "ack"]
    wait_for(lambda: dce.engine.state == "command")


def test_unframeable_reports_are_refused_locally(
    make_line: MakeLine,
) -> None:
    dce, port = make_line()
    client = DialupClient(port, FAST)
    with client.call(NUMBER):
        assert client.send("big", b"x" * (MAX_PAYLOAD + 1)) == SendResult(
            "big", "rejected", "too-long"
        )
        assert client.send("ctl", b"a\x03b").outcome == "rejected"
        assert client.send_alarm(json.loads(alarm(7))) == SendResult("r-7", "ack", "", 1)
    assert len(dce.frames) == 1


def test_initialize_ends_a_stale_call(make_line: MakeLine) -> None:
    # The agent's previous run died in a call that the daemon still holds.
    dce, port = make_line()
    port.write(b"ATE0S12=5DT" + NUMBER.encode() + b"\r")  # S12=5: a 0.1 s guard
    wait_for(lambda: dce.engine.state == "data")
    client = DialupClient(port, DteOptions(command_timeout=1.0, guard_time=0.2))
    client.initialize()  # the init line is taken for data: escape, ATH, again
    assert dce.of(CallEnded) == [CallEnded("hangup")]
    assert client.dial(NUMBER) == "CONNECT 9600"
    client.hangup()
