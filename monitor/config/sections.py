"""The service sections: [daemon] [http] [smtp] [mqtt] [[serial]] [notify]
[retention] [[tariff]].  Each builder reads one table, reports what is wrong
and returns the model object, or None when it could not be built (the
problems are then already collected)."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from monitor.config.fields import (
    as_duration,
    as_email,
    as_hex64,
    as_nonempty,
    as_offset_datetime,
    as_path,
    as_rate,
    as_zone,
    choice,
    q,
)
from monitor.config.table import Table, as_bool, as_int, as_str
from monitor.config.values import parse_hostport, parse_hours, parse_listen
from monitor.model import (
    DaemonConfig,
    HttpConfig,
    MqttConfig,
    NotifyConfig,
    RetentionConfig,
    SerialConfig,
    SmtpConfig,
    SmtpUser,
    TariffBand,
    TimeRange,
)

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_INSTANCE",
    "DEFAULT_TIMEZONE",
    "build_daemon",
    "build_http",
    "build_mqtt",
    "build_notify",
    "build_retention",
    "build_serial",
    "build_smtp",
    "build_tariff",
]

DEFAULT_TIMEZONE = "UTC"
DEFAULT_INSTANCE = "monitor-1"
DEFAULT_DATABASE = "var/monitor.db"


def _database(base_dir: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = as_nonempty(value)
        if "://" in text:
            scheme = text.split("://", 1)[0].lower()
            if scheme not in ("postgresql", "postgres"):
                raise ValueError(
                    f"{q(text)}: unsupported URL scheme (an SQLite path or a postgresql:// URL)"
                )
            return text
        if text == ":memory:":
            return text
        # Relative to the config file's folder, not the working directory:
        # systemd, `make run` and tests all start the daemon from elsewhere.
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))

    return parse


def build_daemon(t: Table, base_dir: str) -> DaemonConfig:
    timezone = t.get("timezone", as_zone, DEFAULT_TIMEZONE)
    default_db = os.path.normpath(os.path.join(base_dir, DEFAULT_DATABASE))
    database = t.get("database", _database(base_dir), default_db)
    clock_name = t.get("clock", choice("system", "simulated"), "system")
    clock: Literal["system", "simulated"] = "simulated" if clock_name == "simulated" else "system"
    # Validated even with the system clock (SPEC: ignored there) so a typo
    # does not wait to surface until someone switches to simulated.
    clock_start = t.get("clock_start", as_offset_datetime)
    if clock == "simulated" and clock_start is None and not t.has("clock_start"):
        t.error("clock_start", 'required with clock = "simulated"')
    instance = t.get("instance", as_nonempty, DEFAULT_INSTANCE)
    t.close()
    return DaemonConfig(
        timezone=timezone,
        database=database,
        clock=clock,
        clock_start=clock_start if clock == "simulated" else None,
        instance=instance,
    )


def _listen(value: object) -> tuple[str, int]:
    return parse_listen(as_str(value))


def build_http(t: Table) -> HttpConfig:
    host, port = t.get("listen", _listen, ("127.0.0.1", 9120))
    t.close()
    return HttpConfig(host=host, port=port)


def build_smtp(t: Table, base_dir: str) -> SmtpConfig | None:
    host, port = t.get("listen", _listen, ("127.0.0.1", 2525))
    accept = t.array("accept", as_email, required=True)
    if t.data.get("accept") == []:
        t.error("accept", "must list at least one address (RCPT TO anything else is refused)")
    max_bytes = t.get("max_message_bytes", as_int(1), 1048576)
    require_auth = t.get("require_auth", as_bool, False)
    users: list[SmtpUser] = []
    seen_users: dict[str, Table] = {}
    for u in t.tables("users"):
        name = u.get("name", as_nonempty, required=True)
        digest = u.get("password_sha256", as_hex64, required=True)
        u.close()
        if name is not None and name in seen_users:
            u.error("name", f"duplicate user {q(name)} (also at {seen_users[name].where('name')})")
        elif name is not None and digest is not None:
            seen_users[name] = u
            users.append(SmtpUser(name=name, password_sha256=digest))
    tls_cert = t.get("tls_cert", as_path(base_dir), "")
    tls_key = t.get("tls_key", as_path(base_dir), "")
    if bool(tls_cert) != bool(tls_key):
        t.error("tls_key" if tls_cert else "tls_cert", "tls_cert and tls_key go together")
    for key, file in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if file and not os.path.isfile(file):
            t.error(key, f"no such file: {file}")
        elif file and not os.access(file, os.R_OK):
            # check-config runs as the service user, so this is its view.
            t.error(key, f"not readable by this user: {file}")
    auth_require_tls = t.get("auth_require_tls", as_bool, True)
    if require_auth and not users:
        t.error("require_auth", "true needs at least one entry in users")
    if require_auth and auth_require_tls and not (tls_cert and tls_key):
        t.error(
            "require_auth",
            "clients could never authenticate: auth_require_tls = true needs "
            "tls_cert and tls_key (or set auth_require_tls = false on loopback)",
        )
    rate = t.get("rate_per_peer", as_rate)
    idle = t.get("idle_timeout", as_duration, timedelta(seconds=300))
    max_sessions = t.get("max_sessions", as_int(1), 500)
    t.close()
    if accept is None:
        return None
    return SmtpConfig(
        host=host,
        port=port,
        accept=accept,
        max_message_bytes=max_bytes,
        require_auth=require_auth,
        users=tuple(users),
        tls_cert=tls_cert,
        tls_key=tls_key,
        auth_require_tls=auth_require_tls,
        rate_per_peer=rate,
        idle_timeout=idle,
        max_sessions=max_sessions,
    )


def _mqtt_url(value: object) -> str:
    text = as_str(value)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{q(text)}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{q(text)}: missing host")
    try:
        parts.port  # noqa: B018 - urllib validates the port lazily, here
    except ValueError:
        raise ValueError(f"{q(text)}: invalid port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{q(text)}: no path, query or fragment expected")
    return text


def _topic_part(what: str, *, empty_ok: bool) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = as_str(value)
        if not text and not empty_ok:
            raise ValueError("must not be empty")
        if any(c in text for c in "+#\0"):
            raise ValueError(f"{q(text)}: MQTT wildcards (+ #) are not allowed in a {what}")
        if text.startswith("$") or text.startswith("/") or text.endswith("/"):
            raise ValueError(f"{q(text)}: must not start with $ or /, nor end with /")
        if what == "share group" and "/" in text:
            raise ValueError(f"{q(text)}: a share group cannot contain /")
        return text

    return parse


def _grace(value: object) -> timedelta:
    """A duration, or zero (`"0s"`: no grace) -- unlike other durations."""
    text = as_str(value)
    if re.fullmatch(r"0+[dhms]", text):
        return timedelta(0)
    return as_duration(text)


def build_mqtt(t: Table, instance: str) -> MqttConfig | None:
    url = t.get("url", _mqtt_url, required=True)
    client_id = t.get("client_id", as_nonempty, instance)
    prefix = t.get("topic_prefix", _topic_part("topic prefix", empty_ok=False), "express")
    proto_n = t.get("protocol", as_int(), 5)
    if proto_n not in (3, 5):
        t.error("protocol", f"must be 5 or 3 (MQTT 3.1.1), not {proto_n}")
    protocol: Literal[3, 5] = 3 if proto_n == 3 else 5
    share_group = t.get("share_group", _topic_part("share group", empty_ok=True), "")
    if share_group and protocol != 5:
        t.error("share_group", "shared subscriptions need protocol = 5")
    embedded = t.get("embedded_broker", as_bool, False)
    if embedded and protocol != 3:
        t.error("embedded_broker", "the embedded broker speaks only MQTT 3.1.1: set protocol = 3")
    if embedded and url is not None and url.startswith("mqtts:"):
        t.error("embedded_broker", "the embedded broker has no TLS: use an mqtt:// url")
    offline_grace = t.get("offline_grace", _grace, timedelta(0))
    t.close()
    if url is None:
        return None
    return MqttConfig(
        url=url,
        client_id=client_id,
        topic_prefix=prefix,
        protocol=protocol,
        share_group=share_group,
        embedded_broker=embedded,
        offline_grace=offline_grace,
    )


def _dial_number(value: object) -> str:
    text = as_str(value)
    if not text or any(c not in "0123456789*#+-" for c in text):
        raise ValueError(f"{q(text)} is not a phone number (digits, * # + -)")
    return text


def build_serial(tables: list[Table]) -> tuple[SerialConfig, ...]:
    out: list[SerialConfig] = []
    seen: dict[str, Table] = {}
    for t in tables:
        port = t.get("port", as_nonempty, required=True)
        baud = t.get("baud", as_int(1), 9600)
        numbers = t.array("numbers", _dial_number) or ()
        idle = t.get("idle_timeout", as_duration, timedelta(seconds=60))
        t.close()
        if port is None:
            continue
        if port in seen:
            t.error("port", f"port {q(port)} is already used at {seen[port].where('port')}")
            continue
        seen[port] = t
        out.append(SerialConfig(port=port, baud=baud, numbers=numbers, idle_timeout=idle))
    return tuple(out)


def _server(value: object) -> tuple[str, int]:
    return parse_hostport(as_str(value), 25)


def build_notify(t: Table) -> NotifyConfig | None:
    server = t.get("smtp", _server)
    sender = t.get("from", as_email)
    if server is not None and sender is None and not t.has("from"):
        t.error("from", "required when smtp is set (the notices' From: address)")
    backoff = t.get("max_backoff", as_duration, timedelta(minutes=10))
    t.close()
    return NotifyConfig(
        smtp_host=server[0] if server else None,
        smtp_port=server[1] if server else 25,
        sender=sender or "",
        max_backoff=backoff,
    )


def build_retention(t: Table) -> RetentionConfig:
    cfg = RetentionConfig(
        alarms=t.get("alarms", as_duration),
        raw=t.get("raw", as_duration),
        quarantine=t.get("quarantine", as_duration),
        quarantine_max_bytes=t.get("quarantine_max_bytes", as_int(1)),
        resolved_incidents=t.get("resolved_incidents", as_duration),
    )
    t.close()
    return cfg


def _hours(value: object) -> TimeRange:
    return parse_hours(as_str(value))


def _minutes(r: TimeRange) -> list[int]:
    end = r.end if r.end > r.start else r.end + 1440
    return [m % 1440 for m in range(r.start, end)]


def _fmt(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def build_tariff(parent: Table, tables: list[Table]) -> tuple[TariffBand, ...]:
    """Bands must neither overlap nor leave gaps: a fee is computed for any
    start time, so every minute of the day needs exactly one band."""
    bands: list[TariffBand] = []
    owner: dict[int, tuple[int, Table]] = {}
    for i, t in enumerate(tables):
        hours = t.get("hours", _hours, required=True)
        first = t.get("first_hour", as_int(0), required=True)
        per15 = t.get("per_15min", as_int(0), required=True)
        t.close()
        if hours is None:
            continue
        clash = next((m for m in _minutes(hours) if m in owner), None)
        if clash is not None:
            index, other = owner[clash]
            t.error(
                "hours",
                f"overlaps tariff[{index}] ({other.data.get('hours')}) from {_fmt(clash)}",
            )
            continue
        for m in _minutes(hours):
            owner[m] = (i, t)
        if first is not None and per15 is not None:
            bands.append(TariffBand(hours=hours, first_hour=first, per_15min=per15))
    if bands and len(owner) < 1440:
        gaps: list[str] = []
        m = 0
        while m < 1440:
            if m in owner:
                m += 1
                continue
            start = m
            while m < 1440 and m not in owner:
                m += 1
            gaps.append(f"{_fmt(start)}-{_fmt(m)}")
        parent.error(
            "tariff", f"bands leave {', '.join(gaps)} uncovered (every minute needs a band)"
        )
    return tuple(bands)
