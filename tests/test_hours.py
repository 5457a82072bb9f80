"""Table tests of the hours engine on the seeds' service types, 2026-2027.

Dates checked against the Japanese holiday list: 2026-11-23 (Mon) 勤労感謝の日,
2026 Golden Week May 3-6 (May 6 substitute), 2026-09-22 citizens' holiday,
2027 Golden Week Apr 29 + May 3-5, and the calendar's own 12-29..01-03.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from monitor.hours import (
    HORIZON,
    NoServiceWindow,
    Schedule,
    Window,
    format_days,
    is_consecutive,
    parse_days,
    public_holidays,
    schedule_for,
)
from monitor.model import (
    CalendarSpec,
    Config,
    Contract,
    DaemonConfig,
    HttpConfig,
    PlanSpec,
    TimeRange,
)

JST = ZoneInfo("Asia/Tokyo")
BER = ZoneInfo("Europe/Berlin")
NYC = ZoneInfo("America/New_York")

JP = CalendarSpec(
    name="jp",
    holidays="JP",
    closed_annual=frozenset({(12, 29), (12, 30), (12, 31), (1, 2), (1, 3)}),
    closed_dates=frozenset(),
    open_dates=frozenset(),
)
H = timedelta(hours=1)
MON_FRI = frozenset(range(5))
ALL_DAYS = frozenset(range(7))

NEC_5X9 = Schedule(MON_FRI, TimeRange(510, 1050), JP, "Asia/Tokyo", 2 * H)
NEC_5X9_TUE_SAT = Schedule(parse_days("tue-sat"), TimeRange(510, 1050), JP, "Asia/Tokyo", 2 * H)
NEC_5X12 = Schedule(MON_FRI, TimeRange(510, 1260), JP, "Asia/Tokyo", 2 * H)
NEC_24X7 = Schedule(ALL_DAYS, TimeRange(0, 1440), None, "Asia/Tokyo", 4 * H)
HPE_9X5_NBD = Schedule(MON_FRI, TimeRange(525, 1050), JP, "Asia/Tokyo", None, True)


def jst(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=JST)


def win(a: datetime, b: datetime) -> Window:
    return Window(a, b)


# ---------------------------------------------------------------- in_hours

IN_HOURS = [
    # (schedule, instant, expected)
    (NEC_5X9, jst(2026, 11, 20, 16, 30), True),
    (NEC_5X9, jst(2026, 11, 20, 8, 30), True),  # start is inside: [start, end)
    (NEC_5X9, jst(2026, 11, 20, 8, 29), False),
    (NEC_5X9, jst(2026, 11, 20, 17, 30), False),  # end is outside
    (NEC_5X9, jst(2026, 11, 20, 17, 29), True),
    (NEC_5X9, jst(2026, 11, 21, 10), False),  # Saturday
    (NEC_5X9, jst(2026, 11, 23, 10), False),  # 勤労感謝の日
    (NEC_5X9, jst(2026, 12, 28, 10), True),  # last day before the year-end closure
    (NEC_5X9, jst(2026, 12, 29, 10), False),  # closed 12-29 (calendar)
    (NEC_5X9, jst(2027, 1, 1, 10), False),  # 元日
    (NEC_5X9, jst(2027, 1, 4, 10), True),
    (NEC_5X9, jst(2026, 5, 6, 10), False),  # substitute holiday (May 3 was a Sunday)
    (NEC_5X9, jst(2026, 9, 22, 10), False),  # citizens' holiday between two holidays
    (NEC_5X9, jst(2027, 4, 29, 10), False),  # 昭和の日
    (NEC_5X9, jst(2027, 4, 30, 10), True),  # Friday inside Golden Week: open
    (NEC_5X9, jst(2027, 5, 5, 10), False),
    (NEC_5X9_TUE_SAT, jst(2026, 11, 21, 10), True),  # Saturday is a service day
    (NEC_5X9_TUE_SAT, jst(2026, 11, 23, 10), False),  # Monday
    (NEC_5X9_TUE_SAT, jst(2027, 1, 2, 10), False),  # Saturday but closed 01-02
    (NEC_5X12, jst(2026, 11, 20, 20, 59), True),
    (NEC_5X12, jst(2026, 11, 20, 21, 0), False),
    (NEC_24X7, jst(2027, 1, 1, 3), True),  # calendar none: holidays included
    (NEC_24X7, jst(2026, 12, 31, 23, 59), True),
    (HPE_9X5_NBD, jst(2026, 11, 20, 8, 44), False),
    (HPE_9X5_NBD, jst(2026, 11, 20, 8, 45), True),
]


@pytest.mark.parametrize(("schedule", "at", "expected"), IN_HOURS)
def test_in_hours(schedule: Schedule, at: datetime, expected: bool) -> None:
    assert schedule.in_hours(at) is expected
    assert schedule.in_hours(at.astimezone(UTC)) is expected  # any zone in, same instant
    assert (schedule.window_at(at) is not None) is expected


# -------------------------------------------------------------- next_start

NEXT_START = [
    # Friday after hours, Monday is 勤労感謝の日: deferred to Tuesday.
    (NEC_5X9, jst(2026, 11, 20, 17, 32), jst(2026, 11, 24, 8, 30)),
    # Strictly after: at a window start, the next one is tomorrow's.
    (NEC_5X9, jst(2026, 11, 24, 8, 30), jst(2026, 11, 25, 8, 30)),
    (NEC_5X9, jst(2026, 11, 24, 8, 29), jst(2026, 11, 24, 8, 30)),
    # Year-end: Mon 12-28 evening -> Mon 2027-01-04.
    (NEC_5X9, jst(2026, 12, 28, 18), jst(2027, 1, 4, 8, 30)),
    # Golden Week 2026: Fri May 1 -> Thu May 7 (May 6 is a substitute holiday).
    (NEC_5X9, jst(2026, 5, 1, 17, 30), jst(2026, 5, 7, 8, 30)),
    # Golden Week 2027: Wed Apr 28 -> Fri Apr 30 (Apr 29 昭和の日), then Thu May 6.
    (NEC_5X9, jst(2027, 4, 28, 17, 30), jst(2027, 4, 30, 8, 30)),
    (NEC_5X9, jst(2027, 4, 30, 17, 45), jst(2027, 5, 6, 8, 30)),
    # Silver Week 2026: Sep 21 敬老の日, 22 国民の休日, 23 秋分の日.
    (NEC_5X9, jst(2026, 9, 18, 18), jst(2026, 9, 24, 8, 30)),
    # Tue-Sat pack: Saturday evening -> Tuesday; year-end -> Tue 2027-01-05.
    (NEC_5X9_TUE_SAT, jst(2026, 11, 21, 17, 30), jst(2026, 11, 24, 8, 30)),
    (NEC_5X9_TUE_SAT, jst(2026, 11, 20, 17, 30), jst(2026, 11, 21, 8, 30)),
    (NEC_5X9_TUE_SAT, jst(2026, 12, 26, 18), jst(2027, 1, 5, 8, 30)),
    (NEC_5X12, jst(2026, 11, 20, 21), jst(2026, 11, 24, 8, 30)),
    (HPE_9X5_NBD, jst(2026, 11, 20, 17, 32), jst(2026, 11, 24, 8, 45)),
    # 24x7 never starts again: it is one long window.
    (NEC_24X7, jst(2026, 11, 20, 17, 32), None),
]


@pytest.mark.parametrize(("schedule", "at", "expected"), NEXT_START)
def test_next_start(schedule: Schedule, at: datetime, expected: datetime | None) -> None:
    got = schedule.next_start(at)
    assert got == expected
    if got is not None:
        assert got.tzinfo is schedule.zone  # reported in the contract's zone


# ------------------------------------------------------------ respond_by

RESPOND_BY = [
    # The task's anchor case: 1 h left on Friday, Monday a holiday.
    (NEC_5X9, jst(2026, 11, 20, 16, 30), jst(2026, 11, 24, 9, 30)),
    (NEC_5X9, jst(2026, 11, 20, 15, 30), jst(2026, 11, 20, 17, 30)),  # ends exactly at close
    (NEC_5X9, jst(2026, 11, 20, 9), jst(2026, 11, 20, 11)),
    # Raised outside hours (after a clock jump): counting starts at the next window.
    (NEC_5X9, jst(2026, 11, 21, 12), jst(2026, 11, 24, 10, 30)),
    # Year-end: 1.5 h on Mon 12-28, the rest on Mon 2027-01-04.
    (NEC_5X9, jst(2026, 12, 28, 16), jst(2027, 1, 4, 9)),
    # Golden Week 2027.
    (NEC_5X9, jst(2027, 4, 30, 17), jst(2027, 5, 6, 10)),
    (NEC_5X9_TUE_SAT, jst(2026, 11, 28, 16, 30), jst(2026, 12, 1, 9, 30)),
    (NEC_5X9_TUE_SAT, jst(2026, 12, 26, 17), jst(2027, 1, 5, 10)),
    (NEC_5X12, jst(2026, 11, 20, 20), jst(2026, 11, 24, 9, 30)),
    (NEC_24X7, jst(2026, 12, 31, 23), jst(2027, 1, 1, 3)),
    # NBD: end of the window of the first service day after the raise date.
    (HPE_9X5_NBD, jst(2026, 11, 19, 10), jst(2026, 11, 20, 17, 30)),
    (HPE_9X5_NBD, jst(2026, 11, 20, 10), jst(2026, 11, 24, 17, 30)),
    (HPE_9X5_NBD, jst(2026, 12, 28, 9), jst(2027, 1, 4, 17, 30)),
    (HPE_9X5_NBD, jst(2027, 4, 28, 16), jst(2027, 4, 30, 17, 30)),
    (HPE_9X5_NBD, jst(2027, 4, 30, 9), jst(2027, 5, 6, 17, 30)),
    # Raised on a Saturday (e.g. critical after hours): still the next service day.
    (HPE_9X5_NBD, jst(2026, 11, 21, 3), jst(2026, 11, 24, 17, 30)),
]


@pytest.mark.parametrize(("schedule", "raised", "expected"), RESPOND_BY)
def test_respond_by(schedule: Schedule, raised: datetime, expected: datetime) -> None:
    assert schedule.respond_by(raised) == expected


# ------------------------------------------------------- windows, merging


def test_window_at_and_next_windows_5x9_year_end() -> None:
    at = jst(2026, 12, 28, 12)
    assert NEC_5X9.window_at(at) == win(jst(2026, 12, 28, 8, 30), jst(2026, 12, 28, 17, 30))
    assert NEC_5X9.next_windows(at, 3) == [
        win(jst(2027, 1, 4, 8, 30), jst(2027, 1, 4, 17, 30)),
        win(jst(2027, 1, 5, 8, 30), jst(2027, 1, 5, 17, 30)),
        win(jst(2027, 1, 6, 8, 30), jst(2027, 1, 6, 17, 30)),
    ]
    assert NEC_5X9.next_windows(at, 0) == []


def test_24x7_is_one_window_clipped_to_the_horizon() -> None:
    at = jst(2026, 11, 20, 17, 32)
    assert NEC_24X7.window_at(at) == win(at - HORIZON, at + HORIZON)
    assert NEC_24X7.next_windows(at, 3) == []
    a, b = jst(2026, 12, 30), jst(2027, 1, 5, 6, 15)
    assert NEC_24X7.service_time_between(a, b) == b - a


def test_touching_day_windows_merge() -> None:
    # Mon-Fri all day: one window Mon 00:00 -> Sat 00:00, split by a holiday.
    sched = Schedule(MON_FRI, TimeRange(0, 1440), JP, "Asia/Tokyo", H)
    assert sched.window_at(jst(2026, 11, 18, 12)) == win(jst(2026, 11, 16), jst(2026, 11, 21))
    # Tue 2026-11-03 文化の日 splits that week: Mon alone, then Wed..Fri.
    assert sched.window_at(jst(2026, 11, 2, 12)) == win(jst(2026, 11, 2), jst(2026, 11, 3))
    assert sched.next_start(jst(2026, 11, 2, 12)) == jst(2026, 11, 4)
    # 24 h windows starting 08:30 touch each other: one window.
    rolling = Schedule(ALL_DAYS, TimeRange(510, 510), None, "Asia/Tokyo", H)
    at = jst(2026, 6, 1, 3)
    assert rolling.window_at(at) == win(at - HORIZON, at + HORIZON)


def test_window_belongs_to_the_day_it_starts() -> None:
    # Friday-night-only plan 21:00-08:30: Saturday 02:00 is Friday's window.
    night = Schedule(frozenset({4}), TimeRange(1260, 510), JP, "Asia/Tokyo", H)
    assert night.in_hours(jst(2026, 11, 21, 2))
    assert night.window_at(jst(2026, 11, 21, 2)) == win(
        jst(2026, 11, 20, 21), jst(2026, 11, 21, 8, 30)
    )
    assert not night.in_hours(jst(2026, 11, 21, 21))  # Saturday has no window
    # 2027-01-01 is a Friday and a holiday: no window that night at all.
    assert not night.in_hours(jst(2027, 1, 2, 2))
    assert night.next_start(jst(2026, 12, 26)) == jst(2027, 1, 8, 21)


def test_crossing_midnight_windows_stay_separate() -> None:
    nights = Schedule(ALL_DAYS, TimeRange(1050, 510), None, "Asia/Tokyo", H)
    assert nights.next_windows(jst(2026, 11, 20, 12), 2) == [
        win(jst(2026, 11, 20, 17, 30), jst(2026, 11, 21, 8, 30)),
        win(jst(2026, 11, 21, 17, 30), jst(2026, 11, 22, 8, 30)),
    ]
    assert nights.add_service_time(jst(2026, 11, 21, 8), 2 * H) == jst(2026, 11, 21, 19)


def test_service_time_between() -> None:
    # Fri 09:00 -> next Fri 09:00: 8.5 h Fri, Mon holiday, 3 x 9 h, 0.5 h.
    a, b = jst(2026, 11, 20, 9), jst(2026, 11, 27, 9)
    assert NEC_5X9.service_time_between(a, b) == timedelta(hours=36)
    assert NEC_5X9.service_time_between(b, a) == timedelta(0)
    # Consistent with add_service_time.
    assert NEC_5X9.add_service_time(a, timedelta(hours=36)) == jst(2026, 11, 27, 9)
    # A whole year of 5x9 across a chunk edge and the year-end closure.
    year = NEC_5X9.service_time_between(jst(2027, 1, 1), jst(2028, 1, 1))
    open_days = sum(
        1 for i in range(365) if NEC_5X9.is_service_day(date(2027, 1, 1) + timedelta(days=i))
    )
    assert year == timedelta(hours=9 * open_days)
    assert open_days == 261 - 16 - 3  # weekdays - weekday holidays - 12-29/30/31


def test_add_service_time_edges() -> None:
    at = jst(2026, 11, 21, 12)  # Saturday
    assert NEC_5X9.add_service_time(at, timedelta(0)) == jst(2026, 11, 24, 8, 30)
    inside = jst(2026, 11, 20, 10).replace(microsecond=123456)
    assert NEC_5X9.add_service_time(inside, timedelta(0)) == inside
    assert NEC_5X9.add_service_time(inside, timedelta(minutes=1)) == inside + timedelta(minutes=1)
    with pytest.raises(ValueError, match="negative"):
        NEC_5X9.add_service_time(at, -H)


def test_day_window_and_service_days() -> None:
    assert HPE_9X5_NBD.day_window(date(2026, 11, 24)) == win(
        jst(2026, 11, 24, 8, 45), jst(2026, 11, 24, 17, 30)
    )
    assert HPE_9X5_NBD.day_window(date(2026, 11, 23)) is None
    assert HPE_9X5_NBD.next_service_day(date(2026, 11, 20)) == date(2026, 11, 24)


def test_calendar_open_and_closed_dates() -> None:
    cal = CalendarSpec(
        "custom",
        "JP",
        closed_annual=frozenset(),
        closed_dates=frozenset({date(2026, 11, 20)}),
        open_dates=frozenset({date(2026, 11, 23), date(2026, 11, 22)}),
    )
    sched = Schedule(MON_FRI, TimeRange(510, 1050), cal, "Asia/Tokyo", 2 * H)
    assert not sched.in_hours(jst(2026, 11, 20, 10))  # closed date
    assert sched.in_hours(jst(2026, 11, 23, 10))  # holiday opened
    assert not sched.in_hours(jst(2026, 11, 22, 10))  # `open` does not add weekdays
    assert sched.respond_by(jst(2026, 11, 19, 16, 30)) == jst(2026, 11, 23, 9, 30)


def test_horizon_bounds_searches() -> None:
    short = Schedule(MON_FRI, TimeRange(510, 1050), JP, "Asia/Tokyo", H, horizon=timedelta(days=5))
    assert short.next_start(jst(2026, 12, 28, 18)) is None  # 2027-01-04 is 6.6 d away
    assert short.next_start(jst(2026, 12, 31)) == jst(2027, 1, 4, 8, 30)
    with pytest.raises(NoServiceWindow):
        short.add_service_time(jst(2026, 12, 28, 18), H)
    never = Schedule(frozenset(), TimeRange(510, 1050), None, "Asia/Tokyo", H)
    assert never.next_start(jst(2026, 1, 1)) is None
    assert never.next_windows(jst(2026, 1, 1), 5) == []
    with pytest.raises(NoServiceWindow):
        never.respond_by(jst(2026, 1, 1))
    nbd_never = Schedule(frozenset(), TimeRange(510, 1050), None, "Asia/Tokyo", None, True)
    with pytest.raises(NoServiceWindow):
        nbd_never.respond_by(jst(2026, 1, 1))


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 11, 20, 12)
    for call in (
        NEC_5X9.in_hours,
        NEC_5X9.window_at,
        NEC_5X9.next_start,
        NEC_5X9.respond_by,
    ):
        with pytest.raises(ValueError, match="naive"):
            call(naive)


def test_bad_hours_are_refused() -> None:
    with pytest.raises(ValueError):
        Schedule(MON_FRI, TimeRange(-5, 100), None, "Asia/Tokyo")


# ---------------------------------------------------------------------- DST
#
# Python compares and subtracts two datetimes with the *same* tzinfo by wall
# clock, and never finds a datetime in a fold equal to one in another zone
# (PEP 495), so these tests compare instants as POSIX seconds.


def ber(y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BER, fold=fold)


def nyc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=NYC, fold=fold)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def span(w: Window | None) -> tuple[float, float] | None:
    return None if w is None else (w.start.timestamp(), w.end.timestamp())


def test_berlin_spring_forward_gap_shifts_start() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST.  A 02:30 start opens at 03:00.
    early = Schedule(ALL_DAYS, TimeRange(150, 300), None, "Europe/Berlin", H)
    assert span(early.day_window(date(2026, 3, 29))) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 3))
    assert early.next_start(ber(2026, 3, 29)) == ber(2026, 3, 29, 3)
    # The day before is a normal 2.5 h window.
    assert span(early.day_window(date(2026, 3, 28))) == (
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 28, 4),
    )


def test_berlin_fall_back_fold_takes_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    early = Schedule(ALL_DAYS, TimeRange(150, 300), None, "Europe/Berlin", H)
    w = early.day_window(date(2026, 10, 25))
    assert span(w) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 4))  # 3.5 real hours
    assert w is not None and w.start.fold == 0 and w.start.utcoffset() == 2 * H
    assert early.in_hours(ber(2026, 10, 25, 2, 30, fold=1))  # second 02:30 is inside too


def test_berlin_24x7_service_time_is_real_time() -> None:
    always = Schedule(ALL_DAYS, TimeRange(0, 1440), None, "Europe/Berlin", H)
    spring = always.service_time_between(ber(2026, 3, 28), ber(2026, 3, 30))
    autumn = always.service_time_between(ber(2026, 10, 24), ber(2026, 10, 26))
    assert (spring, autumn) == (timedelta(hours=47), timedelta(hours=49))
    # 24 h of service from Saturday noon ends Sunday 13:00 local (clock skipped 1 h).
    assert always.add_service_time(ber(2026, 3, 28, 12), 24 * H) == ber(2026, 3, 29, 13)


def test_new_york_night_window_shortened_by_spring_forward() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT.  Sat 22:00 -> Sun 06:00 lasts 7 h.
    nights = Schedule(frozenset({5}), TimeRange(1320, 360), None, "America/New_York", H)
    assert span(nights.day_window(date(2026, 3, 7))) == (utc(2026, 3, 8, 3), utc(2026, 3, 8, 10))
    assert nights.service_time_between(nyc(2026, 3, 7), nyc(2026, 3, 9)) == 7 * H
    assert nights.add_service_time(nyc(2026, 3, 7, 22), 7 * H) == nyc(2026, 3, 8, 6)
    assert nights.add_service_time(nyc(2026, 3, 7, 22), 8 * H) == nyc(2026, 3, 14, 23)


def test_new_york_gap_and_fold_windows() -> None:
    s = Schedule(ALL_DAYS, TimeRange(90, 180), None, "America/New_York", H)  # 01:30-03:00
    # Spring: 01:30 EST exists, 03:00 EDT comes 30 real minutes later.
    assert span(s.day_window(date(2026, 3, 8))) == (utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7))
    # Autumn: first 01:30 (EDT) to 03:00 EST: 2.5 real hours.
    assert span(s.day_window(date(2026, 11, 1))) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 8))
    # A range wholly inside the gap has no window that day.
    gap = Schedule(ALL_DAYS, TimeRange(120, 180), None, "America/New_York", H)
    assert gap.day_window(date(2026, 3, 8)) is None
    assert gap.next_start(nyc(2026, 3, 7, 12)) == nyc(2026, 3, 9, 2)


def test_new_york_5x9_across_dst() -> None:
    s = Schedule(MON_FRI, TimeRange(510, 1050), None, "America/New_York", 2 * H)
    due = s.respond_by(nyc(2026, 3, 6, 16, 30))
    assert due == nyc(2026, 3, 9, 9, 30) and due.utcoffset() == -4 * H


# ------------------------------------------------------------ days helpers


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat-wed", {5, 6, 0, 1, 2}),
        ("tue-sat", {1, 2, 3, 4, 5}),
        ("mon,wed,fri", {0, 2, 4}),
        ("Mon - Wed, sat", {0, 1, 2, 5}),
        ("mon-sun", set(range(7))),
        ("sun", {6}),
        ("mon-mon", {0}),
    ],
)
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


@pytest.mark.parametrize("text", ["", " ", "mon-xyz", "monday", "mon,,fri", "mon-tue-wed"])
def test_parse_days_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_days(text)


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("mon-fri", 5, True),
        ("tue-sat", 5, True),
        ("sat-wed", 5, True),
        ("sun-thu", 5, True),
        ("mon-fri", 6, False),
        ("mon-thu,sat", 5, False),
        ("mon,wed,fri", 3, False),
        ("mon-sun", 7, True),
        ("fri", 1, True),
    ],
)
def test_is_consecutive(text: str, n: int, expected: bool) -> None:
    assert is_consecutive(parse_days(text), n) is expected


@pytest.mark.parametrize("text", ["mon-fri", "sat-wed", "mon-sun", "mon,wed,fri", "sun", "fri-mon"])
def test_format_days_round_trips(text: str) -> None:
    assert format_days(parse_days(text)) == text


# ----------------------------------------------------------- schedule_for


def _config(**contracts: Contract) -> Config:
    return Config(
        path="/etc/monitor.toml",
        daemon=DaemonConfig("Asia/Tokyo", "var/monitor.db", "system", None, "monitor-1"),
        http=HttpConfig("127.0.0.1", 9120),
        calendars={"jp": JP},
        plans={
            "express-5x9": PlanSpec("express-5x9", MON_FRI, 5, TimeRange(510, 1050), "jp", 2 * H),
            "express-24x7": PlanSpec(
                "express-24x7", ALL_DAYS, None, TimeRange(0, 1440), "none", 4 * H
            ),
        },
        contracts=dict(contracts),
    )


def contract(cid: str, plan: str, days: str | None = None, tz: str = "Asia/Tokyo") -> Contract:
    return Contract(
        id=cid,
        customer="Example Corp",
        plan=plan,
        days=None if days is None else parse_days(days),
        timezone=tz,
        start=date(2025, 4, 1),
        years=5,
        registered=True,
        after_hours="defer",
        ack_timeout=timedelta(minutes=30),
        contacts=(),
    )


def test_schedule_for_applies_override_zone_and_calendar() -> None:
    c1 = contract("C-1", "express-5x9")
    c2 = contract("C-2", "express-5x9", days="tue-sat")
    c3 = contract("C-3", "express-24x7", tz="Europe/Berlin")
    c4 = contract("C-4", "express-5x9")
    cfg = _config(**{c.id: c for c in (c1, c2, c3, c4)})
    s1, s2, s3 = (schedule_for(cfg, c) for c in (c1, c2, c3))
    assert s1.days == MON_FRI and s1.calendar == JP and s1.response == 2 * H
    assert s2.days == parse_days("tue-sat")
    assert s3.calendar is None and s3.tz == "Europe/Berlin"
    assert schedule_for(cfg, c1) is s1  # cached per config
    assert schedule_for(cfg, c4) is s1  # same parameters share caches
    reloaded = _config(**{c.id: c for c in (c1, c2, c3, c4)})
    assert schedule_for(reloaded, c1) is s1  # a reload keeps warm windows
    assert s2.respond_by(jst(2026, 11, 21, 16, 30)) == jst(2026, 11, 24, 9, 30)


def test_public_holidays_codes() -> None:
    jp = public_holidays("JP", 2026)
    assert date(2026, 11, 23) in jp and date(2026, 5, 6) in jp and date(2026, 9, 22) in jp
    assert public_holidays("", 2026) == frozenset()
    assert date(2026, 10, 3) in public_holidays("DE-BY", 2026)  # Tag der Deutschen Einheit
    assert public_holidays("JP", 2150) == frozenset()  # outside the package's range
    with pytest.raises(ValueError, match="unknown holidays country code 'XX'"):
        public_holidays("XX", 2026)
