"""What the simulator needs of a daemon config file, read on its own.

The simulator talks to the daemon only over the wire (SPEC 7), so it does
not import `monitor.config`: it reads the TOML itself with `tomllib`, follows
`include` globs the same way (relative to the including file), and keeps
only what traffic generation and expectations need — devices (serial,
model, host, secret, senders), contracts and their plans and calendars, and
the channel addresses.  Validation stays the daemon's job: a broken file is
refused there (`monitor check-config`); here, a missing key just means a
default.
"""

from __future__ import annotations

import glob
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class SimDevice:
    serial: str
    model: str = ""
    host: str = ""
    contract: str = ""
    secret: str = ""
    senders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SimCalendar:
    holidays: str = ""  # country code for the `holidays` package
    closed_annual: frozenset[tuple[int, int]] = frozenset()
    closed_dates: frozenset[date] = frozenset()
    open_dates: frozenset[date] = frozenset()


@dataclass(frozen=True, slots=True)
class SimPlan:
    days: frozenset[int]  # 0 = Monday
    start_min: int  # window start, minutes after local midnight
    end_min: int  # window end; <= start_min crosses midnight; 1440 = 24:00
    calendar: str  # a calendar name, or "none"


@dataclass(frozen=True, slots=True)
class SimContract:
    id: str
    plan: str
    days: frozenset[int] | None
    timezone: str
    start: date
    years: int
    registered: bool
    after_hours: str
    # Whether raising makes a notice row for the first contact: it has a
    # webhook, or an e-mail address and the config has [notify].
    notifies: bool = False


@dataclass(frozen=True, slots=True)
class SimConfig:
    timezone: str = "Asia/Tokyo"
    http: str = "127.0.0.1:9120"
    smtp: str | None = None
    smtp_accept: str = "alarms@monitor.example"
    mqtt: str | None = None
    topic_prefix: str = "express"
    serial_numbers: tuple[str, ...] = ()
    devices: tuple[SimDevice, ...] = ()
    contracts: dict[str, SimContract] = field(default_factory=dict)
    plans: dict[str, SimPlan] = field(default_factory=dict)
    calendars: dict[str, SimCalendar] = field(default_factory=dict)

    def device(self, serial: str) -> SimDevice | None:
        for d in self.devices:
            if d.serial == serial:
                return d
        return None


def parse_days(text: str) -> frozenset[int]:
    """`mon-fri` (a range, may wrap: `sat-wed`) or `mon,wed,fri`."""
    text = text.strip().lower()
    if "-" in text and "," not in text:
        a, b = (_WEEKDAYS.index(x.strip()[:3]) for x in text.split("-", 1))
        out = [a]
        while out[-1] != b:
            out.append((out[-1] + 1) % 7)
        return frozenset(out)
    return frozenset(_WEEKDAYS.index(x.strip()[:3]) for x in text.split(",") if x.strip())


def parse_hours(text: str) -> tuple[int, int]:
    a, b = text.split("-", 1)

    def minutes(hhmm: str) -> int:
        h, m = hhmm.strip().split(":")
        return int(h) * 60 + int(m)

    return minutes(a), minutes(b)


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key in ("contracts", "devices"):
        into.setdefault(key, []).extend(extra.get(key, []))
    for key in ("plans", "calendars"):
        into.setdefault(key, {}).update(extra.get(key, {}))


def _first_contact_notified(contacts: list[dict[str, Any]], notify: bool) -> bool:
    if not contacts:
        return False
    first = contacts[0]
    return bool(first.get("webhook")) or (bool(first.get("email")) and notify)


def _load_raw(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    for pattern in data.get("include", []):
        for name in sorted(glob.glob(str(path.parent / pattern))):
            _merge(data, _load_raw(Path(name)))
    return data


def load_sim_config(path: str | Path) -> SimConfig:
    raw = _load_raw(Path(path))
    daemon = raw.get("daemon", {})
    zone = str(daemon.get("timezone", "Asia/Tokyo"))
    calendars = {
        name: SimCalendar(
            holidays=str(c.get("holidays", "")),
            closed_annual=frozenset(
                (int(x[:2]), int(x[3:5])) for x in c.get("closed", []) if len(str(x)) == 5
            ),
            closed_dates=frozenset(
                date.fromisoformat(str(x)) for x in c.get("closed", []) if len(str(x)) == 10
            ),
            open_dates=frozenset(date.fromisoformat(str(x)) for x in c.get("open", [])),
        )
        for name, c in raw.get("calendars", {}).items()
    }
    plans = {}
    for name, p in raw.get("plans", {}).items():
        start, end = parse_hours(str(p.get("hours", "00:00-24:00")))
        plans[name] = SimPlan(
            days=parse_days(str(p.get("days", "mon-sun"))),
            start_min=start,
            end_min=end,
            calendar=str(p.get("calendar", "none")),
        )
    contracts = {
        str(c["id"]): SimContract(
            id=str(c["id"]),
            plan=str(c.get("plan", "")),
            days=parse_days(str(c["days"])) if c.get("days") else None,
            timezone=str(c.get("timezone", zone)),
            start=_date(c.get("start", "1970-01-01")),
            years=int(c.get("years", 1)),
            registered=bool(c.get("registered", False)),
            after_hours=str(c.get("after_hours", "defer")),
            notifies=_first_contact_notified(c.get("contacts", []), "notify" in raw),
        )
        for c in raw.get("contracts", [])
    }
    devices = tuple(
        SimDevice(
            serial=str(d["serial"]),
            model=str(d.get("model", "")),
            host=str(d.get("host", "")),
            contract=str(d.get("contract", "")),
            secret=str(d.get("secret") or ""),
            senders=tuple(str(s) for s in d.get("senders", [])),
        )
        for d in raw.get("devices", [])
    )
    smtp = raw.get("smtp")
    mqtt = raw.get("mqtt")
    accept = (smtp or {}).get("accept") or ["alarms@monitor.example"]
    numbers: list[str] = []
    for line in raw.get("serial", []):
        numbers.extend(str(n) for n in line.get("numbers", []))
    return SimConfig(
        timezone=zone,
        http=str(raw.get("http", {}).get("listen", "127.0.0.1:9120")),
        smtp=str(smtp["listen"]) if smtp and smtp.get("listen") else None,
        smtp_accept=str(accept[0]),
        mqtt=str(mqtt["url"]) if mqtt and mqtt.get("url") else None,
        topic_prefix=str((mqtt or {}).get("topic_prefix", "express")),
        serial_numbers=tuple(numbers),
        devices=devices,
        contracts=contracts,
        plans=plans,
        calendars=calendars,
    )
