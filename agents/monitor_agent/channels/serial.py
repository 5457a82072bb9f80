"""Dial-up fallback: the DTE side of SPEC 3.5 (`monitor.dte`).

One call per batch: initialise the modem, dial `[serial] number`, send each
report as a frame and wait for its answer (retransmitted on NAK or timeout,
up to 4 tries: `DteOptions.tries`), hang up.  ACK: taken.  NAK `invalid` or
`bad-signature`: refused for good.  No ACK after the tries, BUSY, NO
CARRIER: failed; the call ends there so nothing overtakes the report.

pyserial and the DTE helper are blocking, so a call runs in a worker thread
(`asyncio.to_thread`); it tells the sink about each report as its answer
comes, so a line that drops half-way loses nothing already ACKed.  The port
is any pyserial URL: `/dev/ttyS0`, `socket://host:port`, `rfc2217://…`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

import serial
import structlog

from monitor.dte import DteError, DteOptions, PortLike, deliver
from monitor_agent.channels import ShouldStop, Sink
from monitor_agent.config import SerialSettings
from monitor_agent.spool import Spooled

__all__ = ["Opener", "SerialChannel"]

log = structlog.get_logger("monitor_agent.serial")

NAME = "serial"


# (port URL, baud) -> an open pyserial-like port; tests pass a pty's master.
Opener = Callable[[str, int], Any]


def _open(url: str, baud: int) -> Any:
    return serial.serial_for_url(url, baudrate=baud, timeout=0.05)


class SerialChannel:
    def __init__(
        self,
        settings: SerialSettings,
        options: DteOptions | None = None,
        open_port: Opener = _open,
    ) -> None:
        self.settings = settings
        self.options = options or DteOptions()
        self._open = open_port

    async def send(self, batch: list[Spooled], sink: Sink, stop: ShouldStop) -> bool:
        """One call for the batch; True when every report was taken or refused."""
        return await asyncio.to_thread(self._call, batch, sink, stop)

    def _call(self, batch: list[Spooled], sink: Sink, stop: ShouldStop) -> bool:
        s = self.settings
        try:
            port: PortLike = self._open(s.port, s.baud)
        except (OSError, serial.SerialException, ValueError) as exc:
            log.warning("serial port unavailable", port=s.port, error=str(exc))
            if batch:
                sink.failed(batch[0].seq, NAME, f"open {s.port}: {exc}")
            return False
        by_id = {item.id: item for item in batch}
        done: set[int] = set()

        def reports() -> Any:
            for item in batch:
                if stop():
                    return
                yield item.id, item.body

        results = deliver(port, s.number, reports(), self.options)
        assert isinstance(results, Generator)  # typed as Iterator; close() hangs up
        try:
            for result in results:
                item = by_id[result.report_id]
                done.add(item.seq)
                if result.outcome == "ack":
                    sink.taken(item.seq, NAME)
                elif result.outcome == "rejected":
                    log.error("dial-up refused report", report=item.id, reason=result.reason)
                    sink.refused(item.seq, NAME, f"NAK {result.reason}")
                else:
                    sink.failed(
                        item.seq, NAME, f"no ACK after {result.tries} tries ({result.reason})"
                    )
                    return False  # closing `results` hangs up
        except DteError as exc:
            log.warning("dial-up failed", port=s.port, number=s.number, error=str(exc))
            pending = [item for item in batch if item.seq not in done]
            if pending:
                sink.failed(pending[0].seq, NAME, str(exc))
            return False
        finally:
            results.close()
            close = getattr(port, "close", None)
            if close is not None:
                close()
        return len(done) == len(batch)
