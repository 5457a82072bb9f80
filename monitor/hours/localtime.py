"""Local clock readings -> instants, with one rule for DST gaps and folds.

Rule: the instant for "local date D, time T" is the *earliest instant at
which the zone's clock reads D T or later*.

- Normal times: the usual conversion.
- Fold (fall back, T happens twice): the first occurrence (`fold=0`).
- Gap (spring forward, T never happens): the first instant after the gap, so
  a 02:30 start on a spring-forward night opens at 03:00 local.

Using the same rule for window starts and ends keeps windows well formed
(start <= end always) and lets the property tests' brute-force oracle restate
the rule as "first minute whose wall clock is >= T".
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["local_instant"]

_DAY = timedelta(days=1)


def local_instant(zone: ZoneInfo, day: date, minute: int) -> float:
    """POSIX seconds of local `day` at `minute` after midnight (0..1440).

    1440 is midnight at the end of `day` ("24:00").
    """
    if minute >= 1440:
        day, minute = day + _DAY * (minute // 1440), minute % 1440
    wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
    ts = wall.timestamp()  # fold=0: in a gap this is the *later* reading
    back = datetime.fromtimestamp(ts, zone)
    if back.replace(tzinfo=None) == wall.replace(tzinfo=None):
        return ts
    return _gap_end(zone, wall, ts)


def _gap_end(zone: ZoneInfo, wall: datetime, late: float) -> float:
    """First instant whose wall reading is >= `wall`, `wall` lying in a gap.

    In a gap `fold=1` maps to an earlier instant than `fold=0`; the transition
    lies between the two and the wall clock is monotonic there, so a binary
    search on whole seconds finds it (transitions fall on whole seconds).
    """
    naive = wall.replace(tzinfo=None)
    lo = int(wall.replace(fold=1).timestamp())  # reads before `wall`
    hi = int(late) + 1  # reads after `wall`
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return float(hi)
