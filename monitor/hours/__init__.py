"""The service-hours engine: windows, service time, SLA deadlines, coverage.

Pure functions of aware datetimes; nothing here reads a clock.  See
docs/service-hours.md for the semantics with worked examples.
"""

from __future__ import annotations

from monitor.hours.calendar import ClosedDays, public_holidays
from monitor.hours.coverage import contract_end, coverage
from monitor.hours.days import DAY_NAMES, format_days, is_consecutive, parse_days
from monitor.hours.lookup import schedule_for
from monitor.hours.schedule import HORIZON, NoServiceWindow, Schedule, Window

__all__ = [
    "DAY_NAMES",
    "HORIZON",
    "ClosedDays",
    "NoServiceWindow",
    "Schedule",
    "Window",
    "contract_end",
    "coverage",
    "format_days",
    "is_consecutive",
    "parse_days",
    "public_holidays",
    "schedule_for",
]
