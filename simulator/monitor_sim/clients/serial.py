"""Dial-up lines (SPEC 3.5) through the shared DTE client, `monitor.dte`.

`DialupClient` is blocking (it also runs inside agents), so each line gets
its own worker thread; one call stays up across reports and is hung up on
close.  A port is any pyserial URL or device path (a pty made by `socat`,
`socket://` to a modem bridge, a real port); tests hand in port objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from monitor.dte import DialupClient, DteError, DteOptions, PortLike
from monitor_sim.clients import Outcome
from monitor_sim.wire import Wire

DEFAULT_NUMBER = "0120223042"


def open_url(url: str) -> PortLike:
    import serial

    port: Any = serial.serial_for_url(url, baudrate=115200, timeout=0.05)
    return port  # type: ignore[no-any-return]


class SerialLine:
    def __init__(
        self,
        port: str | PortLike,
        number: str = DEFAULT_NUMBER,
        options: DteOptions | None = None,
        opener: Callable[[str], PortLike] = open_url,
    ) -> None:
        self._spec = port
        self._opener = opener
        self._number = number
        self._options = options or DteOptions(guard_time=0.3, busy_delay=0.2)
        self._client: DialupClient | None = None
        self._port: PortLike | None = None
        self._lock = threading.Lock()  # one thread drives one port

    def _ensure_call(self) -> DialupClient:
        if self._client is None or not self._client.connected:
            if self._port is None:
                self._port = self._opener(self._spec) if isinstance(self._spec, str) else self._spec
            self._client = DialupClient(self._port, self._options)
            self._client.initialize()
            self._client.dial(self._number)
        return self._client

    def _connect(self) -> None:
        with self._lock:
            self._ensure_call()

    async def connect(self) -> None:
        """Dial now (load runs do it before their clock starts)."""
        await asyncio.to_thread(self._connect)

    def _send(self, wire: Wire) -> Outcome:
        with self._lock:
            try:
                client = self._ensure_call()
                result = client.send(wire.report_id, wire.payload)
            except DteError as exc:
                self._client = None
                return Outcome(False, f"error: {exc}")
        if result.ok:
            return Outcome(True, "ACK")
        return Outcome(False, f"NAK {result.reason}", refused=result.outcome == "rejected")

    async def send(self, wire: Wire) -> Outcome:
        return await asyncio.to_thread(self._send, wire)

    def _close(self) -> None:
        with self._lock:
            if self._client is not None and self._client.connected:
                with contextlib.suppress(DteError):
                    self._client.hangup()
            self._client = None
            if isinstance(self._spec, str) and self._port is not None:
                close = getattr(self._port, "close", None)
                if close is not None:
                    close()
                self._port = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)
