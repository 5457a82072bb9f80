"""`monitor retire`: end a removed instance's MQTT session without losing
what the broker holds for it (docs/scale-out.md, "Adding and removing
instances").

With a shared subscription and persistent sessions, mosquitto goes on
assigning a share of the group's messages to a member whose session exists
while it is disconnected, and queues them there.  An instance removed for
good would strand them: QoS 1 reports the broker already acknowledged to
agents.  Retiring takes them out, then lets the broker forget the session:

1. connect with the instance's `client_id`, clean start false (its session);
2. UNSUBSCRIBE its topic filters, so the broker assigns nothing new to it;
3. take everything still delivered for the session (what was queued, and
   what was in flight when it stopped, redelivered), through the listener's
   own `MqttIngest`: the pipeline (dedup, incidents, quarantine), a PUBACK
   only after the commit;
4. once nothing has arrived for `idle` seconds and nothing is in flight,
   UNSUBSCRIBE once more as a barrier (the broker answers in order, so any
   PUBLISH written before its UNSUBACK has been read when it comes) and, if
   still nothing came, DISCONNECT with Session Expiry Interval 0: the broker
   deletes the session.

On any failure (storage, the connection lost, `timeout`) it disconnects
without ending the session, so what was not acknowledged stays queued for
another attempt.  The instance's daemon must be stopped first: connecting
with its client id would take its session over, and it would take it back.

Notices, scheduler steps and the event feed are not run here: the other
instances' notifiers and schedulers find the incidents in the shared
database.  Agent changes decided here (a heartbeat bringing an agent back)
are announced through the pipeline before the end; if that fails, another
instance takes the outbox row over (monitor/heartbeats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.events import EventBus
from monitor.heartbeats import HeartbeatTracker
from monitor.listeners.mqtt import CHANNEL, DRAIN_SECONDS, RECEIVE_MAXIMUM, IngestCounts, MqttIngest
from monitor.listeners.mqtt_client import ConnectFailed, MqttConnection, parse_url
from monitor.listeners.mqtt_payloads import topic_filters
from monitor.model import Config, MqttConfig
from monitor.runtime import make_runtime
from monitor.store import StorageUnavailable, open_store

log = structlog.get_logger("monitor.retire")

# mosquitto (and MQTT 5) reason for dropping a connection whose client id
# another client connected with.
TAKEN_OVER = "Session taken over"


class RetireRefused(Exception):
    """The config or the situation does not allow retiring (nothing done)."""


class RetireFailed(Exception):
    """Retiring stopped midway; the session is kept (see the message)."""


@dataclass(frozen=True, slots=True)
class RetireResult:
    client_id: str
    session_present: bool  # False: the broker had no session for it
    counts: IngestCounts


def refusal(config: Config) -> str | None:
    """Why this config's instance cannot be retired, or None."""
    mqtt = config.mqtt
    if mqtt is None:
        return "the config has no [mqtt] section: there is no MQTT session to retire"
    if mqtt.protocol != 5:
        return "[mqtt] protocol is not 5: ending a session on DISCONNECT needs MQTT 5"
    if not mqtt.share_group:
        return (
            "[mqtt] share_group is empty: retire is for an instance of a share group "
            "(a lone daemon's session holds what it has not received yet; keep it)"
        )
    if mqtt.embedded_broker:
        return "[mqtt] embedded_broker is true: that broker keeps no session once stopped"
    return None


def health_url(config: Config) -> str:
    """The instance's own `/healthz` (a wildcard listen address: loopback)."""
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.http.port}/healthz"


def daemon_answers(config: Config, timeout: float = 2.0) -> bool:
    """Whether a daemon answers `/healthz` at the config's `[http] listen`
    (blocking; call it from the CLI, before the loop)."""
    try:
        with urllib.request.urlopen(health_url(config), timeout=timeout) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError:
        return False  # something else listens there
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def retire(config: Config, idle: float = 5.0, timeout: float = 300.0) -> RetireResult:
    """Drain and end the MQTT session of the instance `config` describes.

    Raises `RetireRefused` (nothing done), `RetireFailed` (the session is
    kept), `SchemaTooNew` / `OSError` from opening the store.
    """
    why = refusal(config)
    if why is not None:
        raise RetireRefused(why)
    mqtt = config.mqtt
    assert mqtt is not None
    store = open_store(config.daemon.database, config.daemon.instance)
    await asyncio.to_thread(store.open)
    try:
        rt = make_runtime(config, store, EventBus())
        tracker = HeartbeatTracker(rt, CHANNEL)
        ingest = MqttIngest(rt, mqtt, tracker)
        result = await _drain_session(mqtt, ingest, idle, timeout)
        # Agent changes this run decided (a heartbeat that brought an agent
        # back): announce them now; should that fail, their outbox rows are
        # taken over by another instance.
        try:
            await tracker.announce_pending()
        except StorageUnavailable as exc:
            log.warning("agent changes left to the other instances", error=str(exc))
        return result
    finally:
        await asyncio.to_thread(store.close)


