"""Which config changes a SIGHUP reload cannot apply.

Contracts, devices, plans, calendars, tokens, notices, retention, SMTP
accept/auth/limits and `[mqtt] offline_grace` are read from the current
snapshot at each use, so a reload applies them.  What was bound when the
daemon started — the store, the clock, the sockets it listens on, the MQTT
session, the serial ports — stays as it was until a restart.  The daemon
names those keys when a reload changes them, so an operator is not left
believing a new listen address is in force.
"""

from __future__ import annotations

from dataclasses import fields

from monitor.model import Config, MqttConfig

# [mqtt] keys the heartbeat tracker reads live; the rest shape the session.
_MQTT_LIVE = {"offline_grace"}


def restart_only_changes(running: Config, new: Config) -> list[str]:
    """Key paths that differ between the config the daemon started with and
    `new`, and that take effect only at the next restart (in file order)."""
    changed: list[str] = []
    for key in ("database", "instance", "clock", "clock_start"):
        if getattr(running.daemon, key) != getattr(new.daemon, key):
            changed.append(f"daemon.{key}")
    if running.http != new.http:
        changed.append("http.listen")
    changed += _smtp(running, new)
    changed += _mqtt(running.mqtt, new.mqtt)
    if running.serial != new.serial:
        changed.append("serial")
    return changed


def _smtp(running: Config, new: Config) -> list[str]:
    old, cur = running.smtp, new.smtp
    if old is None or cur is None:
        return [] if old is cur else ["smtp"]
    out = []
    if (old.host, old.port) != (cur.host, cur.port):
        out.append("smtp.listen")
    for key in ("tls_cert", "tls_key"):
        if getattr(old, key) != getattr(cur, key):
            out.append(f"smtp.{key}")
    return out


def _mqtt(old: MqttConfig | None, cur: MqttConfig | None) -> list[str]:
    if old is None or cur is None:
        return [] if old is cur else ["mqtt"]
    return [
        f"mqtt.{f.name}"
        for f in fields(MqttConfig)
        if f.name not in _MQTT_LIVE and getattr(old, f.name) != getattr(cur, f.name)
    ]
