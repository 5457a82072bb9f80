"""Channel listeners (SMTP, MQTT, serial): thin shells around sans-I/O cores.

Each listener reports itself up or down through the runtime (for /readyz and
`monitor_listener_up`), runs until cancelled, and never dies from what a peer
sent.  The daemon supervises each one and restarts it with backoff.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.runtime import Runtime


class Listener(Protocol):
    name: str

    async def run(self) -> None:
        """Serve until cancelled; set the runtime's listener state as it goes."""

    async def stop(self) -> None:
        """Stop taking new input; in-flight reports finish."""


def build_listeners(rt: Runtime) -> list[Listener]:
    """The listeners the current config asks for."""
    return []
