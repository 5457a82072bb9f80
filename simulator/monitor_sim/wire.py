"""A trace record → the bytes one channel sends (SPEC 3.2–3.5).

Well-formed reports use the daemon's own encoders (`encode_alarm`,
`build_express_mail`); malformed ones are damaged in the ways listed in
MALFORMED, each with the quarantine reason the daemon must give.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Final

from monitor.formats.alarm_json import encode_alarm
from monitor_sim import mails
from monitor_sim.trace import Record

# malformed kind → (channels it can travel on, the daemon's quarantine reason)
MALFORMED: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "not-json": (("http", "mqtt", "serial"), "invalid"),
    "missing-code": (("http", "mqtt", "serial", "smtp"), "invalid"),
    "bad-severity": (("http", "mqtt", "serial", "smtp"), "invalid"),
    "bad-signature": (("http", "mqtt", "serial", "smtp"), "bad-signature"),
    "topic-mismatch": (("mqtt",), "topic-mismatch"),
    "unrecognised": (("smtp",), "unrecognised"),
    "unknown-device": (("smtp",), "unknown-device"),
}


@dataclass(frozen=True, slots=True)
class Wire:
    """What to send: `target` is the HTTP path, the MQTT topic or the SMTP
    envelope sender; `payload` the body, MQTT payload, mail or frame payload."""

    channel: str
    target: str
    payload: bytes
    report_id: str  # what a serial ACK names


@dataclass(frozen=True, slots=True)
class Targets:
    """Channel settings a rendering needs (from the daemon config or flags)."""

    topic_prefix: str = "express"
    mail_to: str = "alarms@monitor.example"


def alarm_payload(rec: Record) -> bytes:
    return encode_alarm(mails.report_of(rec))


def redfish_payload(rec: Record) -> bytes:
    """A Redfish Event whose one record maps back to `rec` (SPEC 3.4)."""
    word = {"critical": "Critical", "warning": "Warning"}.get(rec.severity, "OK")
    event = {
        "MemberId": "0",
        "EventId": rec.id,
        "EventTimestamp": rec.occurred,
        "MessageId": f"SimVendorEvents.1.0.{rec.code}",
        "Message": rec.message,
        "MessageSeverity": word,
        "OriginOfCondition": {"@odata.id": f"/redfish/v1/Chassis/1/Sensors/{rec.component}"},
    }
    body = {
        "@odata.type": "#Event.v1_7_0.Event",
        "Id": rec.id,
        "Name": "Event Array",
        "Events": [event],
    }
    return json.dumps(body, ensure_ascii=False).encode()


def _damaged_alarm(rec: Record) -> bytes:
    obj = rec.alarm()
    kind = rec.malformed
    if kind == "not-json":
        text = json.dumps(obj, ensure_ascii=False)
        return text[: len(text) // 2].encode()  # cut mid-object, as a dropped line would
    if kind == "missing-code":
        del obj["code"]
    elif kind == "bad-severity":
        obj["severity"] = "urgent"
    elif kind == "bad-signature":
        obj["sig"] = "0" * 64
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sender_of(rec: Record, senders: tuple[str, ...] = ()) -> str:
    """The mail From: a configured sender of the device, else its agent's address."""
    if senders:
        return senders[0]
    return f"agent@{(rec.host or rec.serial).lower()}.example.jp"


def render(rec: Record, targets: Targets, senders: tuple[str, ...] = ()) -> Wire:
    ch = rec.channel
    if ch == "smtp":
        return Wire(ch, sender_of(rec, senders), _mail(rec, targets, senders), rec.id)
    if rec.malformed:
        payload = _damaged_alarm(rec)
    elif rec.format == "redfish":
        payload = redfish_payload(rec)
    else:
        payload = alarm_payload(rec)
    if ch == "http":
        path = f"/api/v1/redfish/{rec.serial}" if rec.format == "redfish" else "/api/v1/alarms"
        return Wire(ch, path, payload, rec.id)
    if ch == "mqtt":
        kind = "redfish" if rec.format == "redfish" else "alarm"
        serial = rec.serial + "X" if rec.malformed == "topic-mismatch" else rec.serial
        return Wire(ch, f"{targets.topic_prefix}/{kind}/{serial}", payload, rec.id)
    if ch == "serial":
        return Wire(ch, "", payload, rec.id)
    raise ValueError(f"unknown channel {ch!r}")


def _mail(rec: Record, targets: Targets, senders: tuple[str, ...]) -> bytes:
    sender, to = sender_of(rec, senders), targets.mail_to
    kind = rec.malformed
    if kind == "unrecognised":
        return mails.newsletter_mail(rec, sender, to)
    if kind in ("missing-code", "bad-severity"):
        return mails.json_mail(rec, sender, to, _damaged_alarm(rec))
    if kind == "bad-signature":
        return mails.express_mail(replace(rec, sig="0" * 64), sender, to)
    if rec.format == "express":
        return mails.express_mail(rec, sender, to)
    if rec.format == "json":
        return mails.json_mail(rec, sender, to, alarm_payload(rec))
    build = mails.VENDOR.get(rec.format)
    if build is None:
        raise ValueError(f"no mail builder for format {rec.format!r}")
    return build(rec, sender, to)
