"""In-process fan-out of incident changes to SSE subscribers.

The durable feed is the `events` table (Last-Event-ID resumes from it); the
bus only wakes live subscribers after a commit.  A subscriber that cannot
keep up is dropped to a `reset` rather than letting its queue grow.
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

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, changes: list[tuple[int, int]]) -> None:
        """`changes`: (event seq, incident id) pairs, in commit order."""
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
