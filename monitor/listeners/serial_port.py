"""One open serial port, driven by two threads for the line driver (`serial.py`).

pyserial is blocking, and its URL handlers (device files, ptys, `socket://`,
`rfc2217://`, `loop://`) have no common file descriptor an event loop could
watch.  So each open port gets:

- a **reader thread**: blocking reads with a short timeout.  The bytes go to
  the loop with `call_soon_threadsafe`.  Between reads, the thread samples
  DSR/DCD where the port reports them (`LineWatch`);
- a **writer thread**: writes in order, so a slow or stuck line never blocks
  the loop or the reader.

A read or write error means the device is gone (USB adapter unplugged, pty
master closed, socket dropped).  `on_lost` is then called once, on the loop.
The owner closes this object and opens the port again later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol, cast

import serial
import structlog

log = structlog.get_logger("monitor.serial")

#: Read timeout.  It bounds how long the reader takes to notice a stop; a
#: waiting read returns as soon as a byte arrives, so it adds no latency.
READ_POLL: Final = 0.05
#: A write that cannot finish in this time (a pty nobody reads, a line held by
#: flow control) is dropped: the DTE is not listening anyway.
WRITE_TIMEOUT: Final = 2.0
#: How often DSR/DCD are sampled.
LINES_POLL: Final = 0.05
#: Chunks read but not yet fed to the engine.  When the loop falls behind, the
#: reader waits, and the kernel's buffer (then the line's flow control, or a
#: pty writer's blocking write) holds the rest, instead of our memory.
MAX_PENDING_READS: Final = 64
#: Longest wait for a thread to end when closing.
JOIN_TIMEOUT: Final = WRITE_TIMEOUT + 1.0


class SerialPort(Protocol):
    """What the line driver needs of a pyserial port (any URL handler)."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1, /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


Opener = Callable[[str, int], SerialPort]


def open_port(url: str, baud: int) -> SerialPort:
    """Open any pyserial URL (blocking: run it in a thread).

    `exclusive` takes a POSIX advisory lock on device files, so two daemons
    (or a daemon and a terminal program) do not share one line.  Other URL
    handlers ignore it.  pyserial asserts DTR on open and we leave it up: on
    a null-modem cable the DTE then sees DSR and DCD on, like a powered modem
    with ``&C0`` (docs/protocols.md, "Line driver").
    """
    port = serial.serial_for_url(
        url, baudrate=baud, timeout=READ_POLL, write_timeout=WRITE_TIMEOUT, exclusive=True
    )
    return cast(SerialPort, port)


class LineWatch:
    """Falling edges of DSR and DCD: the DTE dropped DTR.

    A DCE-emulating port is a PC's DTE port on a null-modem cable, which
    wires the far side's DTR to our DSR, and usually to our DCD as well.
    Only a line that was seen **on** and then goes **off** counts.  A line
    that is never on (a 3-wire cable) or always on (a loopback-wired
    connector, ``socket://``, ``loop://``) never fires.  Ptys have no modem
    lines at all: reading them raises ENOTTY, and the watch is off.
    """

    _LINES: Final = ("dsr", "cd")

    def __init__(self, port: object) -> None:
        self._port = port
        self._last: dict[str, bool] = {}
        for name in self._LINES:
            state = self._read(name)
            if state is not None:
                self._last[name] = state

    @property
    def supported(self) -> bool:
        return bool(self._last)

    def _read(self, name: str) -> bool | None:
        try:
            return bool(getattr(self._port, name))
        except (OSError, AttributeError, NotImplementedError, ValueError):
            # pyserial's SerialException is an OSError.  A line that cannot
            # be read now (the device is going away) is decided by the next read.
            return None

    def poll(self) -> bool:
        """Sample the lines; True when one that was on went off."""
        dropped = False
        for name, was in self._last.items():
            now = self._read(name)
            if now is None:
                continue
            dropped = dropped or (was and not now)
            self._last[name] = now
        return dropped


_Flush = concurrent.futures.Future[None]


