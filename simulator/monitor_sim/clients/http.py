"""A minimal keep-alive HTTP/1.1 client: one request in flight per connection.

aiohttp's client costs more CPU per request than the daemon's own handling
(PERF.md: it caps near 7,000 requests/s against Alertmanager's 19,000), so
load runs would measure the client.  This one writes a request built with
one format call and parses only the status line and Content-Length (or
chunked) of the answer.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from monitor_sim.clients import Outcome
from monitor_sim.wire import Wire


class HttpError(Exception):
    pass


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        answer = _parse(self.buf)
        if answer is not None:
            status, body, used = answer
            del self.buf[:used]
            self.waiter.set_result((status, body))


def _parse(buf: bytearray) -> tuple[int, bytes, int] | None:
    """A complete response at the head of `buf`: (status, body, bytes used)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = 0
    chunked = False
    for line in head[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key == "content-length":
            length = int(value.strip())
        elif key == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    start = head_end + 4
    if not chunked:
        if len(buf) < start + length:
            return None
        return status, bytes(buf[start : start + length]), start + length
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if len(buf) < eol + 2 + size + 2:
            return None
        body += buf[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
        if size == 0:
            return status, bytes(body), pos


class HttpConnection:
    """POSTs to one server over one keep-alive connection (reconnects if closed)."""

    def __init__(self, url: str, token: str = "", extra_headers: str = "") -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._head = (
            f"Host: {self.host}:{self.port}\r\n{auth}{extra_headers}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._proto: _Proto | None = None

    async def _connect(self) -> _Proto:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_Proto, self.host, self.port)
        return proto

    async def connect(self) -> None:
        if self._proto is None or self._proto.closed:
            self._proto = await self._connect()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._proto is None or self._proto.closed:
            self._proto = await self._connect()
        proto = self._proto
        assert proto.transport is not None
        proto.waiter = asyncio.get_running_loop().create_future()
        proto.transport.write(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\n"
            + self._head
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        return await proto.waiter

    async def send(self, wire: Wire) -> Outcome:
        try:
            status, body = await self.post(wire.target, wire.payload)
        except (OSError, HttpError) as exc:
            self._proto = None
            return Outcome(False, f"error: {exc}")
        detail = f"{status} {body[:200].decode('utf-8', 'replace')}"
        return Outcome(200 <= status < 300, detail, refused=400 <= status < 500)

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
