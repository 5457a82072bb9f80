"""Reconnect backoff shared by the listeners (broker links, serial ports)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential delays with "equal jitter": half fixed, half random.

    The random half keeps a fleet of daemons reconnecting to a broker, or
    several lines behind one USB hub, from retrying in lockstep.
    """

    def __init__(
        self, first: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.first = first
        self.cap = cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.cap, self.first * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        return base / 2 + self._rng.random() * base / 2

    def reset(self) -> None:
        self.attempts = 0
