"""The agent's configuration (SPEC 5.1): TOML → frozen, validated objects.

    from monitor_agent.config import load_agent_config
    config = load_agent_config("/etc/monitor-agent/agent.toml")   # or ConfigError

Strict like the daemon's: unknown keys, bad durations, a missing serial are
errors, every one of them reported at once, each as
`config error: <file>[:<line>]: <key>: <what>`.  It reuses the daemon's
error-collecting table reader and value parsers, so both configs speak the
same little languages ("90s", "host:port") and word their errors alike.
Every key is described in docs/agent.md.
"""

from __future__ import annotations

import os
import shlex
import socket
import tomllib
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.config import ConfigError, Problem, parse_duration, parse_hostport
from monitor.config.locate import Locator, syntax_error_position
from monitor.config.table import Collector, Source, Table, as_bool, as_int, as_str, type_name
from monitor.model import SEVERITIES
from monitor_agent.collectors import TYPES, CollectorSpec

__all__ = [
    "AgentConfig",
    "AgentSettings",
    "ConfigError",
    "MqttSettings",
    "SerialSettings",
    "SmtpSettings",
    "load_agent_config",
]

DEFAULT_SPOOL = "/var/lib/monitor-agent/spool.db"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    serial: str
    model: str = ""
    host: str = ""
    secret: str = ""
    spool: str = DEFAULT_SPOOL  # absolute
    heartbeat: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    url: str
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    topic_prefix: str = "express"
    client_id: str = ""
    keepalive: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    to: str
    sender: str  # `from`
    after: timedelta = timedelta(minutes=5)
    timeout: timedelta = timedelta(seconds=30)
    username: str | None = None
    password: str | None = None
    starttls: bool = False


@dataclass(frozen=True, slots=True)
class SerialSettings:
    port: str
    number: str
    baud: int = 9600
    after: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: str
    agent: AgentSettings
    mqtt: MqttSettings | None = None
    smtp: SmtpSettings | None = None
    serial: SerialSettings | None = None
    collectors: tuple[CollectorSpec, ...] = ()

    @property
    def channels(self) -> list[str]:
        return [n for n in ("mqtt", "smtp", "serial") if getattr(self, n) is not None]

    def summary(self) -> str:
        names = ", ".join(f"{c.name} ({c.type})" for c in self.collectors) or "none"
        return (
            f"ok: serial {self.agent.serial}, channels {' '.join(self.channels)}, "
            f"{len(self.collectors)} collectors: {names}"
        )


# -- value parsers -----------------------------------------------------------------


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _duration(value: object) -> timedelta:
    return parse_duration(as_str(value))


def _nonempty(value: object) -> str:
    text = as_str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _serial(value: object) -> str:
    text = _nonempty(value)
    if len(text) > 64:
        raise ValueError("must be at most 64 characters (SPEC 3.1)")
    # It is the last level of the MQTT topics.
    if any(c in text for c in "/+#") or any(c.isspace() for c in text):
        raise ValueError(f"{_q(text)}: no spaces, /, + or # (it is part of MQTT topics)")
    return text


def _prefix(value: object) -> str:
    text = _nonempty(value)
    if any(c in text for c in "+#\0") or text.startswith(("$", "/")) or text.endswith("/"):
        raise ValueError(f"{_q(text)}: no + or #, and must not start with $ or / nor end with /")
    return text


def _address(value: object) -> str:
    text = _nonempty(value)
    if "@" not in text or any(c.isspace() or c in "<>" for c in text):
        raise ValueError(f"{_q(text)}: expected a plain address like agent@db01.example.jp")
    return text


def _mqtt_url(value: object) -> tuple[str, str, int, bool, str | None, str | None]:
    text = as_str(value)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{_q(text)}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{_q(text)}: missing host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{_q(text)}: invalid port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{_q(text)}: no path, query or fragment expected")
    tls = parts.scheme == "mqtts"
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return text, parts.hostname, port or (8883 if tls else 1883), tls, user, password


def _command(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            words = tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"{_q(value)}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        words = tuple(value)
    else:
        raise ValueError(f"must be a string or an array of strings, not {type_name(value)}")
    if not words or not words[0]:
        raise ValueError("must not be empty")
    return words


def _severity(value: object) -> str:
    text = as_str(value)
    if text not in SEVERITIES or text == "clear":
        raise ValueError(f"{_q(text)}: one of critical, major, minor, warning, info")
    return text


def _zone(value: object) -> str:
    text = as_str(value)
    if text == "local":
        return text
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'{_q(text)}: not a time zone (use "local", "UTC" or e.g. "Asia/Tokyo")'
        ) from None
    return text


_OPTION_PARSERS: dict[str, Any] = {"int": as_int(), "str": as_str, "zone": _zone}


# -- sections ----------------------------------------------------------------------


