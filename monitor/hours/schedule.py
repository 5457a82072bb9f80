"""Service windows of one plan in one zone, and service-time arithmetic.

Model (SPEC 4.4).  Each local day whose weekday is listed and that the
calendar does not close has one *day window* `[start, end)`: it starts on that
day and ends the same day or, when the hours cross midnight, the next day.
The *service time* set S is the union of all day windows; its maximal
intervals are the *windows* the API talks about, so windows that touch or
overlap are one window (24x7 is one long window).

How it is stored.  Instants are POSIX seconds (floats).  Time is cut into
fixed UTC chunks of 2**24 s (~194 days); each chunk holds S clipped to the
chunk as sorted, disjoint, non-touching intervals in two parallel lists.
`in_hours` is then a dict lookup and one `bisect` with no zone conversion.
Only at chunk edges can a window be split in two; walks that need maximal
windows (`window_at`, `next_start`) glue the pieces back.

Horizon.  Walks never look further than `horizon` (400 days) from where they
start: `next_start` answers None when no window starts within it, and the ends
of a window longer than that are reported clipped (24x7 reports
`[at - 400 d, at + 400 d)` from `window_at`).  This bounds the work for plans
that are always open or never open.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from monitor.hours.calendar import ClosedDays
from monitor.hours.localtime import local_instant
from monitor.model import CalendarSpec, TimeRange

__all__ = ["HORIZON", "NoServiceWindow", "Schedule", "Window"]

HORIZON = timedelta(days=400)
_CHUNK = 1 << 24  # seconds; a power of two so `ts // _CHUNK` is exact
_DAY = timedelta(days=1)

_Chunk = tuple[list[float], list[float]]


class Window(NamedTuple):
    """`[start, end)`, aware, in the schedule's zone."""

    start: datetime
    end: datetime


class NoServiceWindow(ValueError):
    """No service time within the horizon: the plan is never open."""


def _instant(at: datetime) -> float:
    # A naive datetime would silently be read as the host's local time.
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: an aware datetime is required")
    return at.timestamp()


