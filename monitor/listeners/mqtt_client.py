"""One MQTT connection: a paho-mqtt 2.x client driven by the asyncio loop.

Why paho and not aiomqtt: the daemon must send PUBACK only after the alarm
is committed, and only paho exposes that (`manual_ack=True`, `ack(mid,
qos)`; aiomqtt issue #345).  Why not paho's own thread: handlers await the
pipeline on our loop, and acks from another thread would need locking.

So everything paho does runs on the loop thread, as in paho's
`examples/loop_asyncio.py`: the socket callbacks register the socket with
`add_reader`/`add_writer`, whose callbacks call `loop_read`/`loop_write`;
a 1 s timer calls `loop_misc` (keepalive); `on_message` runs inside
`loop_read`.  Two things differ from that example:

- paho's connect is blocking (DNS, TCP, TLS handshake): it runs in a worker
  thread, and the finished socket is handed to paho's `reconnect()` on the
  loop, so a broker that drops SYNs never stalls the daemon.
- paho reads a packet with three `recv` calls (type, length, body); a small
  buffer in front of the socket makes that one `recv` per 64 KiB, and lets
  one readiness callback take every packet already received.

A `MqttConnection` is one connection attempt and lives until that
connection ends; the listener makes a new one to reconnect.  An ack for a
message of an old connection is dropped (the broker redelivers it on the
persistent session and the pipeline deduplicates it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor.listeners import paho_tables

paho_tables.install()

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

RECV_SIZE = 65536
# Packets taken per readiness callback before yielding to other tasks.
READ_BURST = 256
MISC_INTERVAL = 1.0
# MQTT 5 session expiry "never" (4294967295 s): like a 3.1.1 clean_session=0
# session, it lives until the broker's own limit (mosquitto
# `persistent_client_expiration`) says otherwise.
SESSION_EXPIRY_NEVER = 0xFFFFFFFF

paho_log = logging.getLogger("monitor.mqtt.paho")


class ConnectFailed(Exception):
    """The broker could not be reached, refused us, or refused a subscription."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        # Never the password: this goes to logs.
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """`mqtt[s]://[user[:pass]@]host[:port]` (validated by the config loader)."""
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme == "mqtts"
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return Endpoint(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=username,
        password=password,
    )


class BufferedSocket:
    """The socket as paho sees it, with a read buffer in front.

    Everything but `recv` passes through.  `pending()` tells the reader
    callback that whole packets may still wait here (or inside the TLS
    object), where the selector cannot see them.
    """

    __slots__ = ("_buf", "_pos", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._buf):
            # BlockingIOError / ssl.SSLWantReadError propagate: paho handles them.
            data = self.sock.recv(RECV_SIZE)
            if len(data) <= size:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + size
        chunk = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return chunk

    def pending(self) -> int:
        held = len(self._buf) - self._pos
        if isinstance(self.sock, ssl.SSLSocket):
            held += self.sock.pending()
        return held

    def send(self, data: bytes | bytearray) -> int:
        return self.sock.send(data)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)


class _PahoClient(mqtt.Client):
    """paho's client, connecting through a socket opened elsewhere."""

    premade: SocketLike | None = None

    def open_socket(self) -> socket.socket:
        """Blocking DNS + TCP (+ TLS handshake): run in a worker thread."""
        sock = super()._create_socket()
        assert isinstance(sock, socket.socket)  # no websockets/unix transports here
        return sock

    def _create_socket(self) -> SocketLike:
        sock, self.premade = self.premade, None
        if sock is None:  # reconnect() without open_socket(): not how we use it
            raise ConnectFailed("no socket prepared for this connection")
        return sock


def _close_socket(opening: asyncio.Future[socket.socket]) -> None:
    """Close the socket of a connect nobody waits for any more."""
    if opening.cancelled() or opening.exception() is not None:
        return
    opening.result().close()


MessageCallback = Callable[["MqttConnection", mqtt.MQTTMessage], None]


