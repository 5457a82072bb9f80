"""Per-peer rate limit for the SMTP listener (SPEC 3.3: over `rate_per_peer`, 421).

A token bucket per peer IP address, on wall time (`time.monotonic`): rate
limits are protocol timers, not daemon-clock business (SPEC 4), so a
simulated clock jump neither floods nor starves a sender.  Pure apart from
the injected clock, so the tests drive it with a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Buckets are forgotten once full again (an idle peer is as good as a new
# one); pruning runs when the table grows past this, so a scan of many
# addresses cannot grow it without bound between prunes.
PRUNE_AT = 4096


class PeerRateLimit:
    """`rate` messages a second per peer, with a burst of one second's worth
    (at least one message), so a peer sending evenly at the rate is never
    refused and a peer going over is refused as soon as its burst is spent."""

    __slots__ = ("_buckets", "_now", "burst", "rate")

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}  # peer → (tokens, at)

    def take(self, peer: str) -> bool:
        """Spend one token for `peer`; False when it has none (answer 421)."""
        now = self._now()
        tokens, at = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1.0, now)
        if len(self._buckets) > PRUNE_AT:
            self._prune(now)
        return True

    def retry_after(self, peer: str) -> float:
        """Seconds until `peer` has a token again (for the reply text)."""
        now = self._now()
        tokens, at = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [
            peer
            for peer, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for peer in full:
            del self._buckets[peer]
