"""SMART: `smartctl --json` output of one disk (SATA/SAS/NVMe).

What counts as a fault, per disk (component = the device, `/dev/sda`):

| condition | code | severity |
|---|---|---|
| `smart_status.passed` false | FailedHealthCheck | critical |
| the device cannot be opened (exit bit 1) | FailedOpenDevice | major |
| an ATA attribute failing now (`when_failed: "now"`) | FailedAttribute | major |
| ATA 197 Current_Pending_Sector > 0 | CurrentPendingSector | major |
| ATA 198 Offline_Uncorrectable > 0 | OfflineUncorrectableSector | major |
| ATA 5 Reallocated_Sector_Ct > 0, SCSI grown defects > 0 | ReallocatedSector | warning |
| NVMe `critical_warning` spare, reliability, read-only, backup bits | CriticalWarning | see below |
| NVMe `media_errors` > 0 | MediaErrors | warning |
| temperature at/over the critical limit / the warning limit | Temperature | critical / warning |

NVMe CriticalWarning is critical for "reliability degraded" and "read-only",
else major.  Codes reuse smartd's failure-type names where smartd has one, so a fault
reads the same whether it came by smartd mail (SPEC 3.3) or from the agent.
Sector counts and media errors are counters: reported again when they grow.
Temperature limits come from the config (`temperature_warning`,
`temperature_critical`), else from the drive (ATA SCT `op_limit_max` /
`limit_max`, SCSI `drive_trip`; NVMe's own over-temperature warning bit).

smartctl's exit status is a bit mask: bits 3 and up describe the disk's
state, not a failure to run, so the JSON is read whatever they say.  Bit 0
(bad command line) or output that is not smartctl JSON is a collector error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor_agent.collectors.base import (
    CollectorError,
    CollectorSpec,
    Sample,
    TypeInfo,
    remember,
    require_output,
)
from monitor_agent.conditions import Finding, Observation, Snapshot

__all__ = ["INFO", "SmartCollector", "SmartStatus", "observe", "parse_smart"]

INFO = TypeInfo(
    command=None,  # which disk is the operator's choice
    path=None,
    interval=timedelta(minutes=10),
    options={"temperature_warning": "int", "temperature_critical": "int"},
)

_NVME_BITS = (
    (0x01, "available spare below threshold", "major"),
    (0x04, "reliability degraded", "critical"),
    (0x08, "media placed in read-only mode", "critical"),
    (0x10, "volatile memory backup failed", "major"),
    (0x20, "persistent memory region read-only", "major"),
)


@dataclass(frozen=True, slots=True)
class SmartStatus:
    """What one `smartctl --json` run says about one disk."""

    device: str
    model: str = ""
    protocol: str = ""  # ATA, NVMe, SCSI
    exit_status: int = 0
    errors: tuple[str, ...] = ()  # smartctl messages of severity "error"
    passed: bool | None = None
    temperature: int | None = None
    temp_warning: int | None = None  # limits the drive reports
    temp_critical: int | None = None
    reallocated: int | None = None
    pending: int | None = None
    offline_uncorrectable: int | None = None
    failing: tuple[str, ...] = ()  # ATA attributes failing now
    nvme_critical_warning: int | None = None
    nvme_media_errors: int | None = None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_smart(text: str, fallback_device: str = "") -> SmartStatus:
    """smartctl's JSON → SmartStatus.  Raises CollectorError if it is not that."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CollectorError(f"smartctl output is not JSON: {exc}") from None
    if not isinstance(data, dict) or "smartctl" not in data:
        raise CollectorError("not smartctl --json output (no `smartctl` object)")
    smartctl = _dict(data.get("smartctl"))
    device = _dict(data.get("device"))
    name = str(device.get("name") or device.get("info_name") or fallback_device or "disk")
    errors = tuple(
        str(m.get("string", ""))
        for m in smartctl.get("messages", []) or []
        if isinstance(m, dict) and m.get("severity") == "error"
    )
    status = _dict(data.get("smart_status"))
    passed = status.get("passed")
    temperature = _dict(data.get("temperature"))
    attrs: dict[int, dict[str, Any]] = {}
    table = _dict(data.get("ata_smart_attributes")).get("table", [])
    for row in table if isinstance(table, list) else []:
        if isinstance(row, dict) and _int(row.get("id")) is not None:
            attrs[int(row["id"])] = row

    def raw(attr_id: int) -> int | None:
        row = attrs.get(attr_id)
        return None if row is None else _int(_dict(row.get("raw")).get("value"))

    nvme = _dict(data.get("nvme_smart_health_information_log"))
    reallocated = raw(5)
    if reallocated is None:
        reallocated = _int(data.get("scsi_grown_defect_list"))
    current = _int(temperature.get("current"))
    if current is None:
        current = _int(nvme.get("temperature"))
    return SmartStatus(
        device=name,
        model=str(data.get("model_name") or data.get("scsi_model_name") or ""),
        protocol=str(device.get("protocol") or ""),
        exit_status=_int(smartctl.get("exit_status")) or 0,
        errors=errors,
        passed=passed if isinstance(passed, bool) else None,
        temperature=current,
        temp_warning=_int(temperature.get("op_limit_max")),
        temp_critical=_int(temperature.get("limit_max")) or _int(temperature.get("drive_trip")),
        reallocated=reallocated,
        pending=raw(197),
        offline_uncorrectable=raw(198),
        failing=tuple(
            str(row.get("name", f"attribute {i}"))
            for i, row in sorted(attrs.items())
            if row.get("when_failed") == "now"
        ),
        nvme_critical_warning=_int(nvme.get("critical_warning")),
        nvme_media_errors=_int(nvme.get("media_errors")),
    )