def _resolve(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _agent(t: Table, base: str) -> AgentSettings | None:
    serial = t.get("serial", _serial, required=True)
    model = t.get("model", as_str, "")
    host = t.get("host", as_str, socket.gethostname().split(".")[0])
    secret = t.get("secret", as_str, "")
    spool = t.get("spool", _nonempty, DEFAULT_SPOOL)
    heartbeat = t.get("heartbeat", _duration, timedelta(seconds=60))
    t.close()
    if serial is None:
        return None
    return AgentSettings(serial, model, host, secret, _resolve(spool, base), heartbeat)


def _mqtt(t: Table, serial: str) -> MqttSettings | None:
    url = t.get("url", _mqtt_url, required=True)
    prefix = t.get("topic_prefix", _prefix, "express")
    client_id = t.get("client_id", _nonempty, f"agent-{serial}")
    keepalive = t.get("keepalive", _duration, timedelta(seconds=30))
    t.close()
    if url is None:
        return None
    text, host, port, tls, user, password = url
    return MqttSettings(text, host, port, tls, user, password, prefix, client_id, keepalive)


def _smtp(t: Table) -> SmtpSettings | None:
    server = t.get("server", lambda v: parse_hostport(as_str(v), 25), required=True)
    to = t.get("to", _address, required=True)
    sender = t.get("from", _address, required=True)
    after = t.get("after", _duration, timedelta(minutes=5))
    timeout = t.get("timeout", _duration, timedelta(seconds=30))
    username = t.get("username", _nonempty)
    password = t.get("password", as_str)
    starttls = t.get("starttls", as_bool, False)
    if (username is None) != (password is None):
        t.error("username" if username is None else "password", "username and password go together")
    t.close()
    if server is None or to is None or sender is None:
        return None
    host, port = server
    return SmtpSettings(host, port, to, sender, after, timeout, username, password, starttls)


def _serial_line(t: Table) -> SerialSettings | None:
    port = t.get("port", _nonempty, required=True)
    number = t.get("number", _nonempty, required=True)
    baud = t.get("baud", as_int(50, 4_000_000), 9600)
    after = t.get("after", _duration, timedelta(minutes=15))
    t.close()
    if port is None or number is None:
        return None
    return SerialSettings(port, number, baud, after)


def _collector(name: str, t: Table, base: str) -> CollectorSpec | None:
    kind = t.get("type", as_str, name)
    info = TYPES.get(kind)
    if info is None:
        where = "type" if t.has("type") else None
        t.error(
            where,
            f"unknown collector type {_q(kind)}: set type = one of " + ", ".join(sorted(TYPES)),
        )
        t.allow(t.data.keys())
        return None
    command = t.get("command", _command)
    path = t.get("path", _nonempty)
    if command is not None and path is not None:
        t.error("path", "give a command or a path, not both")
    if command is None and path is None:
        if info.command is not None:
            command = tuple(shlex.split(info.command))
        elif info.path is not None:
            path = info.path
        else:
            t.error(
                None, f'a {kind} collector needs a command (e.g. "smartctl --json -H -A /dev/sda")'
            )
    interval = t.get("interval", _duration, info.interval)
    timeout = t.get("timeout", _duration, timedelta(seconds=60))
    minimum = t.get("min_severity", _severity, "info")
    options: dict[str, Any] = {}
    for key, kind_name in info.options.items():
        value = t.get(key, _OPTION_PARSERS[kind_name])
        if value is not None:
            options[key] = value
    t.close()
    if command is None and path is None:
        return None
    return CollectorSpec(
        name=name,
        type=kind,
        command=command,
        path=_resolve(path, base) if path is not None else None,
        interval=interval,
        timeout=timeout,
        min_severity=minimum,
        options=options,
    )


def _read(display: str, collector: Collector) -> tuple[Source, dict[str, Any]] | None:
    path = Path(os.path.abspath(display))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        collector.add_problem(0, Problem(display, None, "file", f"cannot read: {exc.strerror}"))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        collector.add_problem(0, Problem(display, line, "syntax", "not valid UTF-8"))
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, column, message = syntax_error_position(str(exc), text)
        if column is not None:
            message = f"{message} (column {column})"
        collector.add_problem(0, Problem(display, line, "syntax", message))
        return None
    return Source(display, path, Locator(text), 0), data


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Load and validate; raise ConfigError listing every problem found."""
    given = os.fspath(path)
    collector = Collector()
    read = _read(given, collector)
    if read is None:
        raise ConfigError(collector.problems())
    src, data = read
    base = str(src.path.parent)
    top = Table(collector, src, (), data)

    section = top.table("agent", required=True)
    agent = _agent(section, base) if section is not None else None
    serial = agent.serial if agent else "agent"
    mqtt = _mqtt(section, serial) if (section := top.table("mqtt")) is not None else None
    smtp = _smtp(section) if (section := top.table("smtp")) is not None else None
    serial_line = _serial_line(section) if (section := top.table("serial")) is not None else None
    if not any(top.has(k) for k in ("mqtt", "smtp", "serial")):
        top.error(
            "mqtt",
            "missing: the agent needs a channel ([mqtt], and optionally "
            "[smtp] and [serial] as fallbacks)",
        )
    specs: list[CollectorSpec] = []
    for name, table in top.named_tables("collectors"):
        spec = _collector(name, table, base)
        if spec is not None:
            specs.append(spec)
    top.close()
    if collector or agent is None:
        raise ConfigError(collector.problems())
    return AgentConfig(
        path=str(src.path),
        agent=agent,
        mqtt=mqtt,
        smtp=smtp,
        serial=serial_line,
        collectors=tuple(specs),
    )
