"""What arrives over MQTT (SPEC 3.2), sans I/O: topics, heartbeats, status.

Alarms (3.1) and Redfish events have their own decoders in
`monitor.formats`; this module adds the topic binding and the two
agent-liveness payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from monitor.formats.alarm_json import MAX_SERIAL, Invalid

Kind = Literal["alarm", "heartbeat", "status", "redfish"]
KINDS: tuple[Kind, ...] = ("alarm", "heartbeat", "status", "redfish")

MAX_INTERVAL = 86400.0  # a day: beyond that "heartbeat" means nothing


def topic_filters(prefix: str, share_group: str = "") -> list[str]:
    """The subscriptions, one per kind; `$share/<group>/…` when shared."""
    share = f"$share/{share_group}/" if share_group else ""
    return [f"{share}{prefix}/{kind}/+" for kind in KINDS]


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    serial: str


def route(topic: str, prefix: str) -> Route | None:
    """`<prefix>/<kind>/<serial>` → Route; None for anything else."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    kind, sep, serial = topic[len(head) :].partition("/")
    if not sep or not serial or "/" in serial or len(serial) > MAX_SERIAL:
        return None
    for known in KINDS:
        if kind == known:
            return Route(known, serial)
    return None


class _HeartbeatWire(msgspec.Struct, forbid_unknown_fields=False):
    v: int
    serial: str
    interval: float
    sent: str | None = None


_heartbeat = msgspec.json.Decoder(_HeartbeatWire)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    serial: str
    interval: float
    sent: str


def decode_heartbeat(data: bytes) -> Heartbeat | Invalid:
    """`{"v":1,"serial":"…","sent":"…","interval":60}`; `sent` is optional
    and only informative (liveness follows the daemon's clock, not the
    agent's)."""
    try:
        wire = _heartbeat.decode(data)
    except msgspec.ValidationError as exc:
        return Invalid("invalid", f"heartbeat: {exc}")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Invalid("invalid", f"heartbeat is not JSON: {exc}")
    if wire.v != 1:
        return Invalid("invalid", f"heartbeat: unsupported version {wire.v}")
    if not wire.serial or len(wire.serial) > MAX_SERIAL:
        return Invalid("invalid", f"heartbeat: serial must be 1..{MAX_SERIAL} characters")
    # `not (a < x <= b)` also catches NaN.
    if not (0 < wire.interval <= MAX_INTERVAL):
        return Invalid("invalid", f"heartbeat: interval must be in (0, {MAX_INTERVAL:g}] s")
    return Heartbeat(wire.serial, float(wire.interval), wire.sent or "")


def decode_status(data: bytes) -> bool | Invalid | None:
    """`online` → True, `offline` → False (case and surrounding blanks
    ignored).  None for an empty payload: that is how an operator deletes a
    retained status (a decommissioned agent), not an agent talking.
    Anything else is invalid."""
    if not data:
        return None
    text = data.strip().lower()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    shown = data[:32].decode("utf-8", "replace")
    return Invalid("invalid", f"status must be online or offline, not {shown!r}")
