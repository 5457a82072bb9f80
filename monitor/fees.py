"""Off-contract work fees from the `[[tariff]]` bands (SPEC 4.7).

The first hour costs the `first_hour` of the band in which work starts; each
further *started* 15 minutes costs the `per_15min` of the band in which that
quarter-hour starts (NEC's 料金表: 出勤から1時間迄 + 15分毎に加算, and "work
that runs into the next band pays that band's rate").  Bands are local clock
ranges of the contract's zone and may cross midnight (`"21:00-08:30"`).
Quarter-hours are measured in real elapsed time, so on a DST night a job of
two hours still has four further quarters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.model import TariffBand, TimeRange

__all__ = ["Fee", "FeeItem", "TariffError", "after_hours_estimate", "band_at", "fee"]

_QUARTER = timedelta(minutes=15)
_HOUR = timedelta(hours=1)


class TariffError(ValueError):
    """No tariff, or no band covers a time of day work falls on."""


@dataclass(frozen=True, slots=True)
class FeeItem:
    description: str  # e.g. "first hour (08:30-17:30)", "3 x 15 min at 3000 (17:30-21:00)"
    start: datetime  # when the charged period starts, in the tariff's zone
    amount: int  # yen for the whole line


@dataclass(frozen=True, slots=True)
class Fee:
    items: tuple[FeeItem, ...]
    total: int


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _label(hours: TimeRange) -> str:
    return f"{_hhmm(hours.start)}-{_hhmm(hours.end)}"


def _contains(hours: TimeRange, second: int) -> bool:
    start, end = hours.start * 60, hours.end * 60
    if end > start:
        return start <= second < end
    return second >= start or second < end  # crosses midnight


def band_at(bands: tuple[TariffBand, ...], local: datetime) -> TariffBand:
    """The band whose local range holds `local`'s time of day (the first
    listed wins if bands overlap)."""
    second = local.hour * 3600 + local.minute * 60 + local.second
    for band in bands:
        if _contains(band.hours, second):
            return band
    raise TariffError(f"no tariff band covers {local.strftime('%H:%M')}")


def fee(bands: tuple[TariffBand, ...], tz: str, start: datetime, minutes: int) -> Fee:
    """Itemised fee for `minutes` of work beginning at `start` (aware).

    Consecutive quarter-hours in the same band are one line.  `minutes` must
    be positive; anything up to 60 is the first hour alone.
    """
    if not bands:
        raise TariffError("no [[tariff]] bands configured")
    if start.tzinfo is None:
        raise ValueError("fee needs an aware start time")
    if minutes <= 0:
        raise ValueError(f"minutes must be positive, not {minutes}")
    zone = ZoneInfo(tz)
    # Step in UTC: aware + timedelta on a zoned datetime is wall-clock
    # arithmetic in Python, which would be wrong across a DST change.
    begin = start.astimezone(zone)
    first = band_at(bands, begin)
    items = [FeeItem(f"first hour ({_label(first.hours)})", begin, first.first_hour)]
    quarters = -(-(minutes - 60) // 15) if minutes > 60 else 0
    utc0 = begin.astimezone(UTC) + _HOUR
    runs: list[tuple[TariffBand, datetime, int]] = []  # band, first quarter, count
    for q in range(quarters):
        at = (utc0 + q * _QUARTER).astimezone(zone)
        band = band_at(bands, at)
        if runs and runs[-1][0] is band:
            runs[-1] = (band, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((band, at, 1))
    items.extend(
        FeeItem(f"{n} x 15 min at {b.per_15min} ({_label(b.hours)})", at, n * b.per_15min)
        for b, at, n in runs
    )
    return Fee(tuple(items), sum(item.amount for item in items))


def after_hours_estimate(bands: tuple[TariffBand, ...], tz: str, at: datetime) -> int | None:
    """Fee for one hour of work starting at `at` (the after-hours notice's
    `fee_estimate`); None when no tariff is configured."""
    if not bands:
        return None
    return fee(bands, tz, at, 60).total
