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
    """The subscriptions, one per kind; `$share/<group>/…` when shared.

    `status` is never shared: MQTT 5 sends no retained messages on a shared
    subscription, and the retained status (an agent's Last Will `offline`)
    is the state the broker replays on every subscribe.  Each instance gets
    every status; the first to store a change decides it, for the others it
    repeats the stored state and does nothing (monitor.heartbeats).
    """
    share = f"$share/{share_group}/" if share_group else ""
    return [f"{'' if kind == 'status' else share}{prefix}/{kind}/+" for kind in KINDS]


def subscriptions(prefix: str, share_group: str = "") -> list[tuple[str, int]]:
    """`topic_filters` with the QoS to subscribe each with.

    QoS 1 (acknowledged after the commit, queued in our session while we are
    away), except the unshared `status` of an instance in a share group:
    QoS 0, so the broker queues nothing for it while it is away.  Other
    instances stored those changes meanwhile; replayed later against the
    current state, an old `offline` would raise an AGENT-SILENT that is no
    longer true.  What it needs on its return is the current status, which
    the broker sends as the retained message on subscribe (and again after
    any reconnect, so a status lost to a crash before its commit comes back).
    """
    return [
        (topic, 0 if share_group and kind == "status" else 1)
        for kind, topic in zip(KINDS, topic_filters(prefix, share_group), strict=True)
    ]


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
