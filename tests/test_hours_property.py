"""The hours engine against a brute-force oracle that walks minute by minute.

The oracle knows nothing of chunks, merging or gap handling.  It lists every
UTC minute of a ~2-week range with its local wall-clock reading, and says a
day window runs from the first minute whose wall reading is >= (day, start)
to the first whose reading is >= (day or next day, end) -- the documented
rule, which also settles DST gaps (first minute after the gap) and folds
(first occurrence).  "First minute whose reading is >= x" is a bisect on the
running maximum of the readings.  A minute is in hours when some open day's
window holds it; a window start is an in-hours minute after one that is not.

Random plans (any weekday set, hours crossing midnight or all day),
calendars (holidays, annual and dated closures, open dates) and zones; the
instants are drawn either anywhere in 2026-2027 or within two days of a DST
change.  Everything the oracle cannot see (beyond its range) is only checked
for being beyond the range.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from unittest.mock import patch
from zoneinfo import ZoneInfo

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.hours import NoServiceWindow, Schedule
from monitor.hours import schedule as schedule_module
from monitor.model import CalendarSpec, TimeRange

ZONES = ("Asia/Tokyo", "Europe/Berlin", "America/New_York")
# DST changes of the two zones that have them, as UTC epoch minutes.
DST_CHANGES = [
    int(datetime(*t, tzinfo=UTC).timestamp()) // 60
    for t in (
        (2026, 3, 29, 1),
        (2026, 10, 25, 1),
        (2027, 3, 28, 1),
        (2027, 10, 31, 1),
        (2026, 3, 8, 7),
        (2026, 11, 1, 6),
        (2027, 3, 14, 7),
        (2027, 11, 7, 6),
    )
]
# Where the engine's internal UTC chunks meet (a window may be split there).
CHUNK_EDGES = [k * schedule_module._CHUNK // 60 for k in range(106, 110)]
RANGE_START = int(datetime(2026, 1, 3, tzinfo=UTC).timestamp()) // 60
RANGE_END = int(datetime(2027, 12, 20, tzinfo=UTC).timestamp()) // 60
BEFORE = 3 * 1440  # oracle minutes before the instant under test
AFTER = 11 * 1440  # and after
NAIVE_EPOCH = date(1970, 1, 1)
# Boundaries near DST changes (01:00-03:30) and common office hours, plus any.
NIGHT = [60, 75, 90, 120, 130, 150, 170, 180]
INTERESTING = [0, 60, 90, 120, 150, 180, 210, 510, 525, 1050, 1260, 1380, 1410]


@lru_cache(maxsize=64)
def _holidays(code: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(code, years=year)) if code else frozenset()


@dataclass(frozen=True)
class Case:
    days: frozenset[int]
    hours: TimeRange
    calendar: CalendarSpec | None
    tz: str
    t: int  # the instant under test, UTC epoch minutes

    def open_day(self, d: date) -> bool:
        if d.weekday() not in self.days:
            return False
        cal = self.calendar
        if cal is None or d in cal.open_dates:
            return True
        return not (
            d in cal.closed_dates
            or (d.month, d.day) in cal.closed_annual
            or d in _holidays(cal.holidays, d.year)
        )


class Oracle:
    """In-hours flags for every UTC minute in [lo, hi)."""

    def __init__(self, case: Case, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        zone = ZoneInfo(case.tz)
        # Local wall reading of each minute, as minutes since 1970-01-01 local.
        # Offsets are sampled every 15 minutes: these zones change on the hour.
        readings: list[int] = []
        for q in range(lo - lo % 15, hi, 15):  # blocks aligned on UTC quarter-hours
            off = datetime.fromtimestamp(q * 60, zone).utcoffset()
            assert off is not None
            shift = int(off.total_seconds()) // 60
            readings.extend(m + shift for m in range(max(q, lo), min(q + 15, hi)))
        peak = list(accumulate(readings, max))
        first = datetime.fromtimestamp(lo * 60, zone).date() - timedelta(days=2)
        last = datetime.fromtimestamp(hi * 60, zone).date()
        length = case.hours.end - case.hours.start
        if length <= 0:
            length += 1440
        flags = bytearray(hi - lo)
        # Day windows whose both ends the range shows: date -> (start, end)
        # in epoch minutes, or None for a closed day or one DST left empty.
        self.days: dict[date, tuple[int, int] | None] = {}
        d = first
        while d <= last:
            base = (d - NAIVE_EPOCH).days * 1440
            a = bisect_left(peak, base + case.hours.start)
            b = bisect_left(peak, base + case.hours.start + length)
            if case.open_day(d):
                flags[a:b] = b"\x01" * (b - a)
            if a > 0 and b < len(peak):
                self.days[d] = (lo + a, lo + b) if case.open_day(d) and a < b else None
            d += timedelta(days=1)
        self.flags = flags

    def inside(self, m: int) -> bool:
        return bool(self.flags[m - self.lo])

    def is_start(self, m: int) -> bool:
        return self.inside(m) and m > self.lo and not self.inside(m - 1)

    def next_start(self, t: int) -> int | None:
        return next((m for m in range(t + 1, self.hi) if self.is_start(m)), None)

    def add(self, t: int, minutes: int) -> int | None:
        m = t
        if minutes == 0:
            return next((x for x in range(t, self.hi) if self.inside(x)), None)
        while m < self.hi:
            if self.inside(m):
                minutes -= 1
                if minutes == 0:
                    return m + 1
            m += 1
        return None


def at(m: int) -> datetime:
    return datetime.fromtimestamp(m * 60, UTC)


def minute(when: datetime) -> float:
    return when.timestamp() / 60


# ------------------------------------------------------------- strategies


@st.composite
def dates(draw: st.DrawFn) -> date:
    return date(2026, 1, 1) + timedelta(days=draw(st.integers(0, 729)))


@st.composite
def calendars(draw: st.DrawFn) -> CalendarSpec | None:
    if draw(st.booleans()):
        return None
    code = draw(st.sampled_from(["", "JP", "DE", "US"]))
    annual = draw(
        st.frozensets(st.tuples(st.integers(1, 12), st.integers(1, 28)), max_size=4)
        | st.just(frozenset({(12, 29), (12, 30), (12, 31), (1, 2), (1, 3)}))
    )
    return CalendarSpec(
        name="random",
        holidays=code,
        closed_annual=annual,
        closed_dates=draw(st.frozensets(dates(), max_size=6)),
        open_dates=draw(st.frozensets(dates(), max_size=4)),
    )


clock_minutes = st.sampled_from(INTERESTING) | st.integers(0, 1439)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    tz = draw(st.sampled_from(ZONES))
    near = draw(st.sampled_from(["dst", "dst", "chunk", "any"]))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(clock_minutes)
    end = draw(clock_minutes | st.just(1440))
    if end == 1440 and start == 0 and draw(st.booleans()):
        start = draw(clock_minutes)  # keep all-day plans from dominating
    if near == "dst" and tz != "Asia/Tokyo":
        t = draw(st.sampled_from(DST_CHANGES)) + draw(st.integers(-2 * 1440, 2 * 1440))
        if draw(st.booleans()):
            # Aim a boundary into the gap or fold (01:00-03:00 local, on the
            # Sunday of the change) so the gap and fold rules really run.
            if draw(st.booleans()):
                start = draw(st.sampled_from(NIGHT))
            else:
                end = draw(st.sampled_from(NIGHT))
            days |= {6}
    elif near == "chunk":
        t = draw(st.sampled_from(CHUNK_EDGES)) + draw(st.integers(-2 * 1440, 2 * 1440))
    else:
        t = draw(st.integers(RANGE_START, RANGE_END))
    if start == end:
        end = 1440 if start == 0 else end
    return Case(days, TimeRange(start, end), draw(calendars()), tz, t)


COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
# A soak run: HOURS_ORACLE_EXAMPLES=5000 pytest tests/test_hours_property.py
EXAMPLES = int(os.environ.get("HOURS_ORACLE_EXAMPLES", "120"))
probe_lists = st.lists(st.integers(-1440, 4 * 1440), min_size=1, max_size=4)
amount_lists = st.lists(st.integers(0, 4000), min_size=1, max_size=4)


@settings(max_examples=EXAMPLES, **COMMON)  # type: ignore[arg-type]
@given(case=cases(), probes=probe_lists, amounts=amount_lists)
def test_engine_agrees_with_minute_oracle(
    case: Case, probes: list[int], amounts: list[int]
) -> None:
    check(Schedule(case.days, case.hours, case.calendar, case.tz), case, probes, amounts)


@settings(max_examples=max(EXAMPLES // 3, 10), **COMMON)  # type: ignore[arg-type]
@given(case=cases(), probes=probe_lists, amounts=amount_lists)
def test_engine_agrees_with_oracle_on_tiny_chunks(
    case: Case, probes: list[int], amounts: list[int]
) -> None:
    # 4.5 h chunks cut nearly every window into pieces: this exercises the
    # gluing of pieces across chunk edges far more than real chunks do.  The
    # horizon shrinks with them so walks over 24x7 stay short, but still
    # exceeds the oracle's range.
    with patch.object(schedule_module, "_CHUNK", 1 << 14):
        sched = Schedule(case.days, case.hours, case.calendar, case.tz, horizon=timedelta(days=20))
        check(sched, case, probes, amounts)


def check(sched: Schedule, case: Case, probes: list[int], amounts: list[int]) -> None:
    lo, hi = case.t - BEFORE, case.t + AFTER
    oracle = Oracle(case, lo, hi)

    # Every day window the oracle sees in full, to the second.
    for d, want_day in oracle.days.items():
        got_day = sched.day_window(d)
        if want_day is None:
            assert got_day is None, d
        else:
            assert got_day is not None, d
            assert (got_day.start.timestamp(), got_day.end.timestamp()) == (
                want_day[0] * 60,
                want_day[1] * 60,
            ), d

    # in_hours on every minute of two days around t (and half a minute in).
    for m in range(case.t - 1440, case.t + 1440):
        assert sched.in_hours(at(m)) == oracle.inside(m), at(m)
    half = at(case.t) + timedelta(seconds=30)
    assert sched.in_hours(half) == oracle.inside(case.t)

    for p in probes:
        t = case.t + p
        # next_start: strictly after t.
        want = oracle.next_start(t)
        got = sched.next_start(at(t))
        if want is None:
            assert got is None or minute(got) >= hi, (at(t), got)
        else:
            assert got is not None and minute(got) == want, (at(t), got, at(want))

        # window_at: the merged window, as far as the oracle can see.
        win = sched.window_at(at(t))
        assert (win is not None) == oracle.inside(t)
        if win is not None:
            s = next((m for m in range(t, lo, -1) if oracle.is_start(m)), None)
            e = next((m for m in range(t, hi) if not oracle.inside(m)), None)
            assert minute(win.start) == s if s is not None else minute(win.start) <= lo + 1
            assert minute(win.end) == e if e is not None else minute(win.end) >= hi

    for amount in amounts:
        want = oracle.add(case.t, amount)
        try:
            got = sched.add_service_time(at(case.t), timedelta(minutes=amount))
        except NoServiceWindow:
            assert want is None
            continue
        if want is None:
            assert minute(got) >= hi
        else:
            assert minute(got) == want, (at(case.t), amount, got, at(want))
            spent = sched.service_time_between(at(case.t), got)
            assert spent == timedelta(minutes=amount)
