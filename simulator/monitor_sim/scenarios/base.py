"""What every scenario shares: a seeded context that makes records, and the
expectations computed from them.

Determinism: everything random comes from one `random.Random(seed)`, and
report ids are drawn from it too (no uuid4, no clock), so the same config,
scenario and seed give the same trace byte for byte.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from monitor.formats.alarm_json import sign
from monitor_sim import mails
from monitor_sim.oracle import Hours, coverage
from monitor_sim.simconfig import SimConfig, SimDevice
from monitor_sim.trace import Record

# Faults an agent reports: (component, code, severity, message).
FAULTS: tuple[tuple[str, str, str, str], ...] = (
    ("PSU1", "PSU-0003", "critical", "Power supply 1 failure detected"),
    ("PSU2", "PSU-0003", "critical", "Power supply 2 failure detected"),
    ("FAN1", "FAN-0001", "major", "Fan 1 stopped"),
    ("FAN3", "FAN-0002", "minor", "Fan 3 speed below threshold"),
    ("DIMM5", "MEM-0101", "warning", "メモリ訂正可能エラーがしきい値を超えました"),
    ("DISK2", "HDD-0040", "major", "Physical disk 2 predictive failure"),
    ("TEMP1", "TMP-0010", "warning", "Inlet temperature above warning threshold"),
    ("RAID0", "RAID-0200", "major", "論理ドライブ0が縮退状態になりました"),
)
BOUNDARY_MARGIN = 180.0  # seconds kept clear of window edges (clock-set jitter)


@dataclass
class Options:
    """Scenario knobs a CLI user may set."""

    start: date | None = None  # search for the scenario's start from this date
    devices: int = 0  # storm: rack size (0: the scenario's default)
    channels: tuple[str, ...] = ("http", "mqtt", "smtp", "serial")


@dataclass
class Ctx:
    config: SimConfig
    seed: int
    options: Options
    start: datetime = field(init=False)
    rng: random.Random = field(init=False)
    records: list[Record] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.start = datetime(2026, 1, 1, tzinfo=ZoneInfo(self.config.timezone))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    def at_local(self, day: date, hh: int, mm: int = 0) -> datetime:
        return datetime.combine(day, time(hh, mm), self.zone)

    def channel(self, weights: Mapping[str, float]) -> str:
        allowed = {k: v for k, v in weights.items() if k in self.options.channels}
        if not allowed:
            return self.options.channels[0]
        return self.rng.choices(list(allowed), weights=list(allowed.values()))[0]

    def new_id(self, prefix: str = "") -> str:
        text = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return f"{prefix}{text}" if prefix else text

    def device_of(self, serial: str) -> SimDevice:
        return self.config.device(serial) or SimDevice(serial=serial, model="SIM-1", host="")

    def hours_of(self, device: SimDevice) -> Hours | None:
        contract = self.config.contracts.get(device.contract)
        if contract is None or contract.plan not in self.config.plans:
            return None
        return Hours(self.config, contract)

    def clear_of_edges(self, device: SimDevice, at: float) -> float:
        """Move `at` off window edges, so a clock set a few ms late cannot
        flip the in-hours decision the expectations were computed with."""
        hours = self.hours_of(device)
        if hours is None:
            return at
        for _ in range(10):
            when = self.start + timedelta(seconds=at)
            local = when.astimezone(hours.zone).date()
            edges = [
                edge
                for day in (local - timedelta(days=1), local, local + timedelta(days=1))
                if (w := hours.window_of(day)) is not None
                for edge in w
            ]
            if all(abs((when - e).total_seconds()) >= BOUNDARY_MARGIN for e in edges):
                return at
            at += 2 * BOUNDARY_MARGIN
        return at

    def report(
        self,
        at: float,
        device: SimDevice,
        channel: str,
        fault: tuple[str, str, str, str],
        *,
        fmt: str = "json",
        severity: str | None = None,
        report_id: str | None = None,
        charset: str = "",
        malformed: str = "",
    ) -> Record:
        component, code, default_severity, message = fault
        when = self.start + timedelta(seconds=at)
        # The device noticed it a moment before sending.
        noticed = when - timedelta(seconds=self.rng.randint(0, 5))
        occurred = noticed.replace(microsecond=0).isoformat()
        rec = Record(
            at=round(at, 3),
            channel=channel,
            format=fmt,
            device=device.serial,
            id=report_id or self.new_id(),
            serial=device.serial,
            severity=severity or default_severity,
            code=code,
            message=message,
            component=component,
            model=device.model,
            host=device.host,
            occurred=occurred,
            malformed=malformed,
            charset=charset,
        )
        if device.secret and fmt in ("json", "express"):
            rec.sig = sign(mails.report_of(rec), device.secret)
        self.records.append(rec)
        return rec

    def resend(self, rec: Record, at: float, channel: str | None = None, fmt: str = "") -> Record:
        """The same report again (same id): a retransmission or, on another
        channel, an agent falling back after a lost acknowledgement."""
        ch = channel or rec.channel
        new_fmt = fmt or ("express" if ch == "smtp" and rec.format == "json" else rec.format)
        if ch != "smtp" and new_fmt == "express":
            new_fmt = "json"
        dup = replace(rec, at=round(at, 3), channel=ch, format=new_fmt, dup=True)
        self.records.append(dup)
        return dup


def next_weekday(day: date, weekday: int) -> date:
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def signed_ok(devices: Sequence[SimDevice]) -> list[SimDevice]:
    """Devices whose reports need no signature (vendor mails cannot carry one)."""
    return [d for d in devices if not d.secret]


def covered(ctx: Ctx, devices: Sequence[SimDevice], when: datetime) -> list[SimDevice]:
    return [d for d in devices if coverage(ctx.config, d, when) == "covered"]


def fleet(ctx: Ctx) -> list[SimDevice]:
    """The config's devices, or a few synthetic ones (unknown to the daemon:
    stored with coverage `unknown-device`, no incidents) when it has none."""
    if ctx.config.devices:
        return list(ctx.config.devices)
    return [SimDevice(f"SIM{i:07d}", "SIM-1", f"sim{i:02d}") for i in range(1, 9)]


def service_day(ctx: Ctx, day: date, weekday: int) -> date:
    """The first `weekday` on or after `day` that is no holiday (a plain
    working day, whatever the plans' calendars say)."""
    from monitor_sim.oracle import is_service_day
    from monitor_sim.simconfig import SimCalendar

    country = holiday_country(ctx)
    day = next_weekday(day, weekday)
    while not is_service_day(day, SimCalendar(holidays=country)):
        day += timedelta(days=7)
    return day


def holiday_country(ctx: Ctx) -> str:
    for cal in ctx.config.calendars.values():
        if cal.holidays:
            return cal.holidays
    return "JP"