class PortIO:
    """An open port, its reader and writer threads, and callbacks on the loop.

    `on_data(bytes)`, `on_lost(reason)` and `on_dtr_drop()` run on `loop`.
    `on_lost` is called at most once; after it, writes are discarded.
    """

    def __init__(
        self,
        port: SerialPort,
        loop: asyncio.AbstractEventLoop,
        *,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[str], None],
        on_dtr_drop: Callable[[], None],
        name: str = "",
    ) -> None:
        self.port = port
        self._loop = loop
        self._on_data = on_data
        self._on_lost = on_lost
        self._on_dtr_drop = on_dtr_drop
        self._name = name
        self._reading = threading.Event()
        self._writes: queue.SimpleQueue[bytes | _Flush | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(MAX_PENDING_READS)
        self._lost_lock = threading.Lock()
        self._lost = False
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-rx", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-tx", daemon=True)
        self._closed = False

    # -- loop side ----------------------------------------------------------------

    def start(self) -> None:
        self._reading.set()
        self._reader.start()
        self._writer.start()

    def write(self, data: bytes) -> None:
        """Queue bytes for the line; they leave in the order queued."""
        if data and not self._closed:
            self._writes.put(data)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was written (or dropped)."""
        if self._closed or not self._writer.is_alive():
            return True
        marker: _Flush = concurrent.futures.Future()
        self._writes.put(marker)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wrap_future(marker)
        except TimeoutError:
            return False
        return True

    def stop_reading(self) -> None:
        """No more `on_data` calls (bytes still arriving are left unread)."""
        self._reading.clear()

    async def close(self) -> None:
        """Stop both threads and close the port.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._reading.clear()
        self._writes.put(None)
        # Shielded: a second cancellation (forced shutdown) must not leave the
        # port open with its threads running.
        await asyncio.shield(asyncio.to_thread(self._join_and_close))

    # -- threads --------------------------------------------------------------------

    def _join_and_close(self) -> None:
        if self._reader.is_alive():
            self._reader.join(JOIN_TIMEOUT)
        if self._writer.is_alive():
            self._writer.join(JOIN_TIMEOUT)
        try:
            self.port.close()
        except Exception as exc:  # a vanished device may fail even to close
            log.debug("serial port close failed", port=self._name, error=str(exc))

    def _post(self, fn: Callable[..., None], *args: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody to tell
            return False
        return True

    def _deliver(self, data: bytes) -> None:  # on the loop
        self._slots.release()
        self._on_data(data)

    def _report_lost(self, reason: str) -> None:
        with self._lost_lock:
            if self._lost:
                return
            self._lost = True
        self._post(self._on_lost, reason)

    def _read_loop(self) -> None:
        port = self.port
        watch = LineWatch(port)
        next_poll = time.monotonic() + LINES_POLL
        while self._reading.is_set():
            try:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting > 0:
                        data += port.read(waiting)
            except Exception as exc:
                # Every failure of a read is "the device is gone": pyserial
                # raises SerialException/OSError, exotic URL handlers others.
                if self._reading.is_set():
                    self._report_lost(f"read failed: {exc}")
                return
            if data:
                while not self._slots.acquire(timeout=READ_POLL):
                    if not self._reading.is_set():
                        return
                if not self._reading.is_set() or not self._post(self._deliver, data):
                    return
            if watch.supported:
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = now + LINES_POLL
                    if watch.poll() and not self._post(self._on_dtr_drop):
                        return

    def _write_loop(self) -> None:
        port = self.port
        while True:
            item = self._writes.get()
            if item is None:
                return
            if isinstance(item, concurrent.futures.Future):
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    item.set_result(None)
                continue
            if self._lost:
                continue  # the device is gone; keep draining for flush markers
            try:
                port.write(item)
            except serial.SerialTimeoutException:
                log.warning(
                    "serial write timed out; bytes dropped (is the DTE reading?)",
                    port=self._name,
                    size=len(item),
                )
            except Exception as exc:
                self._report_lost(f"write failed: {exc}")
