"""`monitor-sim load` (SPEC 7): drive one channel, then count what was stored.

Senders ("slots") each own a connection (MQTT: share one, several
publishes in flight).  With `--rate 0` a slot sends its next report as soon
as the last is acknowledged, so at most `--window` (MQTT) or one per
connection are in flight.  With `--rate R` report n is due at start + n/R
(open loop); a slot that is still busy sends late, and latency counts from
the due time, so a daemon that falls behind shows it (no coordinated
omission).

Afterwards an observer says which reports were stored and when: the
daemon's API (`stored_at`, so the daemon must run on the system clock), or
for the bench's bare sinks, the sink itself.  MQTT acknowledgements come
from the broker, so the observer waits for the daemon to drain first.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from monitor_sim.api import Api
from monitor_sim.channels import Endpoints, open_pool
from monitor_sim.clients import Connection, Pool
from monitor_sim.loadgen import ReportMaker

DRAIN_QUIET = 3.0  # the observer stops waiting after this long without progress
DRAIN_MAX = 120.0


@dataclass
class LoadOptions:
    channel: str
    rate: float = 0.0
    duration: float = 10.0
    count: int | None = None  # stop after this many reports (else: after `duration`)
    connections: int = 8
    window: int = 64


@dataclass(slots=True)
class Sample:
    n: int
    sent: float  # wall time the report was due (open loop) or written (closed loop)
    acked: float | None = None  # wall time of the acknowledgement
    stored: float | None = None  # the daemon's stored_at


class Observer(Protocol):
    """Who tells which report ids got stored, and when (epoch seconds)."""

    async def start(self) -> None: ...

    async def stored(self, ids: set[str], expect: int) -> list[tuple[str, float]]: ...


class ApiObserver:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.mark = 0

    async def start(self) -> None:
        self.mark = await self.api.newest("/api/v1/alarms", "seq")

    async def stored(self, ids: set[str], expect: int) -> list[tuple[str, float]]:
        """Ours among the alarms since the mark, once the count stops growing."""
        rows: list[tuple[str, float]] = []
        last, quiet_since, t0 = -1, time.monotonic(), time.monotonic()
        while True:
            alarms = await self.api.alarms_since(self.mark)
            rows = [(a["id"], _epoch(a["stored_at"])) for a in alarms if a["id"] in ids]
            now = time.monotonic()
            if len(rows) >= expect or now - t0 > DRAIN_MAX:
                return rows
            if len(rows) != last:
                last, quiet_since = len(rows), now
            elif now - quiet_since > DRAIN_QUIET:
                return rows
            await asyncio.sleep(0.5)


def _epoch(text: str) -> float:
    # The API gives times to the millisecond, truncated; the middle of that
    # millisecond is the unbiased estimate (latencies are often ~1 ms).
    return datetime.fromisoformat(text).timestamp() + 0.0005


@dataclass
class LoadResult:
    sent: int = 0
    acked: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    # Send → acknowledgement: for HTTP, SMTP and serial the ack follows the
    # commit, so this bounds receipt → durable from above (it adds the
    # return trip); over MQTT it is the broker's PUBACK and says nothing
    # about the daemon.
    p50_ack_ms: float = 0.0
    p99_ack_ms: float = 0.0
    seconds: float = 0.0  # the sending window the rate is computed over
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)

    def as_json(self) -> dict[str, float | int]:
        return {
            "sent": self.sent,
            "acked": self.acked,
            "stored": self.stored,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "rate": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not values:
        return 0.0
    rank = max(1, min(len(values), math.ceil(q * len(values))))
    return values[rank - 1]


def account(
    samples: list[Sample], maker_id: Callable[[int], str], stored: list[tuple[str, float]]
) -> LoadResult:
    """The SPEC 7 figures from what was sent, acknowledged and stored."""
    times = Counter(i for i, _ in stored)
    first: dict[str, float] = {}
    for rid, at in stored:
        first[rid] = min(at, first.get(rid, at))
    res = LoadResult(samples=samples)
    res.sent = len(samples)
    res.acked = sum(1 for s in samples if s.acked is not None)
    latencies = []
    for s in samples:
        rid = maker_id(s.n)
        s.stored = first.get(rid)
        if s.acked is not None and s.stored is None:
            res.lost += 1
        if s.stored is not None:
            res.stored += 1
            latencies.append((s.stored - s.sent) * 1000)
    res.duplicates = sum(1 for n in times.values() if n > 1)
    acks = sorted((s.acked - s.sent) * 1000 for s in samples if s.acked is not None)
    res.p50_ack_ms = percentile(acks, 0.50)
    res.p99_ack_ms = percentile(acks, 0.99)
    latencies.sort()
    res.p50_ms = percentile(latencies, 0.50)
    res.p99_ms = percentile(latencies, 0.99)
    if samples:
        begin = min(s.sent for s in samples)
        end = max(
            [s.acked for s in samples if s.acked is not None]
            + [s.stored for s in samples if s.stored is not None],
            default=begin,
        )
        res.seconds = max(end - begin, 1e-9)
        res.rate = res.stored / res.seconds
    return res


class LoadRun:
    def __init__(self, opts: LoadOptions, pool: Pool, maker: ReportMaker) -> None:
        self.opts = opts
        self.pool = pool
        self.maker = maker
        self.samples: list[Sample] = []
        self.acked = 0
        self._next = itertools.count()
        self._t0 = 0.0
        self._wall0 = 0.0
        self._stop_at = 0.0

    def _slots(self) -> list[Connection]:
        conns = self.pool.conns
        if self.opts.channel == "mqtt":
            return [conns[k % len(conns)] for k in range(max(self.opts.window, len(conns)))]
        return list(conns)

    async def _slot(self, conn: Connection, errors: Counter[str]) -> None:
        opts, rate = self.opts, self.opts.rate
        while True:
            n = next(self._next)
            if opts.count is not None and n >= opts.count:
                return
            if rate > 0:
                due = self._t0 + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = self._wall0 + (due - self._t0)
            else:
                sent = time.time()
            if time.monotonic() >= self._stop_at:
                return
            report = self.maker.make(n)
            sample = Sample(n, sent)
            self.samples.append(sample)
            out = await conn.send(report.wire)
            if out.ok:
                sample.acked = time.time()
                self.acked += 1
            else:
                errors[out.detail[:60]] += 1

    async def run(self) -> Counter[str]:
        errors: Counter[str] = Counter()
        slots = self._slots()
        await asyncio.gather(*(_warm(c) for c in self.pool.conns))
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        limit = self.opts.duration if self.opts.count is None else 24 * 3600.0
        self._stop_at = self._t0 + limit
        await asyncio.gather(*(self._slot(c, errors) for c in slots))
        return errors


async def _warm(conn: Connection) -> None:
    """Connect before the clock starts, so setup isn't counted as load."""
    connect = getattr(conn, "connect", None)
    if connect is not None:
        await connect()


