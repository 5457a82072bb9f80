"""The MQTT listener (SPEC 3.2): durable QoS 1 ingest from a broker.

The daemon is a client of the broker with a fixed client id and a
persistent session (3.1.1 `clean_session=0`; MQTT 5 clean start false with
a session expiry), subscribed with QoS 1 to `<prefix>/alarm/+`,
`heartbeat/+`, `status/+` and `redfish/+` on every (re)connect (with a
share group: `$share/<group>/…`, except `status/+`, see
`mqtt_payloads.subscriptions`).

The one rule: a PUBLISH is acknowledged only after what it carries is
committed — the alarm stored, the heartbeat or status change stored, or the
rejected payload quarantined.  Until then the broker holds it for our
session and sends it again after a reconnect, and the pipeline's dedup (per
device and report id) makes that harmless.  So:

- a daemon crash loses nothing: unacknowledged messages are redelivered on
  the next connect;
- storage trouble (`StorageUnavailable`) is answered by not acknowledging,
  then, after in-flight messages settle, a DISCONNECT and a reconnect after
  a pause: MQTT redelivers a persistent session's unacknowledged messages
  only on a new connection;
- a payload that is not valid is quarantined with its reason and then
  acknowledged, so it is never redelivered forever.

Messages are handled concurrently (the group-commit writer batches them);
the broker bounds how many are in flight (its `max_inflight_messages`, or
our MQTT 5 Receive Maximum), and reading pauses above `PAUSE_AT` handlers
in case a broker does not.  Reconnects back off exponentially with jitter,
on wall time.  See docs/mqtt.md.

What is done with each PUBLISH (parse, route, store through the pipeline,
PUBACK after the commit, quarantine) is `MqttIngest`, shared by this
listener and `monitor retire` (monitor/retire.py), which drains a retired
instance's session through the very same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import structlog

from monitor.formats.alarm_json import Invalid, decode_alarm
from monitor.formats.redfish import parse_redfish
from monitor.heartbeats import HeartbeatTracker
from monitor.listeners.backoff import Backoff
from monitor.listeners.mqtt_client import ConnectFailed, MqttConnection, parse_url
from monitor.listeners.mqtt_payloads import (
    decode_heartbeat,
    decode_status,
    route,
    subscriptions,
)
from monitor.model import AlarmReport, MqttConfig, Received, Rejected
from monitor.pipeline import Accepted, Refused
from monitor.store import StorageUnavailable

if TYPE_CHECKING:
    from monitor.broker import EmbeddedBroker
    from monitor.runtime import Runtime

log = structlog.get_logger("monitor.mqtt")

CHANNEL = "mqtt"
RECEIVE_MAXIMUM = 1000  # MQTT 5: unacknowledged messages the broker may send us
PAUSE_AT = 2000  # handlers in flight before reading pauses (a broker ignoring the above)
RESUME_AT = 1000
# Stop or storage trouble: in-flight handlers get this long.  With the
# DISCONNECT and the embedded broker's shutdown it stays within the daemon's
# 5 s allowance for a listener's stop().
DRAIN_SECONDS = 2.5
STORAGE_PAUSE = 1.0  # at least this long before reconnecting after storage trouble
STABLE_SECONDS = 10.0  # a connection that lived this long resets the backoff


class MqttListener:
    name = "mqtt"

    def __init__(self, rt: Runtime, config: MqttConfig) -> None:
        self.rt = rt
        self.config = config
        self.endpoint = parse_url(config.url)
        self.subscriptions = subscriptions(config.topic_prefix, config.share_group)
        self.topics = [topic for topic, _ in self.subscriptions]
        self.tracker = HeartbeatTracker(rt, CHANNEL)
        self.ingest = MqttIngest(rt, config, self.tracker)
        self.backoff = Backoff()
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()  # set when run() has cleaned up
        self._done.set()
        self._conn: MqttConnection | None = None
        self._serving = False  # connected and subscribed: stop() disconnects cleanly
        self.connects = 0  # successful connects (tests, logs)

    # -- Listener protocol -----------------------------------------------------------

    async def run(self) -> None:
        self._done.clear()
        broker: EmbeddedBroker | None = None
        try:
            broker = await self._start_broker()
            await self.tracker.load()
            async with asyncio.TaskGroup() as tg:
                tracker = tg.create_task(self.tracker.run(), name="heartbeat-tracker")
                try:
                    await self._connect_loop()
                finally:
                    tracker.cancel()
        finally:
            self.tracker.link_down()
            self.rt.set_listener(self.name, False)
            try:
                await self.ingest.cancel()
                if broker is not None:
                    await broker.stop()
            finally:
                self._done.set()

    async def stop(self) -> None:
        """Take no more messages, let in-flight ones be stored and
        acknowledged, DISCONNECT (the session stays for our next start),
        stop the embedded broker if we run one."""
        self._stopping.set()
        self.ingest.close()
        conn = self._conn
        if conn is not None and not self._serving:
            conn.abort()  # still connecting: stop waiting for the broker
        await self._done.wait()

    # -- connection ---------------------------------------------------------------

    async def _start_broker(self) -> EmbeddedBroker | None:
        if not self.config.embedded_broker:
            return None
        from monitor.broker import EmbeddedBroker

        broker = EmbeddedBroker(self.endpoint.host, self.endpoint.port)
        await broker.start()
        return broker

    async def _connect_loop(self) -> None:
        while not self._stopping.is_set():
            conn = MqttConnection(
                self.endpoint,
                client_id=self.config.client_id,
                protocol=self.config.protocol,
                on_message=self.ingest.on_message,
                receive_maximum=RECEIVE_MAXIMUM,
            )
            self._conn = self.ingest.conn = conn
            # Cleared before CONNACK: the broker resends what we did not
            # acknowledge right after it, even before our SUBSCRIBE.
            self.ingest.storage_trouble.clear()
            up_since: float | None = None
            try:
                present = await conn.connect()
                await conn.subscribe(self.subscriptions)
                up_since = time.monotonic()
                self.connects += 1
                self.tracker.link_up()
                self.rt.set_listener(self.name, True)
                log.info(
                    "mqtt connected",
                    broker=str(self.endpoint),
                    client_id=self.config.client_id,
                    protocol=self.config.protocol,
                    session_present=present,
                    topics=self.topics,
                )
                if not present and self.connects > 1:
                    log.warning(
                        "broker had no session for us: reports published while we "
                        "were away may be lost (broker restarted without persistence?)"
                    )
                self._serving = True
                await self._serve(conn)
            except ConnectFailed as exc:
                if self._stopping.is_set():
                    return  # stop() aborted the attempt
                log.warning("mqtt connection failed", broker=str(self.endpoint), error=str(exc))
            finally:
                self._serving = False
                self.rt.set_listener(self.name, False)
                self.tracker.link_down()
                conn.abort()
            if self._stopping.is_set():
                return
            if up_since is not None and time.monotonic() - up_since >= STABLE_SECONDS:
                self.backoff.reset()
            delay = self.backoff.next()
            if self.ingest.storage_trouble.is_set():
                delay = max(delay, STORAGE_PAUSE)
            log.info("mqtt reconnecting", delay=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _serve(self, conn: MqttConnection) -> None:
        """Until the connection drops, we stop, or storage fails."""
        waits = [
            asyncio.ensure_future(conn.lost.wait()),
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self.ingest.storage_trouble.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if conn.lost.is_set():
            log.warning(
                "mqtt connection lost", broker=str(self.endpoint), reason=conn.disconnect_reason
            )
            return
        # Stopping, or storage trouble: take nothing more; what is in flight
        # finishes (and is acknowledged) first; DISCONNECT keeps the session,
        # so the broker redelivers everything not acknowledged next time.
        conn.pause_reading()
        await self.ingest.drain(DRAIN_SECONDS)
        await conn.disconnect(timeout=1.0)
        if self.ingest.storage_trouble.is_set() and not self._stopping.is_set():
            log.warning(
                "storage unavailable: disconnected from the broker; unacknowledged "
                "reports will be redelivered after reconnecting"
            )


@dataclass
class IngestCounts:
    """What an `MqttIngest` stored (each counted once its commit is done)."""

    stored: int = 0  # alarms stored (a Redfish payload counts each record)
    duplicates: int = 0  # alarms already stored: acknowledged, not stored again
    quarantined: int = 0  # payloads (or Redfish records) rejected, kept in quarantine
    liveness: int = 0  # heartbeats and status messages applied


class MqttIngest:
    """What is done with each PUBLISH: parse, route by topic, store through
    the pipeline (the one door) or quarantine, and PUBACK only after the
    commit.

    Used by `MqttListener` and by `monitor retire` (monitor/retire.py).  The
    caller owns the connection: it passes `on_message` to `MqttConnection`,
    sets `conn` to each new connection (reading resumes there once enough
    handlers are done), watches `storage_trouble` (set when a message could
    not be stored: it was not acknowledged, and no more are taken until the
    caller clears it), and calls `close()` / `drain()` / `cancel()` when it
    stops.
    """

    def __init__(self, rt: Runtime, config: MqttConfig, tracker: HeartbeatTracker) -> None:
        self.rt = rt
        self.config = config
        self.tracker = tracker
        self.storage_trouble = asyncio.Event()
        self.counts = IngestCounts()
        self.arrivals = 0  # messages taken (handed to a handler)
        self.last_arrival = time.monotonic()  # when the last one was taken
        self.conn: MqttConnection | None = None  # the current connection (set by the owner)
        self._closed = False
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Messages taken but not yet stored and acknowledged (or given up)."""
        return len(self._handlers)

    def close(self) -> None:
        """Take no more messages (they stay unacknowledged: redelivered)."""
        self._closed = True

    async def drain(self, timeout: float) -> None:
        """Let the messages in flight finish, for at most `timeout` seconds."""
        if not self._handlers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.wait(set(self._handlers))

    async def cancel(self) -> None:
        """Cancel what is left: never acknowledged, so the broker redelivers it."""
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)

    # -- messages -------------------------------------------------------------------

    def on_message(self, conn: MqttConnection, msg: mqtt.MQTTMessage) -> None:
        """The connection's message callback."""
        # Runs inside paho's read, on the loop: hand off, never block.
        if self._closed or self.storage_trouble.is_set():
            return  # not acknowledged: redelivered on the next connection
        # Receipt is now, when paho has parsed the packet: the ingest latency
        # (`stored_at - received_at`) includes any wait for a turn on the loop.
        received = self.rt.clock.now()
        self.arrivals += 1
        self.last_arrival = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._handle(conn, msg, received))
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)
        if len(self._handlers) >= PAUSE_AT:
            conn.pause_reading()

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        conn = self.conn
        if (
            conn is not None
            and len(self._handlers) <= RESUME_AT
            and not self._closed
            and not self.storage_trouble.is_set()
        ):
            # The current connection: handlers of a lost one count too.
            conn.resume_reading()

    async def _handle(
        self, conn: MqttConnection, msg: mqtt.MQTTMessage, received: datetime
    ) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse these; be safe anyway
            topic = ""
        try:
            await self._ingest(topic, payload, received)
        except StorageUnavailable as exc:
            self._storage_failed(exc)
            return
        except Exception as exc:
            # A bug, not the peer's fault; still never redeliver forever:
            # keep the bytes in quarantine for a human, then acknowledge.
            log.exception("mqtt message handling failed", topic=topic)
            if (
                await self.rt.pipeline.reject(
                    Rejected(CHANNEL, "internal-error", payload, topic), repr(exc)
                )
                is None
            ):
                self._storage_failed(StorageUnavailable("quarantine unavailable"))
                return
            self.counts.quarantined += 1
        conn.ack(msg.mid, msg.qos)

    def _storage_failed(self, exc: Exception) -> None:
        if not self.storage_trouble.is_set():
            log.error("storage unavailable: not acknowledging MQTT reports", error=str(exc))
            self.storage_trouble.set()

    def _count(self, result: Accepted | Refused) -> None:
        if isinstance(result, Refused):  # quarantined by the pipeline
            self.counts.quarantined += 1
        elif result.duplicate:
            self.counts.duplicates += 1
        else:
            self.counts.stored += 1

    async def _ingest(self, topic: str, payload: bytes, received: datetime) -> None:
        where = route(topic, self.config.topic_prefix)
        if where is None:
            await self._reject("unknown-topic", payload, topic, f"unexpected topic {topic[:200]!r}")
            return
        pipeline = self.rt.pipeline
        if where.kind == "alarm":
            report = decode_alarm(payload)
            if isinstance(report, Invalid):
                await self._reject(report.reason, payload, topic, report.detail)
            elif report.serial != where.serial:
                await self._reject(
                    "topic-mismatch",
                    payload,
                    topic,
                    f"topic serial {where.serial!r}, payload serial {report.serial[:64]!r}",
                )
            else:
                # Refused (bad signature): the pipeline has quarantined it.
                self._count(
                    await pipeline.accept(
                        Received(report, CHANNEL, "json", payload, topic), received
                    )
                )
        elif where.kind == "redfish":
            for n, item in enumerate(parse_redfish(payload, where.serial)):
                # The payload's bytes go with its first record only (kept once
                # per event, one big payload of small events cost 64 KiB each).
                kept = payload if n == 0 else b""
                if isinstance(item, AlarmReport):
                    # Redfish events carry no signature (3.1 `sig`); the broker
                    # ACL binds the topic to the agent's account.
                    self._count(
                        await pipeline.accept(
                            Received(item, CHANNEL, "redfish", kept, topic, signed_ok=True),
                            received,
                        )
                    )
                else:
                    await self._reject(item.reason, kept, topic, item.detail)
        elif where.kind == "heartbeat":
            beat = decode_heartbeat(payload)
            if isinstance(beat, Invalid):
                await self._reject(beat.reason, payload, topic, beat.detail)
            elif beat.serial != where.serial:
                await self._reject(
                    "topic-mismatch",
                    payload,
                    topic,
                    f"topic serial {where.serial!r}, payload serial {beat.serial[:64]!r}",
                )
            else:
                await self.tracker.heartbeat(where.serial, beat.interval, received)
                self.counts.liveness += 1
        else:
            online = decode_status(payload)
            if isinstance(online, Invalid):
                await self._reject(online.reason, payload, topic, online.detail)
            elif online is not None:
                await self.tracker.status(where.serial, online, received)
                self.counts.liveness += 1

    async def _reject(self, reason: str, payload: bytes, topic: str, detail: str) -> None:
        seq = await self.rt.pipeline.reject(Rejected(CHANNEL, reason, payload, topic), detail)
        if seq is None:  # not quarantined: must not be acknowledged
            raise StorageUnavailable("quarantine write failed")
        self.counts.quarantined += 1
