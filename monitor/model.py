"""Domain objects shared by every part of the daemon.

Configuration objects are frozen dataclasses built once by `monitor.config`
and swapped atomically on SIGHUP; nothing mutates them.  Times are always
timezone-aware; local times of day are kept as minutes after midnight so the
hours engine can do integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Literal

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

Role = Literal["admin", "staff", "agent", "customer"]
ROLES: tuple[Role, ...] = ("admin", "staff", "agent", "customer")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Local clock range `[start, end)` in minutes after midnight.

    `end <= start` means the range crosses midnight (`"21:00-08:30"` is
    start=1260, end=510).  `"00:00-24:00"` is start=0, end=1440.
    """

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    @property
    def minutes(self) -> int:
        return self.end - self.start if self.end > self.start else self.end + 1440 - self.start


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    name: str
    holidays: str  # country code for the `holidays` package, "" for none
    closed_annual: frozenset[tuple[int, int]]  # (month, day) closed every year
    closed_dates: frozenset[date]  # YYYY-MM-DD closed
    open_dates: frozenset[date]  # YYYY-MM-DD open despite holidays/closed


@dataclass(frozen=True, slots=True)
class PlanSpec:
    name: str
    days: frozenset[int]  # weekdays with a window, 0 = Monday
    consecutive: int | None  # contracts overriding `days` must pick exactly N consecutive
    hours: TimeRange
    calendar: str  # a key of Config.calendars, or "none"
    response: timedelta | None  # service time to respond; None when response_nbd
    response_nbd: bool = False


@dataclass(frozen=True, slots=True)
class TariffBand:
    hours: TimeRange
    first_hour: int
    per_15min: int


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    email: str | None = None
    webhook: str | None = None


AfterHours = Literal["defer", "notify-critical"]


@dataclass(frozen=True, slots=True)
class Contract:
    id: str
    customer: str
    plan: str
    days: frozenset[int] | None  # override of the plan's days
    timezone: str  # resolved: the contract's own, else [daemon] timezone
    start: date
    years: int
    registered: bool
    after_hours: AfterHours
    ack_timeout: timedelta
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class Device:
    serial: str
    model: str
    host: str
    contract: str
    secret: str | None = None
    senders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiToken:
    token_sha256: str  # lower-case hex
    role: Role
    contracts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    timezone: str
    database: str  # absolute SQLite path, or a postgresql:// URL
    clock: Literal["system", "simulated"]
    clock_start: datetime | None
    instance: str


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SmtpUser:
    name: str
    password_sha256: str


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    accept: tuple[str, ...]
    max_message_bytes: int = 1048576
    require_auth: bool = False
    users: tuple[SmtpUser, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    auth_require_tls: bool = True
    rate_per_peer: float | None = None  # messages per second; None = no limit
    idle_timeout: timedelta = timedelta(seconds=300)
    max_sessions: int = 500


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str
    client_id: str
    topic_prefix: str = "express"
    protocol: Literal[3, 5] = 5
    share_group: str = ""
    embedded_broker: bool = False
    # An `offline` status makes the agent silent only if still offline this
    # long after it arrived (0: at once, SPEC 3.2 as written).
    offline_grace: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class SerialConfig:
    port: str
    baud: int = 9600
    numbers: tuple[str, ...] = ()
    idle_timeout: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    smtp_host: str | None
    smtp_port: int
    sender: str  # `from`
    max_backoff: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    alarms: timedelta | None = None
    raw: timedelta | None = None
    quarantine: timedelta | None = None
    quarantine_max_bytes: int | None = None
    resolved_incidents: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: str  # the main file, absolute
    daemon: DaemonConfig
    http: HttpConfig
    smtp: SmtpConfig | None = None
    mqtt: MqttConfig | None = None
    serial: tuple[SerialConfig, ...] = ()
    notify: NotifyConfig | None = None
    retention: RetentionConfig | None = None
    tariff: tuple[TariffBand, ...] = ()
    calendars: dict[str, CalendarSpec] = field(default_factory=dict)
    plans: dict[str, PlanSpec] = field(default_factory=dict)
    contracts: dict[str, Contract] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)  # by serial
    tokens: tuple[ApiToken, ...] = ()

    def summary(self) -> str:
        return (
            f"ok: {len(self.plans)} plans, {len(self.contracts)} contracts, "
            f"{len(self.devices)} devices, {len(self.calendars)} calendars"
        )


# --------------------------------------------------------------------------
# Runtime objects
# --------------------------------------------------------------------------

SEVERITIES: tuple[str, ...] = ("critical", "major", "minor", "warning", "info", "clear")
# Rank for "highest severity kept": lower index is more severe.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


class Coverage(StrEnum):
    COVERED = "covered"
    UNKNOWN_DEVICE = "unknown-device"
    UNREGISTERED = "unregistered"
    NOT_STARTED = "not-started"
    EXPIRED = "expired"


class IncidentState(StrEnum):
    DEFERRED = "deferred"
    OPEN = "open"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlarmReport:
    """One report in the schema of SPEC 3.1, already validated."""

    id: str
    serial: str
    severity: str
    code: str
    message: str
    model: str = ""
    host: str = ""
    occurred: datetime | None = None
    occurred_raw: str = ""  # exactly as sent: the signature covers this text
    component: str = ""
    sig: str = ""


@dataclass(frozen=True, slots=True)
class Received:
    """A report plus where and how it came in: what `pipeline.accept` takes."""

    report: AlarmReport
    channel: str  # smtp | mqtt | serial | http | internal
    format: str  # json | express | esmpro | hp | ilo | idrac | smartd | mdadm | redfish | ...
    raw: bytes
    peer: str = ""
    signed_ok: bool = False  # set by the caller when it verified the signature itself


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bad input: what `pipeline.reject` takes and quarantines."""

    channel: str
    reason: str
    raw: bytes
    peer: str = ""