class Schedule:
    """Windows and service-time arithmetic for one (days, hours, calendar, zone).

    Pure: every method takes the instant it is about; nothing reads a clock.
    Results are aware datetimes in the schedule's zone.  Caches fill lazily
    and are never invalidated (the inputs are immutable).
    """

    __slots__ = (
        "_chunks",
        "_closed",
        "_day_cache",
        "_h",
        "_span",
        "calendar",
        "days",
        "horizon",
        "hours",
        "response",
        "response_nbd",
        "tz",
        "zone",
    )

    def __init__(
        self,
        days: frozenset[int],
        hours: TimeRange,
        calendar: CalendarSpec | None,
        tz: str,
        response: timedelta | None = None,
        response_nbd: bool = False,
        *,
        horizon: timedelta = HORIZON,
    ) -> None:
        if not (0 <= hours.start < 1440 and 0 <= hours.end <= 1440):
            raise ValueError(f"bad hours {hours}")
        self.days = frozenset(days)
        self.hours = hours
        self.calendar = calendar
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self.response = response
        self.response_nbd = response_nbd
        self.horizon = horizon
        self._h = horizon.total_seconds()
        # End minute relative to the start day: 1440+ means the next day.
        self._span = (hours.start, hours.start + hours.minutes)
        self._closed = ClosedDays(calendar)
        self._day_cache: dict[date, tuple[float, float] | None] = {}
        self._chunks: dict[int, _Chunk] = {}

    def __repr__(self) -> str:
        cal = self.calendar.name if self.calendar else "none"
        return (
            f"Schedule(days={sorted(self.days)}, hours={self.hours.start}-{self.hours.end}, "
            f"calendar={cal}, tz={self.tz})"
        )

    # ------------------------------------------------------------------ days

    def is_service_day(self, day: date) -> bool:
        """Listed weekday and not closed by the calendar."""
        return day.weekday() in self.days and not self._closed.closed(day)

    def _day(self, day: date) -> tuple[float, float] | None:
        try:
            return self._day_cache[day]
        except KeyError:
            pass
        win: tuple[float, float] | None = None
        if self.is_service_day(day):
            start = local_instant(self.zone, day, self._span[0])
            end = local_instant(self.zone, day, self._span[1])
            # Empty when DST swallows the whole range (02:00-03:00 on a
            # spring-forward night): the clock never shows those times.
            if end > start:
                win = (start, end)
        self._day_cache[day] = win
        return win

    def day_window(self, day: date) -> Window | None:
        """The window of local `day` alone (before merging), or None."""
        win = self._day(day)
        return None if win is None else Window(self._dt(win[0]), self._dt(win[1]))

    # ---------------------------------------------------------------- chunks

    def _chunk(self, k: int) -> _Chunk:
        got = self._chunks.get(k)
        if got is None:
            got = self._chunks[k] = self._build(k)
        return got

    def _build(self, k: int) -> _Chunk:
        lo, hi = float(k * _CHUNK), float((k + 1) * _CHUNK)
        # A day window ends before the day after next begins, so days from
        # the one before `lo`'s local date can reach into the chunk.
        day = datetime.fromtimestamp(lo, self.zone).date() - _DAY
        last = datetime.fromtimestamp(hi, self.zone).date()
        starts: list[float] = []
        ends: list[float] = []
        while day <= last:
            win = self._day(day)
            day += _DAY
            if win is None:
                continue
            s, e = max(win[0], lo), min(win[1], hi)
            if s >= e:
                continue
            if ends and s <= ends[-1]:  # touches or overlaps: one window
                ends[-1] = max(ends[-1], e)
            else:
                starts.append(s)
                ends.append(e)
        return starts, ends

    def _continues_back(self, k: int) -> bool:
        """Does S run without a break across the start of chunk `k`?"""
        ends = self._chunk(k - 1)[1]
        return bool(ends) and ends[-1] == k * _CHUNK

    def _end_from(self, k: int, end: float, limit: float) -> float:
        """Follow a window ending at `end` (in chunk `k`) across chunk edges."""
        while end == (k + 1) * _CHUNK and end < limit:
            k += 1
            starts, ends = self._chunk(k)
            if not starts or starts[0] != end:
                break
            end = ends[0]
        return min(end, limit)

    def _start_from(self, k: int, start: float, limit: float) -> float:
        """Follow a window starting at `start` (in chunk `k`) back across edges."""
        while start == k * _CHUNK and start > limit:
            k -= 1
            starts, ends = self._chunk(k)
            if not ends or ends[-1] != start:
                break
            start = starts[-1]
        return max(start, limit)

    # ------------------------------------------------------ float-level core

    def _window(self, ts: float) -> tuple[float, float] | None:
        k = int(ts // _CHUNK)
        starts, ends = self._chunk(k)
        i = bisect_right(starts, ts) - 1
        if i < 0 or ts >= ends[i]:
            return None
        return (
            self._start_from(k, starts[i], ts - self._h),
            self._end_from(k, ends[i], ts + self._h),
        )

    def _next_start(self, ts: float) -> float | None:
        limit = ts + self._h
        k = int(ts // _CHUNK)
        starts = self._chunk(k)[0]
        j = bisect_right(starts, ts)
        while True:
            if j < len(starts):
                s = starts[j]
                if s > limit:
                    return None
                # Only a piece that begins exactly at the chunk edge can be
                # the continuation of a window from the previous chunk.
                if j > 0 or s != k * _CHUNK or not self._continues_back(k):
                    return s
                j += 1
                continue
            k += 1
            if k * _CHUNK > limit:
                return None
            starts = self._chunk(k)[0]
            j = 0

    def _add(self, ts: float, seconds: float) -> float:
        k = int(ts // _CHUNK)
        starts, ends = self._chunk(k)
        i = bisect_right(starts, ts) - 1
        pos = ts
        inside = i >= 0 and ts < ends[i]
        if not inside:
            i += 1  # not in a window: counting begins at the next one
        searched_from = ts
        while True:
            if not inside:
                while i >= len(starts):
                    k += 1
                    if k * _CHUNK > searched_from + self._h:
                        raise NoServiceWindow(f"no service window within {self.horizon.days} d")
                    starts, ends = self._chunk(k)
                    i = 0
                pos = starts[i]
                if pos > searched_from + self._h:
                    raise NoServiceWindow(f"no service window within {self.horizon.days} d")
            avail = ends[i] - pos
            if seconds <= avail:
                return pos + seconds
            seconds -= avail
            searched_from = ends[i]
            i += 1
            inside = False

    def _between(self, ta: float, tb: float) -> float:
        total = 0.0
        for k in range(int(ta // _CHUNK), int(tb // _CHUNK) + 1):
            starts, ends = self._chunk(k)
            for j in range(max(bisect_right(starts, ta) - 1, 0), len(starts)):
                s, e = starts[j], ends[j]
                if s >= tb:
                    break
                lo, hi = max(s, ta), min(e, tb)
                if hi > lo:
                    total += hi - lo
        return total

    def _dt(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)

    # ------------------------------------------------------------ public API

    def in_hours(self, at: datetime) -> bool:
        """Is `at` inside a service window?"""
        ts = _instant(at)
        got = self._chunks.get(int(ts // _CHUNK))
        starts, ends = got if got is not None else self._chunk(int(ts // _CHUNK))
        i = bisect_right(starts, ts) - 1
        return i >= 0 and ts < ends[i]

    def window_at(self, at: datetime) -> Window | None:
        """The (merged) window containing `at`, ends clipped to `at` ± horizon."""
        win = self._window(_instant(at))
        return None if win is None else Window(self._dt(win[0]), self._dt(win[1]))

    def next_start(self, at: datetime) -> datetime | None:
        """Start of the first window starting strictly after `at`, or None if
        none starts within the horizon (e.g. `at` inside a 24x7 window)."""
        s = self._next_start(_instant(at))
        return None if s is None else self._dt(s)

    def next_windows(self, at: datetime, n: int) -> list[Window]:
        """The `n` windows that start strictly after `at` (fewer if the
        horizon runs out); each end clipped to its start + horizon."""
        out: list[Window] = []
        ts = _instant(at)
        while len(out) < n:
            s = self._next_start(ts)
            if s is None:
                break
            e = self._end_from(int(s // _CHUNK), self._chunk_end(s), s + self._h)
            out.append(Window(self._dt(s), self._dt(e)))
            ts = s
        return out

    def _chunk_end(self, s: float) -> float:
        """End of the chunk piece that starts at `s`."""
        starts, ends = self._chunk(int(s // _CHUNK))
        return ends[bisect_right(starts, s) - 1]

    def add_service_time(self, start: datetime, d: timedelta) -> datetime:
        """The instant at which `d` of service time has passed since `start`.

        Outside a window counting begins at the next window start, so a zero
        `d` gives `start` in hours and the next window start outside.  Time
        is real elapsed time: a window shortened by DST yields less.
        Raises NoServiceWindow when a needed window is beyond the horizon.
        """
        if d < timedelta(0):
            raise ValueError(f"negative service time {d}")
        return self._dt(self._add(_instant(start), d.total_seconds()))

    def service_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Service time inside `[a, b)`; zero when `b <= a`."""
        ta, tb = _instant(a), _instant(b)
        if tb <= ta:
            return timedelta(0)
        return timedelta(seconds=self._between(ta, tb))

    def next_service_day(self, after: date) -> date | None:
        """The first day after `after` that has a window, within the horizon."""
        for i in range(1, self.horizon.days + 1):
            day = after + timedelta(days=i)
            if self._day(day) is not None:
                return day
        return None

    def respond_by(self, raised_at: datetime) -> datetime:
        """SLA deadline for an incident raised at `raised_at` (SPEC 4.6).

        `response` counted in service time from `raised_at`; with
        `response_nbd`, the end of the day window of the first service day
        after `raised_at`'s local date (raised Friday -> end of Monday's
        window, or Tuesday's when Monday is a holiday).
        """
        _instant(raised_at)
        if self.response_nbd:
            day = self.next_service_day(raised_at.astimezone(self.zone).date())
            win = None if day is None else self._day(day)
            if win is None:
                raise NoServiceWindow(f"no service day within {self.horizon.days} d")
            return self._dt(win[1])
        if self.response is None:
            raise ValueError("plan has no response target")
        return self.add_service_time(raised_at, self.response)
