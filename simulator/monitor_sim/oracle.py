"""An independent model of coverage and service windows, for expectations.

Scenarios state what the daemon should do (this alarm deferred until
Tuesday 08:30, that one raised at once).  Computing that with the daemon's
own `monitor.hours` would make the replay check agree with whatever the
daemon does, bugs included; so this is a second, deliberately plain
implementation of SPEC 4.2 and 4.4 (windows per local day, closed days
have none, a window belongs to the day it starts).  It covers what
scenarios use: in-hours tests and the next window start.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from monitor_sim.simconfig import SimCalendar, SimConfig, SimContract, SimDevice


@lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> frozenset[date]:
    if not country:
        return frozenset()
    return frozenset(holidays_lib.country_holidays(country, years=year).keys())


def is_service_day(day: date, calendar: SimCalendar | None) -> bool:
    if calendar is None:
        return True
    if day in calendar.open_dates:
        return True
    if day in _holidays(calendar.holidays, day.year):
        return False
    return (day.month, day.day) not in calendar.closed_annual and day not in calendar.closed_dates


class Hours:
    """Service windows of one contract."""

    def __init__(self, config: SimConfig, contract: SimContract) -> None:
        plan = config.plans[contract.plan]
        self.zone = ZoneInfo(contract.timezone)
        self.days = contract.days if contract.days is not None else plan.days
        self.start_min = plan.start_min
        self.end_min = plan.end_min
        self.calendar = None if plan.calendar == "none" else config.calendars.get(plan.calendar)

    def window_of(self, day: date) -> tuple[datetime, datetime] | None:
        """The window that starts on local `day`, if that day has one."""
        if day.weekday() not in self.days or not is_service_day(day, self.calendar):
            return None
        start = datetime.combine(day, time(), self.zone) + timedelta(minutes=self.start_min)
        length = self.end_min - self.start_min
        if length <= 0:
            length += 1440
        # Local wall-clock arithmetic, then re-attach the zone (no DST in Japan;
        # elsewhere a window is as long as its wall-clock hours say).
        end = (start.replace(tzinfo=None) + timedelta(minutes=length)).replace(tzinfo=self.zone)
        return start, end

    def in_hours(self, when: datetime) -> bool:
        local = when.astimezone(self.zone).date()
        for day in (local - timedelta(days=1), local):
            w = self.window_of(day)
            if w is not None and w[0] <= when < w[1]:
                return True
        return False

    def next_start(self, when: datetime, horizon_days: int = 400) -> datetime | None:
        """The first window start after `when`, skipping starts that merely
        continue a window open at that moment (touching windows are one)."""
        local = when.astimezone(self.zone).date()
        for offset in range(horizon_days):
            w = self.window_of(local + timedelta(days=offset))
            if w is None or w[0] <= when:
                continue
            if self.in_hours(w[0] - timedelta(microseconds=1)):
                continue  # touches the previous window: not a new start
            return w[0]
        return None


def coverage(config: SimConfig, device: SimDevice | None, when: datetime) -> str:
    """SPEC 4.2, in its order."""
    if device is None:
        return "unknown-device"
    contract = config.contracts.get(device.contract)
    if contract is None or not contract.registered:
        return "unregistered"
    local = when.astimezone(ZoneInfo(contract.timezone)).date()
    if local < contract.start:
        return "not-started"
    try:
        end = contract.start.replace(year=contract.start.year + contract.years)
    except ValueError:  # Feb 29 + N years: Mar 1
        end = date(contract.start.year + contract.years, 3, 1)
    return "covered" if local < end else "expired"
