"""Where each channel's reports go, and opening the connections to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from monitor.dte import PortLike
from monitor_sim.clients import Connection, Pool
from monitor_sim.clients.http import HttpConnection
from monitor_sim.clients.mqtt import MqttConnection
from monitor_sim.clients.serial import DEFAULT_NUMBER, SerialLine, open_url
from monitor_sim.wire import Targets


@dataclass
class Endpoints:
    """The target flags of SPEC 7 (`--smtp H:P`, `--mqtt URL`, `--serial PORT`,
    `--api URL --token T`) plus what a rendering needs."""

    api: str | None = None
    token: str = ""
    smtp: str | None = None
    mqtt: str | None = None
    serial: Sequence[str | PortLike] = ()
    number: str = DEFAULT_NUMBER
    rcpt: str = "alarms@monitor.example"
    topic_prefix: str = "express"
    opener: Callable[[str], PortLike] = field(default=open_url)

    @property
    def targets(self) -> Targets:
        return Targets(topic_prefix=self.topic_prefix, mail_to=self.rcpt)

    def missing(self, channels: set[str]) -> list[str]:
        need = {
            "http": self.api,
            "smtp": self.smtp,
            "mqtt": self.mqtt,
            "serial": self.serial or None,
        }
        flag = {"http": "--api", "smtp": "--smtp", "mqtt": "--mqtt", "serial": "--serial"}
        return [f"{flag[c]} (the trace has {c} reports)" for c in sorted(channels) if not need[c]]


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text or "127.0.0.1", default_port
    return host.strip("[]"), int(port)


def open_pool(channel: str, ep: Endpoints, connections: int, window: int = 64) -> Pool:
    """`connections` connections of one channel (serial: one per line given)."""
    conns: list[Connection]
    if channel == "http":
        assert ep.api is not None
        conns = [HttpConnection(ep.api, ep.token) for _ in range(connections)]
        return Pool(conns)
    if channel == "smtp":
        from monitor_sim.clients.smtp import SmtpConnection

        assert ep.smtp is not None
        host, port = split_hostport(ep.smtp, 25)
        conns = [SmtpConnection(host, port, ep.rcpt) for _ in range(connections)]
        return Pool(conns)
    if channel == "mqtt":
        assert ep.mqtt is not None
        per = max(1, window // max(1, connections))
        conns = [MqttConnection(ep.mqtt, per) for _ in range(connections)]
        return Pool(conns, shared=True)
    if channel == "serial":
        conns = [SerialLine(p, ep.number, opener=ep.opener) for p in ep.serial]
        return Pool(conns)
    raise ValueError(f"unknown channel {channel!r}")
