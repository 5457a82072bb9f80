"""The bare building blocks the daemon is compared with (PERF.md), each a
separate process so it gets its own interpreter like the daemon does.

    python bench/sinks.py smtp PORT        aiosmtpd, handler answers 250 at once
    python bench/sinks.py mqtt URL FILE [4|5]  paho QoS 1 subscriber (MQTT 3.1.1 or
                                           5) on a persistent session; writes
                                           "<report id> <time>" per message to FILE

Both print "ready" once they accept traffic.  The MQTT consumer does not
parse JSON: it slices the report id out of the payload (a counting consumer
should cost what counting costs).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any


def smtp_sink(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="sink.example", data_size_limit=1 << 20),
            "127.0.0.1",
            port,
        )
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def mqtt_consumer(url: str, out_path: str, protocol: int = 4) -> None:
    from urllib.parse import urlsplit

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    parts = urlsplit(url)
    if protocol == 5:  # MQTT 5 sessions persist through clean_start/expiry on connect
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-bare-consumer", protocol=mqtt.MQTTv5
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-bare-consumer", clean_session=False
        )
    lines: list[str] = []
    lock = threading.Lock()
    subscribed = threading.Event()
    marker = b'"id":"'

    def on_message(c: Any, u: Any, msg: Any) -> None:
        now = time.time()
        data = msg.payload
        i = data.find(marker) + len(marker)
        rid = data[i : data.find(b'"', i)].decode()
        with lock:
            lines.append(f"{rid} {now:.6f}\n")

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe("express/alarm/+", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    if protocol == 5:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(
            parts.hostname or "127.0.0.1",
            parts.port or 1883,
            keepalive=60,
            clean_start=False,
            properties=props,
        )
    else:
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("no SUBACK")
    print("ready", flush=True)
    with open(out_path, "a", encoding="ascii") as out:
        while True:  # until killed: hand what arrived to the file every 100 ms
            time.sleep(0.1)
            with lock:
                batch, lines[:] = lines[:], []
            if batch:
                out.writelines(batch)
                out.flush()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "smtp":
        smtp_sink(int(sys.argv[2]))
    elif role == "mqtt":
        mqtt_consumer(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 4)
    else:
        raise SystemExit(f"unknown role {role}")
