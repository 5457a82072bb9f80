"""The daemon clock: the only place that reads the time of day.

Everything in SPEC 4 follows this clock.  `SimulatedClock` starts at
`clock_start`, runs at real speed and can be jumped (backwards too); every
jump wakes whoever sleeps on the clock so the scheduler re-evaluates at once.
Network timeouts and protocol timers use `time.monotonic()` directly: they run
on wall time whatever the daemon clock says.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class Clock:
    """System clock; base class of the simulated one."""

    simulated = False

    def __init__(self) -> None:
        self._wakers: list[asyncio.Event] = []

    def now(self) -> datetime:
        return datetime.now(UTC)

    def waker(self) -> asyncio.Event:
        """An event set on every clock jump; its owner clears it *before*
        looking for due work, so a jump during that look is never missed."""
        event = asyncio.Event()
        self._wakers.append(event)
        return event

    def changed(self) -> None:
        for event in self._wakers:
            event.set()

    async def sleep_until(
        self, when: datetime | None, wake: asyncio.Event, max_wall: float = 60.0
    ) -> None:
        """Sleep until `when` on this clock, `wake` being set, or `max_wall` s.

        The wall cap bounds drift between the monotonic sleep and the clock
        (a system clock set forward by NTP is noticed within `max_wall`).
        """
        delay = max_wall
        if when is not None:
            delay = min(max_wall, max(0.0, (when - self.now()).total_seconds()))
        if delay <= 0 or wake.is_set():
            return
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
        # cancellation that arrives as the event fires (cpython #86296).
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            pass


class SimulatedClock(Clock):
    simulated = True

    def __init__(self, start: datetime) -> None:
        super().__init__()
        if start.tzinfo is None:
            raise ValueError("clock_start must carry an offset")
        self._base = start
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._base + timedelta(seconds=time.monotonic() - self._mono)

    def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("time must carry an offset")
        self._base = when
        self._mono = time.monotonic()
        self.changed()
        return when

    def advance(self, seconds: float) -> datetime:
        return self.set(self.now() + timedelta(seconds=seconds))


def make_clock(kind: str, start: datetime | None) -> Clock:
    if kind == "simulated":
        return SimulatedClock(start or datetime.now(UTC))
    return Clock()
