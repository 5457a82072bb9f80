"""The embedded MQTT broker (`[mqtt] embedded_broker = true`): amqtt in-process.

It exists so `make run` needs nothing but Python: the daemon's own listener
connects to it like to any broker, agents publish to it.  It is a demo
broker, and that is documented (docs/mqtt.md): it keeps sessions, queued
messages and retained messages only in memory, so everything it holds is
lost when it (that is, the daemon) stops; it speaks MQTT 3.1.1 only; it has
no TLS and lets anyone in.  Production uses mosquitto or EMQX.
"""

# This module is imported only when the embedded broker is configured: amqtt
# pulls in websockets, transitions and more that a daemon talking to a real
# broker never needs.
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import structlog
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = structlog.get_logger("monitor.broker")


class BrokerStartError(Exception):
    """The embedded broker could not listen (port taken, bad address)."""


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Lets every client in, *without* marking its session anonymous.

    amqtt's own AnonymousAuthPlugin flags sessions anonymous, and amqtt drops
    anonymous sessions at disconnect; the daemon's `clean_session=False`
    would then mean nothing and reports published while it reconnects would
    be lost even with the broker up.
    """

    async def authenticate(self, *, session: Session) -> bool:
        return True

    @dataclass
    class Config:
        pass


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt's config: one TCP listener, anonymous access, no $SYS chatter."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "listeners": {"default": {"type": "tcp", "bind": bind}},
        # Only our open auth: the default set adds packet/event loggers and a
        # $SYS publisher every 20 s, all overhead for a demo broker.
        "plugins": {f"{__name__}.OpenAuthPlugin": {}},
    }


class EmbeddedBroker:
    """Start and stop one amqtt broker on the running loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        # amqtt logs every connection at INFO through stdlib logging; keep its
        # warnings only, whatever the root level.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        broker = Broker(broker_config(self.host, self.port))
        try:
            await broker.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await broker.shutdown()
            raise BrokerStartError(
                f"embedded MQTT broker cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self._broker = broker
        log.info(
            "embedded MQTT broker listening",
            host=self.host,
            port=self.port,
            note="demo broker: keeps nothing across its own restart",
        )

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            async with asyncio.timeout(1.5):
                await broker.shutdown()
        except Exception as exc:  # stopping must never mask the reason we stop
            log.warning("embedded MQTT broker did not shut down cleanly", error=str(exc))
        else:
            log.info("embedded MQTT broker stopped")