def observe(disk: SmartStatus, warning: int | None = None, critical: int | None = None) -> Snapshot:
    """The fault conditions of one disk (see the module doc)."""
    dev = disk.device
    label = f"{dev} ({disk.model})" if disk.model else dev
    out: list[Observation] = []

    def add(code: str, severity: str, message: str, level: int | None = None) -> None:
        out.append(Observation(f"{dev}:{code}", dev, code, severity, message, level))

    if disk.exit_status & 0x02 and disk.passed is None:
        why = disk.errors[0] if disk.errors else "device open failed"
        add("FailedOpenDevice", "major", f"{label}: cannot open the device: {why}")
    if disk.passed is False:
        add(
            "FailedHealthCheck", "critical", f"{label}: SMART overall-health self-assessment FAILED"
        )
    if disk.failing:
        add(
            "FailedAttribute",
            "major",
            f"{label}: SMART attribute failing now: " + ", ".join(disk.failing),
        )
    if disk.pending:
        add(
            "CurrentPendingSector",
            "major",
            f"{label}: {disk.pending} currently unreadable (pending) sectors",
            disk.pending,
        )
    if disk.offline_uncorrectable:
        add(
            "OfflineUncorrectableSector",
            "major",
            f"{label}: {disk.offline_uncorrectable} offline uncorrectable sectors",
            disk.offline_uncorrectable,
        )
    if disk.reallocated:
        add(
            "ReallocatedSector",
            "warning",
            f"{label}: {disk.reallocated} reallocated sectors",
            disk.reallocated,
        )
    if disk.nvme_critical_warning:
        flags = [(text, sev) for bit, text, sev in _NVME_BITS if disk.nvme_critical_warning & bit]
        if flags:
            severity = "critical" if any(s == "critical" for _, s in flags) else "major"
            add(
                "CriticalWarning",
                severity,
                f"{label}: NVMe critical warning 0x"
                f"{disk.nvme_critical_warning:02x}: " + ", ".join(t for t, _ in flags),
            )
    if disk.nvme_media_errors:
        add(
            "MediaErrors",
            "warning",
            f"{label}: {disk.nvme_media_errors} NVMe media and data integrity errors",
            disk.nvme_media_errors,
        )

    warn = warning if warning is not None else disk.temp_warning
    crit = critical if critical is not None else disk.temp_critical
    temp = disk.temperature
    nvme_hot = bool((disk.nvme_critical_warning or 0) & 0x02)
    if temp is not None and crit is not None and temp >= crit:
        add(
            "Temperature",
            "critical",
            f"{label}: temperature {temp} C at or over the critical limit {crit} C",
        )
    elif temp is not None and warn is not None and temp >= warn:
        add(
            "Temperature", "warning", f"{label}: temperature {temp} C at or over the limit {warn} C"
        )
    elif nvme_hot:
        add(
            "Temperature",
            "warning",
            f"{label}: temperature over the drive's threshold"
            + (f" ({temp} C)" if temp is not None else ""),
        )
    return Snapshot(tuple(out), frozenset({dev}))


def _device_argument(command: tuple[str, ...] | None) -> str:
    for arg in reversed(command or ()):
        if arg.startswith("/dev/"):
            return arg
    return ""


class SmartCollector:
    """`type = "smart"`: one disk's SMART conditions."""

    def __init__(self, spec: CollectorSpec, serial: str) -> None:
        self.spec = spec
        self.serial = serial
        self.fallback = _device_argument(spec.command) or spec.name

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        require_output(sample)
        disk = parse_smart(sample.text, self.fallback)
        if disk.exit_status & 0x01:
            raise CollectorError(
                "smartctl could not parse its command line: " + "; ".join(disk.errors)
            )
        opts = self.spec.options
        warning = opts.get("temperature_warning")
        critical = opts.get("temperature_critical")
        snapshot = observe(
            disk,
            warning if isinstance(warning, int) else None,
            critical if isinstance(critical, int) else None,
        )
        return remember("smart", self.serial, memory, snapshot, now, self.spec.min_severity)
