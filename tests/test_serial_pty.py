"""Pty plumbing for the serial line tests, and checks of the plumbing itself.

The daemon opens a pty's slave by its path (`/dev/pts/N`), as it would open
`/dev/ttyS0`.  The test plays the DTE on the master side: `MasterPort` gives
the master fd the few pyserial methods `monitor.dte.DialupClient` uses.
Imported by the other `test_serial_*` modules.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


class MasterPort:
    """A pyserial-like port over a pty master fd (the DTE's end of the line)."""

    def __init__(self, fd: int, timeout: float = 0.05) -> None:
        self.fd = fd
        self.timeout: float | None = timeout

    @property
    def in_waiting(self) -> int:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        except OSError:
            return 0
        return buf[0]

    def read(self, size: int = 1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, max(1, size))
        except OSError:  # EIO: no slave open right now
            time.sleep(self.timeout or 0.01)
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass  # os.write already handed the bytes to the line discipline

    def expect(self, want: bytes, timeout: float = 5.0) -> bytes:
        """Read until `want` has arrived; everything read so far is returned."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while want not in got:
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {want!r}, got {bytes(got)!r}")
            got += self.read(4096)
        return bytes(got)

    def drain(self, quiet: float = 0.2) -> bytes:
        """Read until the line has been silent for `quiet` seconds."""
        got = bytearray()
        old, self.timeout = self.timeout, quiet
        try:
            while chunk := self.read(4096):
                got += chunk
        finally:
            self.timeout = old
        return bytes(got)


@dataclass
class PtyLine:
    """One pty pair.  The test keeps the slave fd open too, so the master never
    sees EIO while the daemon closes and re-opens its side."""

    master: int
    slave: int
    path: str
    port: MasterPort = field(init=False)

    def __post_init__(self) -> None:
        self.port = MasterPort(self.master)

    @classmethod
    def open(cls) -> PtyLine:
        master, slave = os.openpty()
        # Raw before the daemon opens it: a fresh pty echoes and maps CR/LF.
        tty.setraw(slave)
        return cls(master, slave, os.ttyname(slave))

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def ptys() -> Iterator[list[PtyLine]]:
    """Opened lines, closed at the end: `line = PtyLine.open(); ptys.append(line)`."""
    lines: list[PtyLine] = []
    yield lines
    for line in lines:
        line.close()


def relink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically, as udev re-creates /dev/serial/by-id links."""
    tmp = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


# -- the plumbing itself ------------------------------------------------------------


def test_master_port_talks_to_the_slave(ptys: list[PtyLine]) -> None:
    line = PtyLine.open()
    ptys.append(line)
    line.port.write(b"AT\r")
    assert os.read(line.slave, 10) == b"AT\r"  # raw: CR is not mapped
    os.write(line.slave, b"\r\nOK\r\n")
    assert line.port.expect(b"OK\r\n") == b"\r\nOK\r\n"
    assert line.port.read(1) == b""  # a timeout is an empty read, as pyserial's


def test_relink_replaces_the_link(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    relink(link, "/dev/null")
    relink(link, "/dev/zero")
    assert os.readlink(link) == "/dev/zero"
