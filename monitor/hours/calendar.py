"""Closed days: public holidays plus a calendar's own closures.

The `holidays` package builds a whole year of dates on first use and its
`date in obj` goes through string parsing and lazy expansion, far too slow for
the hot path.  We ask it once per (country, year) and keep a frozenset.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays

from monitor.model import CalendarSpec

__all__ = ["ClosedDays", "public_holidays"]


@lru_cache(maxsize=512)
def public_holidays(code: str, year: int) -> frozenset[date]:
    """Public holidays of `code` in `year` ("" = none).

    `code` is a country code of the `holidays` package ("JP"), optionally with
    a subdivision ("DE-BY", "US-CA").  For Japan this includes substitute
    holidays (振替休日) and citizens' holidays (国民の休日).  Years outside
    the package's range for the country give an empty set; an unknown code
    raises ValueError.
    """
    if not code:
        return frozenset()
    country, _, subdiv = code.partition("-")
    try:
        table = holidays.country_holidays(country, subdiv=subdiv or None, years=year)
    except NotImplementedError:
        # The package says "not available" this way; config validation can
        # call this with any year to vet a code.
        raise ValueError(f"unknown holidays country code {code!r}") from None
    return frozenset(d for d in table if d.year == year)


class ClosedDays:
    """`closed(d)` for one calendar; `None` (calendar "none") closes nothing."""

    __slots__ = ("_annual", "_closed", "_code", "_open")

    def __init__(self, calendar: CalendarSpec | None) -> None:
        if calendar is None:
            self._code = ""
            self._annual: frozenset[tuple[int, int]] = frozenset()
            self._closed: frozenset[date] = frozenset()
            self._open: frozenset[date] = frozenset()
        else:
            self._code = calendar.holidays
            self._annual = calendar.closed_annual
            self._closed = calendar.closed_dates
            self._open = calendar.open_dates

    def closed(self, d: date) -> bool:
        # `open` wins over everything else: it is how an operator says "we
        # work this holiday" without editing the holiday rules.
        if d in self._open:
            return False
        if d in self._closed or (d.month, d.day) in self._annual:
            return True
        return d in public_holidays(self._code, d.year)
