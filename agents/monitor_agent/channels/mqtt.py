"""The MQTT link (SPEC 3.2): the agent's main channel.

One connection at a time, kept up by `run()` with exponential backoff:

- the Last Will is a retained `offline` on `<prefix>/status/<serial>`, so a
  crash, `kill -9` or a cut cable makes the daemon raise AGENT-SILENT; on
  connect the agent publishes a retained `online` (which clears it);
- heartbeats `{"v":1,"serial":…,"sent":…,"interval":…}` go to
  `<prefix>/heartbeat/<serial>` every `[agent] heartbeat`;
- reports go to `<prefix>/alarm/<serial>` with QoS 1, one at a time:
  `publish` returns True only once the broker's PUBACK is in, and False as
  soon as the connection is lost (it does not sit out a timeout).  One at a
  time keeps the order (a report is never published before the one ahead of
  it has been taken) and stays far below any broker's in-flight limit; an
  agent's reports are few, and a loopback round trip is well under a
  millisecond.

A clean stop sends DISCONNECT, which discards the will: a restart for an
upgrade is not an outage.  A stopped agent is still noticed, by its missing
heartbeats.  Clean sessions: the agent subscribes to nothing, and what was
in flight on a lost connection is still in the spool and is sent again (the
daemon drops the exact duplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import aiomqtt
import structlog

from monitor_agent.config import MqttSettings

__all__ = ["MqttLink"]

log = structlog.get_logger("monitor_agent.mqtt")

MAX_BACKOFF = 30.0
PUBLISH_TIMEOUT = 30.0


def _now() -> datetime:
    return datetime.now().astimezone()


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        serial: str,
        heartbeat: timedelta | None = timedelta(seconds=60),
        *,
        status: bool = True,
        client_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = _now,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.serial = serial
        self.heartbeat = heartbeat
        self.status = status  # False: no will, no online (`monitor-agent send`)
        self.client_id = client_id or settings.client_id
        self._monotonic = monotonic
        self._clock = clock
        self.on_change = on_change  # told True/False when the link goes up/down
        self._client: aiomqtt.Client | None = None
        self._lost = asyncio.Event()
        self._down_since = monotonic()
        self.connects = 0

    # -- topics -----------------------------------------------------------------

    def topic(self, kind: str) -> str:
        return f"{self.settings.topic_prefix}/{kind}/{self.serial}"

    # -- state ------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    def down_for(self) -> float:
        """Seconds since the link was last up (since start if never)."""
        return 0.0 if self.up else self._monotonic() - self._down_since

    def _connected(self, client: aiomqtt.Client) -> None:
        self._lost = asyncio.Event()
        self._client = client
        if self.on_change is not None:
            self.on_change(True)

    def _drop(self) -> None:
        """The connection is gone (or given up on): down from now."""
        was_up = self.up
        self._lost.set()
        if was_up:
            self._down_since = self._monotonic()
            if self.on_change is not None:
                self.on_change(False)

    # -- connection ---------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        will = (
            aiomqtt.Will(self.topic("status"), b"offline", qos=1, retain=True)
            if self.status
            else None
        )
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=self.client_id,
            username=s.username,
            password=s.password,
            will=will,
            clean_session=True,
            keepalive=max(5, int(s.keepalive.total_seconds())),
            timeout=PUBLISH_TIMEOUT,
            tls_context=ssl.create_default_context() if s.tls else None,
        )

    async def run(self) -> None:
        """Keep the link up until cancelled."""
        delay = 1.0
        while True:
            try:
                async with self._make_client() as client:
                    if self.status:
                        await client.publish(self.topic("status"), b"online", qos=1, retain=True)
                    self.connects += 1
                    log.info(
                        "mqtt connected",
                        broker=f"{self.settings.host}:{self.settings.port}",
                        client_id=self.client_id,
                    )
                    self._connected(client)
                    delay = 1.0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                log.warning("mqtt down", error=str(exc), retry_in=round(delay, 1))
            except (OSError, ValueError, RuntimeError) as exc:
                # TLS handshakes, odd socket states: not worth dying for; the
                # link is retried like any outage (and the reason logged).
                log.exception("mqtt link error", error=str(exc), retry_in=round(delay, 1))
            finally:
                self._drop()
                self._client = None
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, MAX_BACKOFF)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Until the connection drops (or a publish gave up on it)."""

        async def watch() -> None:
            # We subscribe to nothing; iterating raises MqttError when the
            # connection is lost, which is how aiomqtt reports it.
            async for _ in client.messages:
                pass

        tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(self._lost.wait())]
        if self.heartbeat is not None:
            tasks.append(asyncio.ensure_future(self._heartbeats(client, self.heartbeat)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        raise aiomqtt.MqttError("connection abandoned after a failed publish")

    async def _heartbeats(self, client: aiomqtt.Client, every: timedelta) -> None:
        interval = every.total_seconds()
        while True:
            payload = json.dumps(
                {
                    "v": 1,
                    "serial": self.serial,
                    "sent": self._clock().isoformat(timespec="seconds"),
                    "interval": int(interval) if interval.is_integer() else interval,
                },
                separators=(",", ":"),
            ).encode()
            await client.publish(self.topic("heartbeat"), payload, qos=1)
            await asyncio.sleep(interval)

    # -- publishing ------------------------------------------------------------------

    async def publish(self, payload: bytes) -> bool:
        """Publish one report; True once the broker acknowledged it (PUBACK)."""
        client, lost = self._client, self._lost
        if client is None or lost.is_set():
            return False
        sending = asyncio.ensure_future(client.publish(self.topic("alarm"), payload, qos=1))
        dropped = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait({sending, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            if not sending.done():
                sending.cancel()
        if sending not in done:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await sending
            return False
        try:
            sending.result()
        except aiomqtt.MqttError as exc:
            # A timeout means the broker stopped answering: drop this
            # connection rather than wait for the keepalive to notice.
            log.warning("mqtt publish failed", error=str(exc))
            if lost is self._lost:
                self._drop()
            return False
        return True
