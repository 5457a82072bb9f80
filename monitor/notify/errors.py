"""Transport failures and the retry back-off shared by every notice transport.

The scheduler decides *whether* to try again; the transports only say whether
trying again could help (`permanent`).  A permanent failure (a 404 webhook, a
550 mailbox) will fail the same way on every retry, so the scheduler should
treat the contact as not reached through that transport instead of burning
its `ack_timeout` on retries.
"""

from __future__ import annotations

import random

# 2**62 seconds is far beyond any configured `max_backoff`; capping the
# exponent keeps `2.0 ** n` from overflowing for absurd attempt counts (a
# notice retried for weeks), so the function is total over attempt >= 1.
_MAX_EXPONENT = 62


class TransportError(Exception):
    """A notice could not be handed over to its receiver.

    `permanent` is True when retrying the same request cannot succeed (HTTP
    4xx other than 408/429, SMTP 5xx, an unusable address); False for
    everything that may heal by itself (timeouts, refused connections, 5xx,
    SMTP 4xx).  `status` is the HTTP or SMTP reply code when there was one,
    for logs and metrics.
    """

    def __init__(self, message: str, permanent: bool, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status

    def __repr__(self) -> str:
        return (
            f"TransportError({self.message!r}, permanent={self.permanent!r}, "
            f"status={self.status!r})"
        )


def backoff(
    attempt: int,
    max_backoff: float,
    base: float = 1.0,
    *,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed try number `attempt` (1, 2, ...).

    Exponential with *full jitter*: uniform in [0, min(max_backoff,
    base * 2**(attempt-1))].  Full jitter (rather than a fixed exponential
    delay) spreads the retries of many notices that failed together, e.g. when
    a webhook receiver restarts, so they do not hit it again in lock-step.

    Pass `rng=random.Random(seed)` for reproducible delays in tests.  This is
    wall time (SPEC 4: retry back-off is not on the daemon clock).
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if max_backoff < 0 or base < 0:
        raise ValueError("max_backoff and base must not be negative")
    ceiling = min(max_backoff, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return (rng or random).uniform(0.0, ceiling)