async def run_load(
    opts: LoadOptions,
    ep: Endpoints,
    maker: ReportMaker,
    observer: Observer | None = None,
    on_tick: Callable[[LoadRun], None] | None = None,
) -> LoadResult:
    pool = open_pool(opts.channel, ep, opts.connections, opts.window)
    run = LoadRun(opts, pool, maker)
    if observer is not None:
        await observer.start()
    ticker = None
    if on_tick is not None:
        tick = on_tick

        async def ticking() -> None:
            while True:
                await asyncio.sleep(0.25)
                tick(run)

        ticker = asyncio.create_task(ticking())
    # The samples list grows by thousands a second; the cyclic GC's full
    # passes over it would stall the sender for milliseconds, and those
    # stalls would show up as the daemon's latency.  Nothing here makes
    # cycles worth collecting within a run.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        errors = await run.run()
    finally:
        if gc_was_on:
            gc.enable()
        if ticker is not None:
            ticker.cancel()
        await pool.close()
    ids = {maker.report_id(s.n): s for s in run.samples}
    if observer is None:  # nobody else can tell: an acknowledgement is a store
        stored = [(rid, s.acked) for rid, s in ids.items() if s.acked is not None]
    else:
        stored = await observer.stored(set(ids), sum(1 for s in run.samples if s.acked))
    result = account(run.samples, maker.report_id, stored)
    result.errors = errors
    return result
