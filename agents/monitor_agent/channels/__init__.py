"""Channels that carry spooled reports to the centre: MQTT (main), SMTP and
serial dial-up (fallbacks).

A fallback channel takes a batch of spooled reports in order and tells a
`Sink` what became of each one as soon as it knows: `taken` (the centre has
it: SMTP 250, serial ACK), `refused` (refused for good: SMTP 5xx to the
message, NAK invalid/bad-signature) or `failed` (try again later; the batch
stops there, so nothing overtakes it).  The sink's methods are synchronous
and thread-safe (the serial channel calls them from its worker thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["ShouldStop", "Sink"]


class Sink(Protocol):
    def taken(self, seq: int, channel: str) -> None: ...

    def refused(self, seq: int, channel: str, reason: str) -> None: ...

    def failed(self, seq: int, channel: str, error: str) -> None: ...


# Asked between two reports of a batch: stop early (MQTT is back, shutdown).
ShouldStop = Callable[[], bool]
