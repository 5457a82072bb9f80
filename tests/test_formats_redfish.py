"""Redfish Event payloads → alarms (SPEC 3.4), on FORMATS.md §3.3's samples."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from monitor.formats.redfish import RedfishReject, parse_redfish
from monitor.model import AlarmReport

MODERN = b"""{
  "@odata.type": "#Event.v1_7_0.Event", "Id": "9f1c", "Name": "Event Array",
  "Context": "alarmd-tok-1b7e",
  "Events": [{
      "MemberId": "0", "EventId": "41877", "EventTimestamp": "2025-07-14T02:33:10+00:00",
      "MessageId": "ExampleVendorEvents.2.1.PowerSupplyFailed", "MessageArgs": ["PSU2"],
      "Message": "Power supply PSU2 has failed.", "MessageSeverity": "Critical",
      "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Power#/PowerSupplies/1"}}]
}"""

LEGACY = b"""{
  "@odata.type": "#Event.v1_0_2.Event", "Id": "1", "Name": "Events",
  "Events": [
    {"MemberId": "1", "EventType": "Alert", "EventId": "3316",
     "EventTimestamp": "2025-02-01T10:00:04Z", "Severity": "Warning",
     "Message": "Fan 3 speed is below the lower threshold.",
     "MessageId": "ExampleOEM.1.0.FanSpeedLow", "MessageArgs": ["Fan 3"],
     "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Thermal"},
     "Context": "rack-12"},
    {"MemberId": "2", "EventType": "StatusChange", "EventId": "3317",
     "EventTimestamp": "2025-02-01T10:00:05Z", "Severity": "OK",
     "Message": "The resource changed state.", "MessageId": "ResourceEvent.1.0.ResourceChanged",
     "OriginOfCondition": {"@odata.id": "/redfish/v1/Systems/1"}}
  ]
}"""

MEMORY = (
    b'{"@odata.type":"#Event.v1_4_1.Event","Id":"e-77","Name":"Event","Context":"db-cluster",'
    b'"Events":[{"MemberId":"0","EventId":"88001","EventGroupId":512,'
    b'"EventTimestamp":"2025-09-30T21:47:00+02:00",'
    b'"MessageId":"ExampleVendorEvents.1.3.MemoryUncorrectable",'
    b'"MessageArgs":["CPU2_DIMM_B1"],"Message":"Uncorrectable ECC error on CPU2_DIMM_B1.",'
    b'"MessageSeverity":"Critical",'
    b'"OriginOfCondition":{"@odata.id":"/redfish/v1/Systems/1/Memory/CPU2_DIMM_B1"}}]}'
)


def reports(data: bytes) -> list[AlarmReport]:
    out = parse_redfish(data, "JPN0012345")
    assert all(isinstance(r, AlarmReport) for r in out), out
    return [r for r in out if isinstance(r, AlarmReport)]


def payload(**event: object) -> bytes:
    return json.dumps({"Events": [event]}).encode()


def test_modern_sample() -> None:
    (r,) = reports(MODERN)
    assert (r.id, r.serial, r.severity, r.code, r.component) == (
        "41877",
        "JPN0012345",
        "critical",
        "PowerSupplyFailed",
        "1",  # the last segment of the @odata.id, as SPEC 3.4 says
    )
    assert r.message == "Power supply PSU2 has failed."
    assert r.occurred == datetime(2025, 7, 14, 2, 33, 10, tzinfo=UTC)
    assert r.occurred_raw == "2025-07-14T02:33:10+00:00"


def test_legacy_sample_two_events() -> None:
    first, second = reports(LEGACY)
    assert (first.severity, first.code, first.component, first.id) == (
        "warning",
        "FanSpeedLow",
        "Thermal",
        "3316",
    )
    assert (second.severity, second.code, second.component) == ("info", "ResourceChanged", "1")


def test_memory_sample() -> None:
    (r,) = reports(MEMORY)
    assert (r.component, r.severity) == ("CPU2_DIMM_B1", "critical")
    assert r.occurred == datetime(2025, 9, 30, 21, 47, tzinfo=timezone(timedelta(hours=2)))


def test_message_severity_wins_over_severity() -> None:
    (r,) = reports(payload(MessageSeverity="OK", Severity="Critical", MessageId="A.1.0.K"))
    assert r.severity == "info"


def test_id_fallback_is_a_digest_of_the_dedupe_key() -> None:
    origin = "/redfish/v1/Chassis/1"
    (r,) = reports(
        payload(
            MessageSeverity="Warning",
            MessageId="A.1.0.K",
            EventTimestamp="2025-01-01T00:00:00Z",
            OriginOfCondition=origin,  # the string form
        )
    )
    key = "A.1.0.K\n2025-01-01T00:00:00Z\n" + origin
    assert r.id == hashlib.sha256(key.encode()).hexdigest()
    assert r.component == "1"
    (bare,) = reports(payload(MessageSeverity="Warning", MessageId="K"))
    assert bare.id == hashlib.sha256(b"K\n\n").hexdigest()
    assert (bare.code, bare.component, bare.message, bare.occurred) == ("K", "", "K", None)


def test_numeric_event_id_and_naive_timestamp() -> None:
    (r,) = reports(
        payload(MessageSeverity="critical", MessageId="A.K", EventId=7, EventTimestamp="2025-01-01")
    )
    assert r.id == "7"
    assert r.occurred is None and r.occurred_raw == "2025-01-01"


@pytest.mark.parametrize(
    "event",
    [
        {"MessageId": "A.1.0.K"},  # no severity at all
        {"MessageSeverity": "Informational", "MessageId": "A.1.0.K"},
        {"MessageSeverity": "Critical"},  # no MessageId
        {"MessageSeverity": "Critical", "MessageId": "A.1.0."},  # empty key
        {"MessageSeverity": 3, "MessageId": "A.1.0.K"},
        {"MessageSeverity": "Critical", "MessageId": "A.K", "OriginOfCondition": 5},
        {"MessageSeverity": "Critical", "MessageId": "A.K", "OriginOfCondition": {"@odata.id": 5}},
        {"MessageSeverity": "Critical", "MessageId": "A.K", "Message": ["x"]},
    ],
)
def test_bad_event_is_rejected_alone(event: dict[str, object]) -> None:
    good = {"MessageSeverity": "OK", "MessageId": "A.1.0.Good"}
    out = parse_redfish(json.dumps({"Events": [good, event, good]}).encode(), "S")
    assert isinstance(out[0], AlarmReport) and isinstance(out[2], AlarmReport)
    assert isinstance(out[1], RedfishReject) and out[1].reason == "invalid"
    assert out[1].detail.startswith("Events[1]:")


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'"Events"', b'{"Events": {}}', b'{"events": []}', b"\xff\xfe"],
)
def test_bad_payload_is_one_reject(data: bytes) -> None:
    out = parse_redfish(data, "S")
    assert len(out) == 1 and isinstance(out[0], RedfishReject) and out[0].reason == "invalid"


def test_empty_events_and_non_object_event() -> None:
    assert parse_redfish(b'{"Events": []}', "S") == []
    (r,) = parse_redfish(b'{"Events": [42]}', "S")
    assert isinstance(r, RedfishReject)


def test_long_message_is_cut() -> None:
    (r,) = reports(payload(MessageSeverity="OK", MessageId="A.K", Message="x" * 9000))
    assert len(r.message) == 8192


def test_bad_utf8_inside_a_string() -> None:
    (r,) = parse_redfish(b'{"Events": [{"Message": "\x80"}]}', "S")
    assert isinstance(r, RedfishReject) and r.reason == "invalid"
