"""The serial line driver (SPEC 3.5): one emulated Hayes modem per `[[serial]]` port.

A thin shell (DESIGN rule 4) around `monitor.modem.ModemEngine`.  The engine
lives on the event loop.  `serial_port.PortIO` moves the bytes in and out with
a reader and a writer thread.  The engine's timers (escape guard, idle) run
on `time.monotonic()`, because protocol timers are wall time whatever the
daemon's clock says.

For every frame with a good CRC: decode, `pipeline.accept`, and only then
``ACK <id>`` (or ``NAK <reason>``; ``busy`` when storage is unavailable).
One task per line stores frames one after another, so answers leave in
frame order, as the engine requires.  Rejected frames and a legacy agent's
unframed text go to a second task, so quarantine writes never delay an ACK.

Each line is independent: its own port, threads, engine and tasks.  If the
device disappears (read or write error) the listener reports itself down,
closes the port and opens it again with exponential backoff (capped at
`RETRY_CAP`).  When it comes back, the modem starts fresh, like a modem that
was power-cycled.  See docs/protocols.md, "Line driver".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

import structlog

from monitor.formats.alarm_json import Invalid, decode_alarm
from monitor.formats.devices import DeviceIndex
from monitor.formats.mail import MailAck, MailReject, MailReports, parse_text
from monitor.frames import NAK_REASONS
from monitor.listeners.backoff import Backoff
from monitor.listeners.serial_port import Opener, PortIO, SerialPort, open_port
from monitor.model import Config, Received, Rejected, SerialConfig
from monitor.modem import (
    Action,
    CallEnded,
    CallStarted,
    FrameReceived,
    FrameRejected,
    LegacyText,
    ModemEngine,
    ModemSettings,
    Write,
)
from monitor.pipeline import Refused
from monitor.store import StorageUnavailable

if TYPE_CHECKING:
    from monitor.runtime import Runtime

log = structlog.get_logger("monitor.serial")

CHANNEL: Final = "serial"
#: First re-open delay after the port failed or vanished; doubles up to the cap.
RETRY_FIRST: Final = 0.5
RETRY_CAP: Final = 30.0
#: A port that stayed open this long resets the backoff.  A device that opens
#: and fails at once keeps backing off rather than spinning every half second.
STABLE_SECONDS: Final = 10.0
#: How long a stop (or a vanished device) waits for frames being stored,
#: for the last answers to be written, and for quarantine writes (each); the
#: daemon gives a listener's whole stop a few seconds.
DRAIN_SECONDS: Final = 1.0
#: Rejected frames waiting to be quarantined.  A line full of noise can make
#: one per STX; past this they are only counted, so noise cannot flood the
#: store.
QUARANTINE_BACKLOG: Final = 256
#: Tries to store a legacy text when storage is unavailable: its sender has
#: hung up and cannot be asked to send it again.
LEGACY_TRIES: Final = 3
LEGACY_RETRY_PAUSE: Final = 1.0


def nak_reason(reason: str) -> str:
    """A NAK reason of SPEC 3.5 for a refusal; anything else is `invalid`."""
    return reason if reason in NAK_REASONS else "invalid"


class SerialListener:
    """One `[[serial]]` port: open, serve calls, re-open when the device comes back."""

    def __init__(self, rt: Runtime, config: SerialConfig, *, opener: Opener = open_port) -> None:
        self.rt = rt
        self.config = config
        self.name = f"serial:{config.port}"
        self._opener = opener
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()  # set while no port is open
        self._idle.set()
        self._index: tuple[Config, DeviceIndex] | None = None
        self.session: LineSession | None = None  # the open port's session (tests)
        self.opens = 0  # successful opens (tests, logs)

    # -- Listener protocol -----------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        last_error = ""
        try:
            while not self._stopping.is_set():
                try:
                    port = await self._open()
                except Exception as exc:
                    # Missing device, permissions, a bad URL, a refused socket:
                    # all are "not there yet"; /readyz shows the line down.
                    error = f"{type(exc).__name__}: {exc}"
                    delay = backoff.next()
                    if error != last_error:  # one line per new reason, not per retry
                        log.warning(
                            "serial port unavailable",
                            port=self.config.port,
                            error=error,
                            retry_in=round(delay, 2),
                        )
                        last_error = error
                    await self._pause(delay)
                    continue
                last_error = ""
                opened_at = time.monotonic()
                await self._serve(port)
                if time.monotonic() - opened_at >= STABLE_SECONDS:
                    backoff.reset()
                if not self._stopping.is_set():
                    await self._pause(backoff.next())
        finally:
            self.rt.set_listener(self.name, False)

    async def stop(self) -> None:
        """Take no more bytes, answer the frames being stored, hang up, close."""
        self._stopping.set()
        await self._idle.wait()

    # -- port life --------------------------------------------------------------------

    async def _open(self) -> SerialPort:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self._opener, self.config.port, self.config.baud)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Cancelled while the thread was opening: close what it opens.
            opening.add_done_callback(_close_quietly)
            raise

    async def _serve(self, port: SerialPort) -> None:
        self._idle.clear()
        self.opens += 1
        session = LineSession(self, port)
        self.session = session
        self.rt.set_listener(self.name, True)
        log.info("serial port open", port=self.config.port, baud=self.config.baud)
        try:
            await session.serve(self._stopping)
        finally:
            self.rt.set_listener(self.name, False)
            self.session = None
            self._idle.set()

    async def _pause(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()

    def device_index(self) -> DeviceIndex:
        """The device index of the current config snapshot (rebuilt after SIGHUP)."""
        config = self.rt.config.current
        if self._index is None or self._index[0] is not config:
            self._index = (config, DeviceIndex(config.devices))
        return self._index[1]


def _close_quietly(fut: asyncio.Future[SerialPort]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        with contextlib.suppress(Exception):
            fut.result().close()


@dataclass(frozen=True, slots=True)
class _Frame:
    action: FrameReceived
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _Side:
    action: FrameRejected | LegacyText
    received_at: datetime


class LineSession:
    """One open port: the engine, its timer, and the two storing tasks."""

    def __init__(self, owner: SerialListener, port: SerialPort) -> None:
        self.owner = owner
        self.rt = owner.rt
        self.peer = owner.config.port
        self.engine = ModemEngine(ModemSettings.from_config(owner.config))
        self.io = PortIO(
            port,
            asyncio.get_running_loop(),
            on_data=self._on_data,
            on_lost=self._on_lost,
            on_dtr_drop=self._on_dtr_drop,
            name=owner.name,
        )
        self.lost_reason = ""
        self._lost = asyncio.Event()
        self._feeding = True
        self._frames: asyncio.Queue[_Frame] = asyncio.Queue()
        self._side: asyncio.Queue[_Side] = asyncio.Queue()
        self._backlog_warned = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    async def serve(self, stopping: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._store_frames(), name=f"{self.owner.name}-frames"),
            asyncio.create_task(self._store_side(), name=f"{self.owner.name}-side"),
        ]
        self.io.start()
        try:
            waits = [
                asyncio.ensure_future(self._lost.wait()),
                asyncio.ensure_future(stopping.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
            await self._wind_down()
        finally:
            self._feeding = False
            if self._timer is not None:
                self._timer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.io.close()

    async def _wind_down(self) -> None:
        # Order matters: frames already received are stored and answered
        # first, then NO CARRIER, then the call's legacy text is stored.
        self._feeding = False
        self.io.stop_reading()
        if self._lost.is_set():
            log.warning("serial device lost", port=self.peer, reason=self.lost_reason)
        await _join(self._frames, DRAIN_SECONDS)
        self._apply(self.engine.hangup(time.monotonic()))
        if not self._lost.is_set():
            await self.io.flush(DRAIN_SECONDS)
        await _join(self._side, DRAIN_SECONDS)

    # -- port events (on the loop) ------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        if self._feeding:
            self._apply(self.engine.feed(data, time.monotonic()))

    def _on_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self._lost.set()

    def _on_dtr_drop(self) -> None:
        if self._feeding:
            log.info("serial DTR dropped", port=self.peer, state=self.engine.state)
            self._apply(self.engine.dtr_dropped(time.monotonic()))

    def _on_timer(self) -> None:
        self._timer = None
        if self._feeding:
            self._apply(self.engine.tick(time.monotonic()))

    def _rearm(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None or not self._feeding:
            return  # a timer still armed fires, finds nothing due, and stops
        if self._timer is not None and self._timer_at <= deadline:
            return  # it fires first; `_on_timer` re-arms for the later deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Write):
                self.io.write(action.data)
            elif isinstance(action, FrameReceived):
                self._frames.put_nowait(_Frame(action, self.rt.clock.now()))
            elif isinstance(action, FrameRejected):
                self._queue_reject(action)
            elif isinstance(action, LegacyText):
                self._side.put_nowait(_Side(action, self.rt.clock.now()))
            elif isinstance(action, CallStarted):
                log.info("serial call", port=self.peer, number=action.number)
            elif isinstance(action, CallEnded):
                log.info("serial call ended", port=self.peer, reason=action.reason)
        self._rearm()

    def _queue_reject(self, action: FrameRejected) -> None:
        if self._side.qsize() < QUARANTINE_BACKLOG:
            self._side.put_nowait(_Side(action, self.rt.clock.now()))
            return
        # Counted as rejected all the same; only the bytes are not kept.
        self.rt.metrics.alarms_rejected.labels(channel=CHANNEL, reason=action.reason).inc()
        if not self._backlog_warned:
            self._backlog_warned = True
            log.warning(
                "serial line noise: quarantine backlog full, rejected frames "
                "are counted but not kept",
                port=self.peer,
            )

    # -- storing ------------------------------------------------------------------------

    async def _store_frames(self) -> None:
        while True:
            item = await self._frames.get()
            try:
                ok_id, nak = await self._store_frame(item.action.payload, item.received_at)
            except Exception:
                # Every frame must get its answer, or the ones after it wait
                # forever; `busy` makes the sender try again.
                log.exception("serial frame handling failed", port=self.peer)
                ok_id, nak = None, "busy"
            finally:
                self._frames.task_done()
            self._apply(self.engine.report_result(item.action.token, ok_id, nak, time.monotonic()))

    async def _store_frame(
        self, payload: bytes, received_at: datetime
    ) -> tuple[str | None, str | None]:
        """(ACK id, None) or (None, NAK reason) for one frame's payload."""
        pipeline = self.rt.pipeline
        report = decode_alarm(payload)
        if isinstance(report, Invalid):
            return None, await self._refuse(report.reason, payload, report.detail)
        try:
            outcome = await pipeline.accept(
                Received(report, CHANNEL, "json", payload, self.peer), received_at
            )
        except StorageUnavailable as exc:
            log.warning("storage unavailable: NAK busy", port=self.peer, error=str(exc))
            return None, "busy"
        except Exception as exc:
            # A bug, not the sender's fault.  As the MQTT listener does: keep
            # the bytes in quarantine for a human and give a final answer, so
            # the agent does not resend it forever.
            log.exception("serial frame handling failed", port=self.peer)
            return None, await self._refuse("internal-error", payload, repr(exc))
        if isinstance(outcome, Refused):  # the pipeline has quarantined it
            return None, nak_reason(outcome.reason)
        return outcome.id, None

    async def _refuse(self, reason: str, payload: bytes, detail: str) -> str:
        seq = await self.rt.pipeline.reject(Rejected(CHANNEL, reason, payload, self.peer), detail)
        # Not quarantined (storage down): `busy`, so that it comes again and
        # is kept then.
        return "busy" if seq is None else nak_reason(reason)

    async def _store_side(self) -> None:
        while True:
            item = await self._side.get()
            try:
                action = item.action
                if isinstance(action, FrameRejected):
                    await self.rt.pipeline.reject(
                        Rejected(CHANNEL, action.reason, action.raw, self.peer),
                        f"frame rejected: {action.reason}",
                    )
                else:
                    await self._store_legacy(action, item.received_at)
            except Exception:
                log.exception("serial quarantine or legacy text failed", port=self.peer)
            finally:
                self._side.task_done()

    async def _store_legacy(self, legacy: LegacyText, received_at: datetime) -> None:
        text = legacy.text
        digest = hashlib.sha256(text).hexdigest()
        if legacy.dropped:
            log.warning(
                "legacy text over 64 KiB; the rest was dropped",
                port=self.peer,
                kept=len(text),
                dropped=legacy.dropped,
            )
        outcome = parse_text(text, self.owner.device_index())
        pipeline = self.rt.pipeline
        if isinstance(outcome, MailReject):
            await pipeline.reject(
                Rejected(CHANNEL, outcome.reason, text, self.peer), f"legacy text: {outcome.detail}"
            )
            return
        if isinstance(outcome, MailAck):
            # Acknowledgements come from a contact's mail address; a serial
            # line proves no identity, so an [INC-n] text acknowledges nothing.
            await pipeline.reject(
                Rejected(CHANNEL, "unexpected-reply", text, self.peer),
                f"[INC-{outcome.incident_id}] reply over a serial line",
            )
            return
        assert isinstance(outcome, MailReports)
        for report in outcome.reports:
            received = Received(report, CHANNEL, outcome.format, text, self.peer)
            for attempt in range(1, LEGACY_TRIES + 1):
                try:
                    await pipeline.accept(received, received_at)
                    break
                except StorageUnavailable as exc:
                    if attempt == LEGACY_TRIES:
                        log.error(
                            "legacy report not stored: storage unavailable",
                            port=self.peer,
                            id=report.id,
                            sha256=digest,
                            error=str(exc),
                        )
                    else:
                        await asyncio.sleep(LEGACY_RETRY_PAUSE)


async def _join(q: asyncio.Queue[_Frame] | asyncio.Queue[_Side], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await q.join()
