"""Delivery: take spooled reports out, in order, through the best channel.

SPEC 5.1's order: MQTT while it is up; SMTP once MQTT has been down for
`[smtp] after`; dial-up once MQTT has been down for `[serial] after` and
SMTP fails too (or is not configured).  When MQTT comes back, delivery goes
back to it, even in the middle of a fallback batch.

Reports go one at a time, oldest first, and a report that a channel could
not deliver stops the batch, so a later report never overtakes an earlier
one.  A report refused for good moves to the spool's `rejected` table and
does not block the ones behind it.  A fallback that failed is retried with
backoff (dial-up calls cost money: its backoff starts higher).

The publisher sleeps on an event: woken by new reports, by the MQTT link
going up or down, or when the next fallback comes due.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import structlog

from monitor_agent.channels import ShouldStop, Sink
from monitor_agent.channels.mqtt import MqttLink
from monitor_agent.spool import Spool, Spooled

__all__ = ["Fallback", "Publisher", "SpoolSink"]

log = structlog.get_logger("monitor_agent.publisher")

BATCH = 100
SPOOL_RETRY = 5.0


class BatchChannel(Protocol):
    async def send(self, batch: list[Spooled], sink: Sink, stop: ShouldStop) -> bool: ...


@dataclass
class Fallback:
    """A fallback channel with its `after` and its retry backoff."""

    name: str
    channel: BatchChannel
    after: timedelta
    first_retry: float = 10.0
    max_retry: float = 300.0
    retry_at: float = 0.0  # monotonic
    failing: bool = False
    _delay: float = field(default=0.0, repr=False)

    def succeeded(self) -> None:
        self.failing = False
        self._delay = 0.0
        self.retry_at = 0.0

    def failed(self, now: float) -> None:
        self.failing = True
        self._delay = min(self.max_retry, self._delay * 2 if self._delay else self.first_retry)
        self.retry_at = now + self._delay


class SpoolSink:
    """Channel outcomes → the spool (synchronous; called from worker threads)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.delivered: dict[str, int] = {}  # per channel, for logs and tests
        self.last_channel = ""

    def taken(self, seq: int, channel: str) -> None:
        self.spool.delivered(seq)
        self.delivered[channel] = self.delivered.get(channel, 0) + 1
        self.last_channel = channel
        log.info("report delivered", seq=seq, channel=channel)

    def refused(self, seq: int, channel: str, reason: str) -> None:
        self.spool.reject(seq, channel, reason)
        log.error("report refused for good", seq=seq, channel=channel, reason=reason)

    def failed(self, seq: int, channel: str, error: str) -> None:
        self.spool.failed(seq, f"{channel}: {error}")


class Publisher:
    def __init__(
        self,
        spool: Spool,
        mqtt: MqttLink | None,
        smtp: Fallback | None = None,
        serial: Fallback | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.mqtt = mqtt
        self.smtp = smtp
        self.serial = serial
        self.sink = SpoolSink(spool)
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """New reports, or a channel changed state: look again."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _mqtt_down_for(self) -> float:
        return math.inf if self.mqtt is None else self.mqtt.down_for()

    def _mqtt_back(self) -> bool:
        return self._stopping or (self.mqtt is not None and self.mqtt.up)

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                batch = await asyncio.to_thread(self.spool.pending, BATCH)
                if not batch:
                    await self._wake.wait()
                    continue
                timeout = await self.deliver(batch)
            except (OSError, sqlite3.Error) as exc:
                # The spool's disk is full or failing: nothing is lost by
                # waiting (reports stay where they are); say so and retry.
                log.error("spool unavailable", error=str(exc), retry_in=SPOOL_RETRY)
                timeout = SPOOL_RETRY
            if timeout is None:
                continue  # progress: look at the spool again at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def deliver(self, batch: list[Spooled]) -> float | None:
        """Try the channels in order; None after progress, else seconds to wait."""
        if self.mqtt is not None and self.mqtt.up:
            if await self._via_mqtt(batch):
                return None
            return 1.0  # the link dropped mid-batch; its state change wakes us sooner
        now = self._monotonic()
        down = self._mqtt_down_for()
        waits: list[float] = []
        smtp = self.smtp
        if smtp is not None:
            due = max(smtp.after.total_seconds() - down, smtp.retry_at - now)
            if due <= 0:
                if await self._via(smtp, batch):
                    return None
                now = self._monotonic()
            waits.append(max(smtp.after.total_seconds() - down, smtp.retry_at - now))
        serial = self.serial
        if serial is not None and (smtp is None or smtp.failing):
            due = max(serial.after.total_seconds() - down, serial.retry_at - now)
            if due <= 0:
                if await self._via(serial, batch):
                    return None
                now = self._monotonic()
            waits.append(max(serial.after.total_seconds() - down, serial.retry_at - now))
        elif serial is not None:
            # SMTP is fine so far; serial may be needed once it fails.
            waits.append(max(serial.after.total_seconds() - down, 1.0))
        # Nothing due (or nothing worked): sleep until the next fallback is
        # due; without fallbacks, until the link state changes.
        return max(0.05, min(waits, default=3600.0))

    async def _via_mqtt(self, batch: list[Spooled]) -> bool:
        assert self.mqtt is not None
        for item in batch:
            if self._stopping:
                return False
            if not await self.mqtt.publish(item.body):
                await asyncio.to_thread(self.sink.failed, item.seq, "mqtt", "no PUBACK")
                return False
            await asyncio.to_thread(self.sink.taken, item.seq, "mqtt")
        return True

    async def _via(self, fallback: Fallback, batch: list[Spooled]) -> bool:
        log.info(
            "delivering by fallback",
            channel=fallback.name,
            reports=len(batch),
            mqtt_down_s=round(self._mqtt_down_for(), 1),
        )
        ok = await fallback.channel.send(batch, self.sink, self._mqtt_back)
        if ok:
            fallback.succeeded()
            return True
        if self._mqtt_back():
            return True  # interrupted because MQTT is back: not a failure
        fallback.failed(self._monotonic())
        log.warning(
            "fallback failed",
            channel=fallback.name,
            retry_in=round(fallback.retry_at - self._monotonic(), 1),
        )
        return False
