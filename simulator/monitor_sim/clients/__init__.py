"""The client side of every channel, one connection type per module.

Each connection sends one `Wire` at a time (MQTT: many) and says whether
the daemon acknowledged it: HTTP 2xx, SMTP 250, MQTT PUBACK (from the
broker, SPEC 3.2), serial ACK.  `Pool` hands connections out to
concurrent senders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from monitor_sim.wire import Wire


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool  # acknowledged: durably stored (or, MQTT, taken by the broker)
    detail: str  # status line, reply code, NAK reason or error
    refused: bool = False  # a definite "no" (400, 5xx, NAK invalid), not a failure to talk


class Connection(Protocol):
    async def send(self, wire: Wire) -> Outcome: ...

    async def close(self) -> None: ...


class Pool:
    """Connections shared by concurrent senders; each is lent to one at a time
    (MQTT connections may be lent to several: `shared=True`)."""

    def __init__(self, conns: Sequence[Connection], shared: bool = False) -> None:
        self.conns = list(conns)
        self._shared = shared
        self._next = 0
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        for c in self.conns:
            self._idle.put_nowait(c)

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[Connection]:
        if self._shared:
            conn = self.conns[self._next % len(self.conns)]
            self._next += 1
            yield conn
            return
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def send(self, wire: Wire) -> Outcome:
        async with self.lend() as conn:
            return await conn.send(wire)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)
