"""An MQTT publisher (aiomqtt, QoS 1): the agents' side of SPEC 3.2.

`send` returns when the broker's PUBACK arrives; "acknowledged" over MQTT
means the broker has the message, not that the daemon stored it (SPEC 3.2),
which is why `load` waits for the daemon to drain before counting.  The
client's in-flight window is capped well below MQTT's 16-bit packet ids
(PERF.md's trap).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from urllib.parse import urlsplit

import aiomqtt

from monitor_sim.clients import Outcome
from monitor_sim.wire import Wire

MAX_INFLIGHT = 4096
_ids = itertools.count(1)
# aiomqtt warns about every pending publish beyond a few; a load run keeps
# hundreds pending on purpose.
_log = logging.getLogger("monitor_sim.mqtt")
_log.setLevel(logging.ERROR)


class MqttConnection:
    def __init__(self, url: str, window: int = 64, name: str = "") -> None:
        parts = urlsplit(url)
        self._client = aiomqtt.Client(
            hostname=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=parts.username,
            password=parts.password,
            identifier=name or f"monitor-sim-{os.getpid()}-{next(_ids)}",
            max_inflight_messages=min(MAX_INFLIGHT, max(20, window)),
            tls_params=aiomqtt.TLSParameters() if parts.scheme == "mqtts" else None,
            logger=_log,
        )
        self._open = False

    async def connect(self) -> None:
        if not self._open:
            await self._client.__aenter__()
            self._open = True

    async def send(self, wire: Wire) -> Outcome:
        try:
            await self.connect()
            await self._client.publish(wire.target, wire.payload, qos=1, timeout=30)
        except aiomqtt.MqttError as exc:
            return Outcome(False, f"error: {exc}")
        return Outcome(True, "PUBACK")

    async def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
