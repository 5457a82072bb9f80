"""The agent put together: collectors → spool → publisher → channels.

`Agent.run(stop)` serves until `stop` is set (the CLI sets it on SIGTERM or
SIGINT), then stops in the order that loses nothing: collectors first (no
new reports), then delivery (an in-flight report stays spooled and is sent
again next time), then the MQTT link with a clean DISCONNECT.

`send_once` is `monitor-agent send`: spool one test report and push the
spool out through the channels right away (or through the one `--via`
names), without waiting the fallbacks' `after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import structlog

from monitor.dte import DteOptions
from monitor.model import AlarmReport
from monitor_agent.channels.mqtt import MqttLink
from monitor_agent.channels.serial import Opener, SerialChannel
from monitor_agent.channels.smtp import SmtpChannel
from monitor_agent.config import AgentConfig
from monitor_agent.publisher import Fallback, Publisher
from monitor_agent.reports import Identity, encode
from monitor_agent.runner import CollectorRunner
from monitor_agent.spool import Spool

__all__ = ["Agent", "SendResult", "identity_of", "send_once"]

log = structlog.get_logger("monitor_agent")

Via = Literal["mqtt", "smtp", "serial"]


def identity_of(config: AgentConfig) -> Identity:
    a = config.agent
    return Identity(a.serial, a.model, a.host, a.secret)


def _fallbacks(
    config: AgentConfig,
    serial_options: DteOptions | None,
    smtp_after: timedelta | None = None,
    serial_after: timedelta | None = None,
    serial_opener: Opener | None = None,
) -> tuple[Fallback | None, Fallback | None]:
    smtp = serial = None
    if config.smtp is not None:
        smtp = Fallback(
            "smtp",
            SmtpChannel(config.smtp),
            config.smtp.after if smtp_after is None else smtp_after,
        )
    if config.serial is not None:
        # A call costs money and ties up a line: back off from a minute.
        line = SerialChannel(config.serial, serial_options)
        if serial_opener is not None:
            line = SerialChannel(config.serial, serial_options, serial_opener)
        serial = Fallback(
            "serial",
            line,
            config.serial.after if serial_after is None else serial_after,
            first_retry=60.0,
            max_retry=900.0,
        )
    return smtp, serial


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        spool: Spool | None = None,
        serial_options: DteOptions | None = None,
        serial_opener: Opener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.spool = spool or Spool(config.agent.spool)
        self.identity = identity_of(config)
        self.mqtt: MqttLink | None = None
        if config.mqtt is not None:
            self.mqtt = MqttLink(
                config.mqtt,
                config.agent.serial,
                config.agent.heartbeat,
                monotonic=monotonic,
                on_change=self._link_changed,
            )
        smtp, serial = _fallbacks(config, serial_options, serial_opener=serial_opener)
        self.publisher = Publisher(self.spool, self.mqtt, smtp, serial, monotonic=monotonic)
        self.runners = [
            CollectorRunner(spec, self.spool, self.identity, self.publisher.wake)
            for spec in config.collectors
        ]

    def _link_changed(self, up: bool) -> None:
        self.publisher.wake()

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "agent starting",
            serial=self.identity.serial,
            spool=self.spool.path,
            spooled=self.spool.count(),
            channels=self.config.channels,
            collectors=[r.spec.name for r in self.runners],
        )
        runners = [
            asyncio.create_task(r.run(), name=f"collector:{r.spec.name}") for r in self.runners
        ]
        delivery = asyncio.create_task(self.publisher.run(), name="publisher")
        link = asyncio.create_task(self.mqtt.run(), name="mqtt") if self.mqtt else None
        stopping = asyncio.create_task(stop.wait(), name="stop")
        everything = [*runners, delivery, *([link] if link else []), stopping]
        try:
            done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and not task.cancelled() and task.exception():
                    # A bug, not a condition: let the supervisor (systemd) restart us.
                    raise RuntimeError(f"task {task.get_name()} died") from task.exception()
        finally:
            await _cancel(runners)
            self.publisher.stop()
            await _cancel([delivery])
            if link is not None:
                await _cancel([link])
            stopping.cancel()
            log.info("agent stopped", spooled=self.spool.count())


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Literal["delivered", "rejected", "pending"]
    channel: str = ""
    reason: str = ""


async def send_once(
    config: AgentConfig,
    report: AlarmReport,
    *,
    via: Via | None = None,
    timeout: float = 60.0,
    grace: timedelta = timedelta(seconds=10),
    spool: Spool | None = None,
    serial_options: DteOptions | None = None,
) -> SendResult:
    """Spool `report` and deliver the spool until it has left (or `timeout`).

    Without `via`: MQTT first, and the fallbacks once MQTT has not come up
    within `grace` (instead of their `after`).  With `via`: that channel only.
    """
    if via is not None and getattr(config, via) is None:
        raise ValueError(f"no [{via}] section in {config.path}")
    own = spool is None
    spool = spool or Spool(config.agent.spool)
    try:
        await asyncio.to_thread(spool.add, [(report.id, encode(report))])
        mqtt = None
        if config.mqtt is not None and via in (None, "mqtt"):
            # Its own client id, no will and no `online`: the running agent
            # keeps its session and status.
            mqtt = MqttLink(
                config.mqtt,
                config.agent.serial,
                heartbeat=None,
                status=False,
                client_id=f"{config.mqtt.client_id}-send-{os.getpid()}",
            )
        wait = timedelta(0) if via is not None else grace
        smtp, serial = _fallbacks(config, serial_options, wait, wait)
        if via is not None:
            smtp = smtp if via == "smtp" else None
            serial = serial if via == "serial" else None
        publisher = Publisher(spool, mqtt, smtp, serial)
        if mqtt is not None:
            mqtt.on_change = lambda up: publisher.wake()
        tasks = [asyncio.create_task(publisher.run())]
        if mqtt is not None:
            tasks.append(asyncio.create_task(mqtt.run()))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not await asyncio.to_thread(spool.contains, report.id):
                    break
                await asyncio.sleep(0.1)
        finally:
            publisher.stop()
            await _cancel(tasks)
        if await asyncio.to_thread(spool.contains, report.id):
            return SendResult("pending")
        for row in await asyncio.to_thread(spool.rejected):
            if row.id == report.id:
                return SendResult("rejected", row.channel, row.reason)
        return SendResult("delivered", publisher.sink.last_channel)
    finally:
        if own:
            spool.close()