async def _drain_session(
    mqtt: MqttConfig, ingest: MqttIngest, idle: float, timeout: float
) -> RetireResult:
    endpoint = parse_url(mqtt.url)
    filters = topic_filters(mqtt.topic_prefix, mqtt.share_group)
    conn = MqttConnection(
        endpoint,
        client_id=mqtt.client_id,
        protocol=5,
        on_message=ingest.on_message,
        receive_maximum=RECEIVE_MAXIMUM,
    )
    ingest.conn = conn
    try:
        try:
            async with asyncio.timeout(timeout):
                try:
                    present = await conn.connect()
                except ConnectFailed as exc:
                    raise RetireFailed(f"cannot connect to the broker: {exc}") from None
                log.info(
                    "retiring session",
                    broker=str(endpoint),
                    client_id=mqtt.client_id,
                    session_present=present,
                )
                await _unsubscribe(conn, ingest, filters)
                ingest.last_arrival = time.monotonic()  # quiet is counted from here
                await _until_idle(conn, ingest, filters, idle)
        except TimeoutError:
            raise RetireFailed(
                f"gave up after {timeout:g}s (messages still arriving, or the broker "
                "slow to answer); the session is kept: run it again"
            ) from None
        if not await conn.disconnect(end_session=True):
            raise RetireFailed(
                "the connection ended before the DISCONNECT that ends the session "
                f"was sent ({conn.disconnect_reason}); everything received is stored: "
                "run it again to end the session"
            )
        return RetireResult(mqtt.client_id, present, ingest.counts)
    except RetireFailed:
        # Keep the session: what is not acknowledged stays queued for it.
        ingest.close()
        conn.pause_reading()
        await ingest.drain(DRAIN_SECONDS)
        await conn.disconnect(timeout=1.0)
        raise
    finally:
        conn.abort()
        await ingest.cancel()


async def _unsubscribe(conn: MqttConnection, ingest: MqttIngest, filters: list[str]) -> None:
    try:
        await conn.unsubscribe(filters)
    except ConnectFailed as exc:
        _check(conn, ingest)  # a clearer reason when there is one
        raise RetireFailed(f"unsubscribe failed: {exc}; the session is kept") from None


def _check(conn: MqttConnection, ingest: MqttIngest) -> None:
    """Raise `RetireFailed` if storage failed or the connection is gone."""
    if ingest.storage_trouble.is_set():
        raise RetireFailed(
            "storage unavailable: stopped without ending the session; the reports "
            "not stored stay queued for it: run retire again once the database is back"
        )
    if conn.lost.is_set():
        reason = conn.disconnect_reason
        if reason == TAKEN_OVER:
            raise RetireFailed(
                f"another client connected as {conn.client_id!r} and took the "
                "session over: is that instance still running? Stop it, then retire"
            )
        raise RetireFailed(
            f"connection to the broker lost ({reason}); the session is kept: run it again"
        )


async def _until_idle(
    conn: MqttConnection, ingest: MqttIngest, filters: list[str], idle: float
) -> None:
    """Until nothing has arrived for `idle` seconds, nothing is in flight,
    and a final UNSUBSCRIBE round trip brought nothing either."""
    while True:
        _check(conn, ingest)
        if ingest.in_flight:
            await _first_of(conn, ingest, ingest.drain(idle))
            continue
        quiet = time.monotonic() - ingest.last_arrival
        if quiet < idle:
            await _first_of(conn, ingest, asyncio.sleep(idle - quiet))
            continue
        # Barrier: every PUBLISH the broker wrote before this UNSUBACK has
        # been handed to the ingest when it returns.
        arrivals = ingest.arrivals
        await _unsubscribe(conn, ingest, filters)
        _check(conn, ingest)
        if ingest.arrivals == arrivals and not ingest.in_flight:
            return


async def _first_of(
    conn: MqttConnection, ingest: MqttIngest, wait: Coroutine[Any, Any, None]
) -> None:
    """Await `wait`, or less if the connection drops or storage fails
    meanwhile."""
    waits = [
        asyncio.ensure_future(wait),
        asyncio.ensure_future(conn.lost.wait()),
        asyncio.ensure_future(ingest.storage_trouble.wait()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waits, return_exceptions=True)
