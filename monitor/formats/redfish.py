"""DMTF Redfish Event payloads pushed by a BMC (SPEC 3.2/3.4, FORMATS.md §3).

Each `Events[]` record becomes one alarm for the serial the caller names (the
URL's or the MQTT topic's):

- severity: `MessageSeverity`, else `Severity` — Critical → critical,
  Warning → warning, OK → info (case-insensitive); anything else, or
  neither field, rejects that record (`invalid`);
- code: the last dotted part of `MessageId` (`…PowerSupplyFailed`);
- component: the last `/` segment of `OriginOfCondition`'s `@odata.id`
  (the field may also be the id string itself);
- message: `Message` (else the MessageId), cut at 8192 characters;
- occurred: `EventTimestamp` (kept as raw text when it has no offset);
- id: `EventId`, else the sha256 hex of `MessageId`, `EventTimestamp` and
  the OriginOfCondition id joined by `\n` (absent ones as "") — the dedupe key
  FORMATS.md §3.2 recommends, stable across a BMC's retries.

A body that is not a JSON object with an `Events` list is one `invalid`
reject; records are judged one by one, so one bad record does not lose the
others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from monitor.formats.mailtext import MAX_FIELD, MAX_MESSAGE, aware_iso, cap
from monitor.model import AlarmReport

_SEVERITY: dict[str, str] = {"critical": "critical", "warning": "warning", "ok": "info"}
_decoder = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class RedfishReject:
    """Why one record (or the whole payload) is not an alarm."""

    reason: str  # always "invalid" today
    detail: str


def parse_redfish(data: bytes, serial: str) -> list[AlarmReport | RedfishReject]:
    """A Redfish Event payload → one alarm or reject per record, in order."""
    try:
        payload = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        return [RedfishReject("invalid", f"not JSON: {exc}")]
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for bad UTF-8 in a string.
        return [RedfishReject("invalid", "JSON is not UTF-8")]
    if not isinstance(payload, dict):
        return [RedfishReject("invalid", "payload is not a JSON object")]
    events = payload.get("Events")
    if not isinstance(events, list):
        return [RedfishReject("invalid", "no Events list")]
    return [_event(i, record, serial) for i, record in enumerate(events)]


def _event(index: int, record: object, serial: str) -> AlarmReport | RedfishReject:
    def reject(detail: str) -> RedfishReject:
        return RedfishReject("invalid", f"Events[{index}]: {detail}")

    if not isinstance(record, dict):
        return reject("not an object")
    strings: dict[str, str] = {}
    for name in ("MessageSeverity", "Severity", "MessageId", "Message", "EventTimestamp"):
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return reject(f"{name} is not a string")
        strings[name] = value

    level = strings.get("MessageSeverity", strings.get("Severity"))
    if level is None:
        return reject("no MessageSeverity or Severity")
    severity = _SEVERITY.get(level.strip().lower())
    if severity is None:
        return reject(f"unknown severity {level[:32]!r}")

    message_id = strings.get("MessageId", "")
    code = message_id.rsplit(".", 1)[-1].strip()
    if not code:
        return reject("no MessageId")
    if len(code) > MAX_FIELD:
        return reject("MessageId key over 256 characters")

    origin = record.get("OriginOfCondition")
    if isinstance(origin, dict):
        origin = origin.get("@odata.id", "")
    if origin is None:
        origin = ""
    if not isinstance(origin, str):
        return reject("OriginOfCondition has no string @odata.id")
    component = origin.rstrip("/").rsplit("/", 1)[-1]

    stamp = strings.get("EventTimestamp", "")
    event_id = record.get("EventId")
    if isinstance(event_id, (str, int)) and not isinstance(event_id, bool) and str(event_id):
        report_id = str(event_id)
    else:
        key = "\n".join((message_id, stamp, origin))
        report_id = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    if len(report_id) > MAX_FIELD:
        return reject("EventId over 256 characters")

    return AlarmReport(
        id=report_id,
        serial=serial,
        severity=severity,
        code=code,
        message=cap(strings.get("Message") or message_id, MAX_MESSAGE),
        occurred=aware_iso(stamp) if stamp else None,
        occurred_raw=stamp,
        component=cap(component),
    )
