"""Is a device covered by its contract at an instant? (SPEC 4.2)"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from monitor.model import Contract, Coverage, Device

__all__ = ["contract_end", "coverage"]


def contract_end(start: date, years: int) -> date:
    """First local date *not* covered: `start` + `years`.

    Feb 29 + N years lands on Mar 1 when the target year has no Feb 29 (a
    contract bought on a leap day runs its full N years, never one day short).
    """
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # Feb 29 -> a common year
        return date(start.year + years, 3, 1)


def coverage(device: Device | None, contract: Contract | None, at: datetime) -> Coverage:
    """Checked in SPEC order: unknown-device, unregistered, not-started,
    expired, else covered.  Dates are local dates in the contract's zone.

    A configured device whose contract is missing (config validation should
    make that impossible) is `unregistered`: nobody registered it for service.
    """
    if at.tzinfo is None:
        raise ValueError("coverage needs an aware datetime")
    if device is None:
        return Coverage.UNKNOWN_DEVICE
    if contract is None or not contract.registered:
        return Coverage.UNREGISTERED
    today = at.astimezone(ZoneInfo(contract.timezone)).date()
    if today < contract.start:
        return Coverage.NOT_STARTED
    if today >= contract_end(contract.start, contract.years):
        return Coverage.EXPIRED
    return Coverage.COVERED
