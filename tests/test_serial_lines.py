"""The line driver against a scripted port: DTR drop, a vanishing device,
writes that fail, noise past the quarantine backlog, stop with a frame in
flight; and the small parts (backoff, DSR/DCD edges, NAK reasons).

`SerialListener` takes an `opener`, so these tests hand it `FakePort`s; the
runtime is the real in-process daemon's.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import serial

import monitor.listeners.serial as serial_listener
from monitor.frames import encode_frame
from monitor.listeners.backoff import Backoff
from monitor.listeners.serial import SerialListener, nak_reason
from monitor.listeners.serial_port import LineWatch, SerialPort
from monitor.model import Received, SerialConfig
from tests.support.daemon import RunningDaemon, running, write_config
from tests.test_serial_listener import alarm, quarantined, until


class FakePort:
    """The far end is the test: `feed` bytes in, `expect` what was written.

    `dsr`/`cd` behave like a real port's modem lines, or like a pty's
    (OSError ENOTTY) with `lines=False`.  Setting `fail` makes the next read
    raise it, as pyserial does when a USB adapter is unplugged.
    """

    def __init__(self, *, lines: bool = True) -> None:
        self.lines = lines
        self.dsr_state = True
        self.cd_state = False
        self.fail: Exception | None = None
        self.write_fail: Exception | None = None
        self.closed = False
        self.written = bytearray()
        self._in = bytearray()
        self._cond = threading.Condition()

    # -- pyserial side (the daemon's threads) --

    @property
    def in_waiting(self) -> int:
        with self._cond:
            return len(self._in)

    def read(self, size: int = 1) -> bytes:
        with self._cond:
            if not self._in and self.fail is None:
                self._cond.wait(0.02)
            if self.fail is not None:
                raise self.fail
            data = bytes(self._in[:size])
            del self._in[:size]
            return data

    def write(self, data: bytes) -> int:
        with self._cond:
            if self.write_fail is not None:
                raise self.write_fail
            self.written += data
            self._cond.notify_all()
            return len(data)

    @property
    def dsr(self) -> bool:
        if not self.lines:
            raise OSError(25, "Inappropriate ioctl for device")
        return self.dsr_state

    @property
    def cd(self) -> bool:
        if not self.lines:
            raise OSError(25, "Inappropriate ioctl for device")
        return self.cd_state

    def close(self) -> None:
        self.closed = True

    # -- the test's side --

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._in += data
            self._cond.notify_all()

    def unplug(self) -> None:
        with self._cond:
            self.fail = serial.SerialException(
                "device reports readiness to read but returned no data"
            )
            self._cond.notify_all()

    async def expect(self, want: bytes, timeout: float = 5.0) -> bytes:
        """Wait until `want` was written; return (and consume) everything up to it."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                at = self.written.find(want)
                if at >= 0:
                    got = bytes(self.written[: at + len(want)])
                    del self.written[: at + len(want)]
                    return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {want!r}, written {bytes(self.written)!r}")
            await asyncio.sleep(0.01)


class Opener:
    """Hands out the given ports in turn; `None` stands for "no such device"."""

    def __init__(self, *ports: FakePort | None) -> None:
        self.ports = list(ports)
        self.calls = 0

    def __call__(self, url: str, baud: int) -> SerialPort:
        self.calls += 1
        port = self.ports.pop(0) if self.ports else None
        if port is None:
            raise serial.SerialException(f"[Errno 2] could not open port {url}")
        return port


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_listener, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(serial_listener, "RETRY_CAP", 0.2)


@asynccontextmanager
async def line(
    d: RunningDaemon, opener: Opener, port: str = "fake://1"
) -> AsyncIterator[SerialListener]:
    config = SerialConfig(port=port, baud=9600, numbers=(), idle_timeout=timedelta(seconds=60))
    listener = SerialListener(d.rt, config, opener=opener)
    task = asyncio.create_task(listener.run())
    try:
        yield listener
    finally:
        await listener.stop()
        await asyncio.wait_for(task, 10)
    assert d.rt.listeners[listener.name] is False


async def is_up(d: RunningDaemon, name: str, up: bool = True) -> None:
    async def check() -> bool:
        return d.rt.listeners.get(name) is up

    await until(check, f"{name} {'up' if up else 'down'}")


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running(write_config(tmp_path)) as d:
        yield d


# -- DTR / carrier -------------------------------------------------------------------------


async def test_dtr_drop_ends_the_call(daemon: RunningDaemon) -> None:
    port = FakePort()
    async with line(daemon, Opener(port)) as listener:
        await is_up(daemon, listener.name)
        port.feed(b"ATE0\rATDT123\r")
        await port.expect(b"CONNECT 9600\r\n")
        port.feed(encode_frame(alarm("d-1")))
        assert await port.expect(b"\r") == b"\x06d-1\r"
        port.feed(b"Serial: JPN0012345\r\nSeverity: major\r\nCode: FAN-1\r\nMessage: fan\r\n")
        await asyncio.sleep(0.1)  # the text is on the line before DTR drops
        port.dsr_state = False  # the DTE dropped DTR
        assert await port.expect(b"NO CARRIER\r\n") == b"\r\nNO CARRIER\r\n"
        assert listener.session is not None and listener.session.engine.state == "command"

        async def legacy() -> bool:
            items = (await daemon.get("/api/v1/alarms?device=JPN0012345"))["items"]
            return any(a["format"] == "express" for a in items)

        await until(legacy, "the call's text stored at DTR drop")
        # Back up: nothing happens on a rising edge, and the line takes calls again.
        port.dsr_state = True
        port.feed(b"ATDT123\r")
        await port.expect(b"CONNECT 9600\r\n")


