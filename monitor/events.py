"""In-process fan-out of incident changes to SSE subscribers.

The durable feed is the `events` table (Last-Event-ID resumes from it); the
bus only wakes live subscribers after a commit.  A subscriber that cannot
keep up is dropped to a `reset` rather than letting its queue grow.

Who publishes: on SQLite the pipeline, after each commit (one writer, so
commit order is seq order).  On PostgreSQL the store's `Fanout` alone, every
instance's changes included this one's, in commit-safe seq order
(`monitor/store/pgfanout.py`); it also moves `horizon`, the highest seq
below which every event is committed and published.  A resuming SSE client
reads its backlog from the table up to the horizon and gets the rest live.
"""

from __future__ import annotations

import asyncio

QUEUE_LIMIT = 10_000


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        # None: every committed event is final (SQLite).  An int (PostgreSQL):
        # events above it may still be committing and will be published.
        self.horizon: int | None = None

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, changes: list[tuple[int, int]], horizon: int | None = None) -> None:
        """`changes`: (event seq, incident id) pairs, in commit order;
        `horizon`: the new horizon (PostgreSQL's Fanout), if it moved."""
        if horizon is not None and (self.horizon is None or horizon > self.horizon):
            self.horizon = horizon
        for sub in self._subs:
            if sub.overflowed:
                continue
            for change in changes:
                try:
                    sub.queue.put_nowait(change)
                except asyncio.QueueFull:
                    sub.overflowed = True
                    break

    @property
    def subscribers(self) -> int:
        return len(self._subs)