class MqttConnection:
    """One connection to the broker, on the running loop.

    `lost` is set when the connection ends, for whatever reason.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        client_id: str,
        protocol: int,
        on_message: MessageCallback,
        keepalive: int = 30,
        receive_maximum: int = 1000,
        connect_timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.protocol = protocol
        self.keepalive = keepalive
        self.receive_maximum = receive_maximum
        self.connect_timeout = connect_timeout
        self._on_message_cb = on_message
        self._loop = asyncio.get_running_loop()
        self.lost = asyncio.Event()
        self.session_present = False
        self.disconnect_reason = ""
        # True once the connection ended with our own DISCONNECT written to
        # the broker (not aborted, not dropped by the broker).
        self.disconnected_cleanly = False
        self._disconnecting = False
        self._connack: asyncio.Future[tuple[bool, ReasonCode]] = self._loop.create_future()
        # SUBACK / UNSUBACK waiters by packet id (unique across both).
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._misc: asyncio.TimerHandle | None = None
        self._sock: SocketLike | None = None
        self._reading = False
        self._paused = False

        v5 = protocol == 5
        client = _PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            # 3.1.1: the persistent session is clean_session=False.  For MQTT 5
            # paho refuses clean_session; clean start false + expiry go in
            # connect (see connect()).
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.enable_logger(paho_log)
        client.connect_timeout = connect_timeout
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            # The system's CAs (SSL_CERT_FILE / SSL_CERT_DIR may point
            # elsewhere), hostname checked.
            client.tls_set_context(ssl.create_default_context())
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_suback
        client.on_unsubscribe = self._on_suback
        client.on_message = self._on_message
        self.client = client

    # -- public ----------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect and wait for CONNACK; True when the broker kept our session."""
        client = self.client
        properties = None
        clean_start: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY  # ignored by 3.1.1
        if self.protocol == 5:
            clean_start = False
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_NEVER
            # The broker sends at most this many unacknowledged QoS 1
            # messages: our in-flight window, hence the commit batch size.
            properties.ReceiveMaximum = self.receive_maximum
        host, port = self.endpoint.host, self.endpoint.port
        client.connect_async(
            host, port, self.keepalive, clean_start=clean_start, properties=properties
        )
        sock = await self._open_socket()
        client.premade = BufferedSocket(sock)
        try:
            client.reconnect()  # on the loop now: sends CONNECT
        except (OSError, ConnectFailed) as exc:
            self.abort()
            raise ConnectFailed(f"cannot connect to {self.endpoint}: {exc}") from exc
        self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)
        try:
            async with asyncio.timeout(self.connect_timeout):
                present, reason = await self._connack
        except TimeoutError:
            self.abort()
            raise ConnectFailed(
                f"no CONNACK from {self.endpoint} within {self.connect_timeout:g}s"
            ) from None
        if reason.is_failure:
            self.abort()
            raise ConnectFailed(f"{self.endpoint} refused the connection: {reason}")
        self.session_present = present
        return present

    async def _open_socket(self) -> socket.socket:
        """paho's blocking connect in a thread; `abort()` or cancellation
        stops the wait at once (the thread ends within the connect timeout
        and its socket is closed then)."""
        opening = asyncio.ensure_future(asyncio.to_thread(self.client.open_socket))
        aborted = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({opening, aborted}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            opening.add_done_callback(_close_socket)
            raise
        finally:
            aborted.cancel()
        if not opening.done():
            opening.add_done_callback(_close_socket)
            raise ConnectFailed("connection aborted")
        try:
            sock = opening.result()
        except (OSError, ValueError) as exc:
            self.lost.set()
            raise ConnectFailed(f"cannot connect to {self.endpoint}: {exc}") from exc
        if self.lost.is_set():
            sock.close()
            raise ConnectFailed("connection aborted")
        return sock

    async def subscribe(self, topics: list[tuple[str, int]]) -> list[int]:
        """Subscribe and wait for SUBACK; the granted QoS of each topic."""
        rc, mid = self.client.subscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectFailed(f"subscribe failed: {mqtt.error_string(rc)}")
        codes = await self._await_ack(mid, "SUBACK")
        granted = []
        for (topic, _), code in zip(topics, codes, strict=False):
            if code.is_failure:
                raise ConnectFailed(f"subscription to {topic} refused: {code}")
            granted.append(code.value)
        return granted

    async def unsubscribe(self, topics: list[str]) -> list[ReasonCode]:
        """UNSUBSCRIBE and wait for UNSUBACK; its reason code per filter
        (MQTT 5; "No subscription existed" is not a failure).

        The broker answers in order on the connection: every PUBLISH it
        wrote before the UNSUBACK has been read (and handed to `on_message`)
        when this returns.
        """
        rc, mid = self.client.unsubscribe(topics)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectFailed(f"unsubscribe failed: {mqtt.error_string(rc)}")
        codes = await self._await_ack(mid, "UNSUBACK")
        for topic, code in zip(topics, codes, strict=False):
            if code.is_failure:
                raise ConnectFailed(f"unsubscribe from {topic} refused: {code}")
        return codes

    async def _await_ack(self, mid: int, what: str) -> list[ReasonCode]:
        waiter: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._acks[mid] = waiter
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await waiter
        except TimeoutError:
            raise ConnectFailed(f"no {what}") from None
        finally:
            self._acks.pop(mid, None)

    def ack(self, mid: int, qos: int) -> bool:
        """PUBACK a message of this connection; False if the connection is gone."""
        if self.lost.is_set() or qos == 0:
            return False
        return self.client.ack(mid, qos) == mqtt.MQTT_ERR_SUCCESS

    def pause_reading(self) -> None:
        """Stop taking packets (TCP backpressure) while too many are in flight."""
        self._paused = True
        if self._reading and self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._reading = False

    @property
    def paused(self) -> bool:
        return self._paused

    def resume_reading(self) -> None:
        """Undo `pause_reading()` (a no-op when not paused)."""
        if not self._paused:
            return
        self._paused = False
        if not self._reading and self._sock is not None and not self.lost.is_set():
            self._loop.add_reader(self._sock, self._readable)
            self._reading = True
            self._loop.call_soon(self._readable)  # bytes may wait in our buffer

    async def disconnect(self, timeout: float = 2.0, *, end_session: bool = False) -> bool:
        """Send DISCONNECT; True when it was written before the connection
        ended (see `disconnected_cleanly`).

        By default the session and its unacknowledged messages stay.
        `end_session` (MQTT 5): reason "normal disconnection" with the
        property Session Expiry Interval 0, so the broker deletes the
        session, queued messages included (allowed because our CONNECT
        asked for a non-zero expiry).
        """
        if self.lost.is_set():
            return False
        reason: ReasonCode | None = None
        properties: Properties | None = None
        if end_session:
            if self.protocol != 5:
                raise ValueError("ending a session on DISCONNECT needs MQTT 5")
            reason = ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        self._disconnecting = True
        self.client.disconnect(reasoncode=reason, properties=properties)
        try:
            async with asyncio.timeout(timeout):
                await self.lost.wait()
        except TimeoutError:
            self.abort()
        return self.disconnected_cleanly

    def abort(self) -> None:
        """Drop the connection at once, without DISCONNECT."""
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        sock = self._sock
        if sock is not None:
            self._forget(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._mark_lost("aborted")

    # -- paho callbacks (all on the loop) -----------------------------------------

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        self._sock = sock
        if not self._paused:
            self._loop.add_reader(sock, self._readable)
            self._reading = True

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        self._forget(sock)
        self._mark_lost(self.disconnect_reason or "socket closed")

    def _forget(self, sock: SocketLike) -> None:
        if self._sock is not sock:
            return
        self._sock = None
        if self._reading:
            self._loop.remove_reader(sock)
            self._reading = False
        self._loop.remove_writer(sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        self._loop.add_writer(sock, self._writable)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
        self._loop.remove_writer(sock)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None or not self._reading:
            return
        client = self.client
        client.loop_read()
        # Whole packets may already sit in our buffer (or TLS's): take them
        # now, a bounded number, instead of waiting for a readiness event
        # that will never come for bytes already read from the kernel.
        for _ in range(READ_BURST):
            if self._sock is not sock or not self._reading:
                return
            if not isinstance(sock, BufferedSocket) or sock.pending() <= 0:
                return
            client.loop_read()
        if (
            self._sock is sock
            and self._reading
            and isinstance(sock, BufferedSocket)
            and sock.pending() > 0
        ):
            self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        if self._sock is not None:
            self.client.loop_write()

    def _tick(self) -> None:
        self._misc = None
        if self.lost.is_set():
            return
        self.client.loop_misc()  # keepalive PINGREQ, and its timeout
        if not self.lost.is_set():
            self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if not self._connack.done():
            self._connack.set_result((bool(flags.session_present), reason))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self.disconnect_reason = str(reason)
        if (
            self._disconnecting
            and not flags.is_disconnect_packet_from_server
            and not reason.is_failure
            and not self.lost.is_set()
        ):
            # paho calls this right after writing our DISCONNECT.
            self.disconnected_cleanly = True
        self._mark_lost(str(reason))

    def _on_suback(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], properties: Any
    ) -> None:
        waiter = self._acks.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(codes)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Runs inside loop_read; an exception here would abort the read.
        try:
            self._on_message_cb(self, msg)
        except Exception:
            paho_log.exception("message callback failed")

    def _mark_lost(self, why: str) -> None:
        if self.lost.is_set():
            return
        self.disconnect_reason = self.disconnect_reason or why
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self.lost.set()
        error = ConnectFailed(f"connection lost: {why}")
        if not self._connack.done():
            self._connack.set_exception(error)
            self._connack.exception()  # retrieved: no "never retrieved" warning
        for waiter in self._acks.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
