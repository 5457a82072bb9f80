"""IPMI System Event Log: `ipmitool sel elist` (or `sel list`) lines.

    1a4 | 08/21/2025 | 04:11:52 | Power Supply PS2 Status | Power Supply AC lost | Asserted
    320 | 10/12/2025 | 13:09:40 | Temperature CPU1 Temp | Upper Critical going high | Asserted
          | Reading 96 > Threshold 95 degrees C      (one line; wrapped here)
      3 |  Pre-Init  |0000000012| System Event #0x83 | Timestamp Clock Sync | Asserted
    1a4 | 08/21/2025 | 04:11:52 | Power Supply #0x51 | Power Supply AC lost | Asserted

Columns are `|`-separated (ipmitool's `ipmi_sel_print_std_entry`): record id
in hex, date, time (or `Pre-Init` and the BMC's raw counter before its clock
was set), sensor type and name (`sel list` prints `#0xNN` instead of the SDR
name), event description, direction, and for threshold events of `elist`
the reading.  OEM records and Linux kernel panic records have fewer columns.

The SEL carries no severity; it is derived from the description (FORMATS 5,
the usual reading of FreeIPMI's interpretation rules); a `Deasserted` fault
is its recovery (`clear`).  Each record is reported once: the memory keeps
the last record seen, and records after it are new.  If it is gone (the SEL
was cleared, ids start again) every record listed is new.  The very first
run only takes the baseline: years of old history are not news.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from monitor_agent.collectors.base import CollectorError, CollectorSpec, Sample, TypeInfo
from monitor_agent.conditions import Finding, at_least, report_id

__all__ = ["INFO", "SelCollector", "SelRecord", "new_records", "parse_sel", "severity_of"]

log = structlog.get_logger("monitor_agent.ipmi")

INFO = TypeInfo(
    command="ipmitool sel elist",
    path=None,
    interval=timedelta(seconds=60),
    options={"timezone": "zone"},
)

# ipmitool's sensor type names (ipmi_strings.c); the longest one that
# starts the sensor column is the type, the rest is the sensor's SDR name.
SENSOR_TYPES: tuple[str, ...] = tuple(
    sorted(
        (
            "Temperature",
            "Voltage",
            "Current",
            "Fan",
            "Physical Security",
            "Platform Security",
            "Processor",
            "Power Supply",
            "Power Unit",
            "Cooling Device",
            "Other",
            "Memory",
            "Drive Slot / Bay",
            "POST Memory Resize",
            "System Firmwares",
            "System Firmware Progress",
            "Event Logging Disabled",
            "Watchdog1",
            "Watchdog",
            "System Event",
            "Critical Interrupt",
            "Button",
            "Module / Board",
            "Microcontroller",
            "Add-in Card",
            "Chassis",
            "Chip Set",
            "Other FRU",
            "Cable / Interconnect",
            "Terminator",
            "System Boot Initiated",
            "Boot Error",
            "OS Boot",
            "OS Critical Stop",
            "Slot / Connector",
            "System ACPI Power State",
            "Watchdog2",
            "Platform Alert",
            "Entity Presence",
            "Monitor ASIC",
            "LAN",
            "Management Subsys Health",
            "Management Subsystem Health",
            "Battery",
            "Session Audit",
            "Version Change",
            "FRU State",
            "Unknown",
        ),
        key=len,
        reverse=True,
    )
)

# First match wins; order matters ("Non-critical" before "critical",
# "Uncorrectable" before "correctable").  Severities follow FORMATS 5.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), severity)
    for pattern, severity in (
        (r"fully redundant|redundancy regained|transition to ok", "clear"),
        (r"non-critical", "warning"),
        (r"predictive fail", "warning"),
        (r"logging limit", "warning"),  # Correctable ECC logging limit reached
        (r"redundancy lost|redundancy degraded|non-redundant", "minor"),
        (r"in critical array", "major"),
        (
            r"uncorrectable|non-recoverable|\bierr\b|thermal trip|machine check exception"
            r"|kernel panic|critical overtemperature|critical stop|\bfatal\b",
            "critical",
        ),
        (r"failure detected|\bfailed\b|\bfailure\b|\bfault\b", "critical"),
        (r"\bac lost\b", "critical"),
        (r"critical", "critical"),  # Lower/Upper Critical going low/high
        (
            r"correctable machine check|out-of-range|configuration error|config error"
            r"|throttl|degraded|disabled|device absent|device removed",
            "warning",
        ),
    )
)
_FAULTS = frozenset({"critical", "major", "minor", "warning"})

_HEX = re.compile(r"[0-9a-fA-F]+")
_SLUG = re.compile(r"[^A-Z0-9]+")
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")
_TIME = re.compile(r"(\d{1,2}):(\d\d):(\d\d)")
_DATE_FORMATS = ("%m/%d/%Y", "%m/%d/%y", "%Y-%m-%d", "%Y/%m/%d")


def severity_of(description: str, direction: str = "Asserted") -> str:
    """The severity of one SEL event (see _RULES)."""
    text = description.lower()
    severity = "info"
    for pattern, value in _RULES:
        if pattern.search(text):
            severity = value
            break
    if direction.lower() == "deasserted":
        if severity in _FAULTS:
            return "clear"  # the fault went away
        if severity == "clear":
            return "minor"  # "Fully Redundant" deasserted: redundancy is gone
        return "info"
    return severity


@dataclass(frozen=True, slots=True)
class SelRecord:
    record_id: str  # lower-case hex without padding, as the BMC numbers it
    date: str  # "08/21/2025"; "Pre-Init"; "" for records without a time
    time: str  # "04:11:52" (maybe with a zone); the raw counter for Pre-Init
    sensor_type: str  # "Power Supply"; "" when the type is not known
    sensor: str  # "PS2 Status", "#0x51", ""
    description: str
    direction: str  # "Asserted", "Deasserted" or ""
    extra: str = ""  # the reading of threshold events, "CPU 1 DIMM 2", OEM data
    kind: str = "standard"  # standard | oem | panic

    @property
    def pre_init(self) -> bool:
        return self.date.lower() == "pre-init"

    @property
    def signature(self) -> str:
        """What identifies this record in a later listing (ids alone are reused)."""
        return "|".join(
            (
                self.record_id,
                self.date,
                self.time,
                self.sensor_type,
                self.sensor,
                self.description,
                self.direction,
            )
        )

    @property
    def component(self) -> str:
        if self.kind == "panic":
            return "kernel"
        if self.sensor and not self.sensor.startswith("#"):
            return self.sensor
        # `sel list` (no SDR names): the type with the sensor number.
        return " ".join(p for p in (self.sensor_type, self.sensor) if p) or "SEL"

    @property
    def code(self) -> str:
        if self.kind == "panic":
            return "SEL-KERNEL-PANIC"
        slug = _SLUG.sub("-", self.description.upper()).strip("-")[:60].strip("-")
        return f"SEL-{slug}" if slug else "SEL-EVENT"

    @property
    def severity(self) -> str:
        if self.kind == "panic":
            return "critical"
        if self.kind == "oem":
            return "info"
        return severity_of(self.description, self.direction)

    @property
    def stamp(self) -> str:
        """The time part of the report id: as the BMC wrote it, zone-free."""
        if self.pre_init:
            return f"preinit{self.time}"
        when = self.naive_time()
        return when.strftime("%Y%m%dT%H%M%S") if when else "notime"

    def naive_time(self) -> datetime | None:
        if not self.date or self.pre_init:
            return None
        m = _TIME.match(self.time)
        if m is None:
            return None
        for fmt in _DATE_FORMATS:
            try:
                day = datetime.strptime(self.date, fmt)
            except ValueError:
                continue
            return day.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]))
        return None

    def occurred(self, zone: tzinfo | None) -> datetime | None:
        """The event time; `zone` None means the host's local zone.

        A zone printed after the time (some ipmitool builds) wins.
        """
        naive = self.naive_time()
        if naive is None:
            return None
        suffix = _TIME.sub("", self.time, count=1).strip()
        if suffix.upper() in ("UTC", "GMT", "Z"):
            return naive.replace(tzinfo=UTC)
        m = _OFFSET.fullmatch(suffix)
        if m is not None:
            minutes = int(m[2]) * 60 + int(m[3])
            sign = -1 if m[1] == "-" else 1
            return naive.replace(tzinfo=timezone(timedelta(minutes=sign * minutes)))
        if zone is None:
            return naive.astimezone()  # a naive datetime is taken as local time
        return naive.replace(tzinfo=zone)

    def message(self) -> str:
        head = " ".join(p for p in (self.sensor_type, self.sensor) if p)
        text = f"{head}: {self.description}" if head else self.description
        if self.direction:
            text += f" ({self.direction})"
        if self.extra:
            text += f"; {self.extra}"
        when = f"Pre-Init {self.time}" if self.pre_init else f"{self.date} {self.time}".strip()
        return f"{text} [SEL record {self.record_id}{', ' + when if when else ''}]"


def _split_sensor(column: str) -> tuple[str, str]:
    for name in SENSOR_TYPES:
        if column == name:
            return name, ""
        if column.startswith(name + " "):
            return name, column[len(name) + 1 :].strip()
    return "", column


def parse_line(line: str) -> SelRecord | None:
    """One listing line → a record; None for anything else (headers, noise)."""
    fields = [f.strip() for f in line.split("|")]
    if len(fields) < 2 or not _HEX.fullmatch(fields[0]):
        return None
    record_id = fields[0].lower().lstrip("0") or "0"
    if fields[1].lower().startswith("linux kernel panic"):
        return SelRecord(record_id, "", "", "", "", fields[1], "", "", "panic")
    if fields[1].startswith("OEM record"):
        # Non-timestamped OEM record: id | OEM record eX | data
        return SelRecord(record_id, "", "", "", "", fields[1], "", " ".join(fields[2:]), "oem")
    if len(fields) < 5:
        return None
    date, time, sensor_column = fields[1], fields[2], fields[3]
    if sensor_column.startswith("OEM record"):
        return SelRecord(
            record_id, date, time, "", "", sensor_column, "", " | ".join(fields[4:]), "oem"
        )
    sensor_type, sensor = _split_sensor(sensor_column)
    description = fields[4]
    direction = fields[5] if len(fields) > 5 else ""
    if direction not in ("Asserted", "Deasserted"):
        # An old or OEM build without the direction column.
        extra_fields = fields[5:]
        direction = ""
    else:
        extra_fields = fields[6:]
    extra = " | ".join(f for f in extra_fields if f)
    return SelRecord(record_id, date, time, sensor_type, sensor, description, direction, extra)


# ipmitool prints these instead of records; they are not errors.
_NOT_RECORDS = re.compile(r"^\s*(SEL has no entries|SEL Information|$)", re.IGNORECASE)


def parse_sel(text: str) -> list[SelRecord]:
    """Every record of a listing, in listing (= SEL) order.

    Raises CollectorError when there is text but none of it is a record:
    the command printed something else (an error, a different tool).
    """
    records: list[SelRecord] = []
    strange: list[str] = []
    for line in text.splitlines():
        record = parse_line(line)
        if record is not None:
            records.append(record)
        elif not _NOT_RECORDS.match(line):
            strange.append(line.strip())
    if strange and not records:
        raise CollectorError(f"not an ipmitool SEL listing: {strange[0][:120]!r}")
    return records


def new_records(
    records: list[SelRecord], memory: Mapping[str, Any]
) -> tuple[list[SelRecord], dict[str, Any], bool]:
    """The records after the last one seen, the memory to keep, and whether
    the SEL was cleared (the last record seen is gone)."""
    last = memory.get("last")
    started = bool(memory.get("started"))
    keep: dict[str, Any] = {
        "started": True,
        "last_id": records[-1].record_id if records else None,
        "last": records[-1].signature if records else None,
        "resets": int(memory.get("resets", 0)),
    }
    if not started:
        return [], keep, False  # first run: baseline only
    if last is None:
        return list(records), keep, False  # the SEL was empty
    for index in range(len(records) - 1, -1, -1):
        if records[index].signature == last:
            return records[index + 1 :], keep, False
    keep["resets"] += 1
    return list(records), keep, True


class SelCollector:
    """`[collectors.<name>] type = "ipmi"`: one report per new SEL record."""

    def __init__(self, spec: CollectorSpec, serial: str) -> None:
        self.spec = spec
        self.serial = serial
        zone = str(spec.options.get("timezone", "local"))
        self.zone: tzinfo | None = None if zone == "local" else ZoneInfo(zone)

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        if sample.status not in (None, 0):
            raise CollectorError(
                f"exit status {sample.status}: {sample.stderr.strip()[-200:] or 'no message'}"
            )
        records = parse_sel(sample.text)
        fresh, keep, cleared = new_records(records, memory)
        if cleared:
            log.info("sel cleared", collector=self.spec.name, records=len(records))
        findings = []
        for record in fresh:
            severity = record.severity
            if severity != "clear" and not at_least(severity, self.spec.min_severity):
                continue
            findings.append(
                Finding(
                    id=report_id("sel", self.serial, record.record_id, record.stamp),
                    component=record.component,
                    code=record.code,
                    severity=severity,
                    message=record.message(),
                    occurred=record.occurred(self.zone),
                )
            )
        return findings, keep