async def test_lines_never_seen_on_or_unreadable_do_nothing(daemon: RunningDaemon) -> None:
    port = FakePort(lines=False)  # a pty: no modem lines
    async with line(daemon, Opener(port)) as listener:
        await is_up(daemon, listener.name)
        port.feed(b"ATE0\rATDT123\r")
        await port.expect(b"CONNECT 9600\r\n")
        await asyncio.sleep(0.15)  # a few polls
        assert listener.session is not None and listener.session.engine.state == "data"


def test_line_watch_edges() -> None:
    port = FakePort()
    port.dsr_state, port.cd_state = True, False  # DSR wired, DCD not
    watch = LineWatch(port)
    assert watch.supported
    assert not watch.poll()
    port.dsr_state = False
    assert watch.poll()  # on → off: the DTE dropped DTR
    assert not watch.poll()  # once per edge
    port.dsr_state = True
    assert not watch.poll()  # rising edges mean nothing
    port.dsr_state = port.cd_state = True
    watch.poll()
    port.dsr_state = port.cd_state = False
    assert watch.poll()  # both wired: one drop
    port.lines = False
    assert not watch.poll()  # unreadable now: decided by the next read, not here
    assert not LineWatch(FakePort(lines=False)).supported


# -- the device goes away and comes back ------------------------------------------------


@pytest.mark.usefixtures("fast_retry")
async def test_device_lost_then_back(daemon: RunningDaemon) -> None:
    first, second = FakePort(), FakePort()
    opener = Opener(None, first, None, None, second)  # missing, there, unplugged, back
    async with line(daemon, opener) as listener:
        await is_up(daemon, listener.name)
        assert opener.calls == 2
        first.feed(b"ATE0\rATDT123\r")
        await first.expect(b"CONNECT 9600\r\n")
        first.feed(b"some text of a legacy agent\r\n")
        await asyncio.sleep(0.1)
        first.unplug()
        await is_up(daemon, listener.name, False)
        await is_up(daemon, listener.name)  # after two more failed opens
        assert opener.calls == 5 and first.closed and listener.opens == 2
        second.feed(b"AT\r")
        assert await second.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"  # a fresh modem: echo on

        async def kept() -> list[str]:
            return await quarantined(daemon)

        # The call died with the device; its text was still parsed (and refused).
        assert await until(kept, "the lost call's text") == ["unrecognised"]
    assert second.closed


@pytest.mark.usefixtures("fast_retry")
async def test_write_failure_counts_as_lost(daemon: RunningDaemon) -> None:
    first, second = FakePort(), FakePort()
    async with line(daemon, Opener(first, second)) as listener:
        await is_up(daemon, listener.name)
        first.write_fail = serial.SerialException("write failed: [Errno 5] Input/output error")
        first.feed(b"AT\r")  # its echo cannot be written

        async def reopened() -> bool:
            return listener.opens == 2

        await until(reopened, "a re-open")
        second.feed(b"AT\r")
        await second.expect(b"OK\r\n")


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    bases = [min(30.0, 0.5 * 2**i) for i in range(10)]
    assert all(base / 2 <= d <= base for d, base in zip(delays, bases, strict=True))
    assert max(delays) <= 30.0
    backoff.reset()
    assert backoff.next() <= 0.5


# -- storing ---------------------------------------------------------------------------


async def test_noise_past_the_quarantine_backlog_is_counted_not_kept(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serial_listener, "QUARANTINE_BACKLOG", 0)
    port = FakePort()
    async with line(daemon, Opener(port)) as listener:
        await is_up(daemon, listener.name)
        port.feed(b"ATE0\rATDT123\r")
        await port.expect(b"CONNECT 9600\r\n")
        port.feed(b"\x02" * 50 + encode_frame(alarm("b-1")))  # each STX cuts the one before
        assert await port.expect(b"\r") == b"\x06b-1\r"
    metric = 'monitor_alarms_rejected_total{channel="serial",reason="truncated"}'
    assert await daemon.metric(metric) == 50
    assert await quarantined(daemon) == []


async def test_stop_answers_the_frame_in_flight_then_hangs_up(daemon: RunningDaemon) -> None:
    port = FakePort()
    real_accept = daemon.rt.pipeline.accept
    storing = asyncio.Event()

    async def slow(rec: Received, received_at: Any = None) -> Any:
        storing.set()
        await asyncio.sleep(0.2)
        return await real_accept(rec, received_at)

    daemon.rt.pipeline.accept = slow  # type: ignore[method-assign]
    async with line(daemon, Opener(port)) as listener:
        await is_up(daemon, listener.name)
        port.feed(b"ATE0\rATDT123\r")
        await port.expect(b"CONNECT 9600\r\n")
        port.feed(encode_frame(alarm("i-1")))
        await storing.wait()
    # stop() has returned: the ACK went out after the commit, then NO CARRIER.
    assert await port.expect(b"NO CARRIER\r\n", timeout=0.1) == b"\x06i-1\r\r\nNO CARRIER\r\n"
    assert port.closed


@pytest.mark.parametrize(
    ("reason", "nak"),
    [("invalid", "invalid"), ("bad-signature", "bad-signature"), ("busy", "busy"),
     ("topic-mismatch", "invalid"), ("internal-error", "invalid")],
)  # fmt: skip
def test_nak_reasons(reason: str, nak: str) -> None:
    assert nak_reason(reason) == nak


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [
            t
            for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("serial:")
        ]
        if not left:
            return
        time.sleep(0.02)
    raise AssertionError(f"line threads left running: {left}")
