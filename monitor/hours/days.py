"""Weekday sets: the `days = "mon-fri"` language of plans and contracts.

Pure helpers with no knowledge of the config loader, so the loader, the CLI
and the docs all speak the same language.  Weekdays are `date.weekday()`
numbers: 0 = Monday ... 6 = Sunday.
"""

from __future__ import annotations

__all__ = ["DAY_NAMES", "format_days", "is_consecutive", "parse_days"]

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INDEX = {name: i for i, name in enumerate(DAY_NAMES)}


def _day(name: str, whole: str) -> int:
    key = name.strip().lower()
    try:
        return _INDEX[key]
    except KeyError:
        raise ValueError(
            f"{whole!r}: unknown day {name.strip()!r} (use {', '.join(DAY_NAMES)})"
        ) from None


def parse_days(text: str) -> frozenset[int]:
    """`"mon-fri"`, `"sat-wed"` (ranges wrap round the week), `"mon,wed,fri"`,
    or mixes like `"mon-wed,sat"` -> weekday numbers (0 = Monday).

    `"mon-mon"` is the single day Monday, not a whole week: a range names its
    first and last day, and the whole week is spelt `"mon-sun"`.
    """
    if not text.strip():
        raise ValueError('empty day list (e.g. "mon-fri")')
    days: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not dash:
            days.add(_day(item, text))
            continue
        a, b = _day(first, text), _day(last, text)
        days.update((a + k) % 7 for k in range((b - a) % 7 + 1))
    return frozenset(days)


def is_consecutive(days: frozenset[int], n: int) -> bool:
    """True when `days` is exactly `n` cyclically consecutive weekdays.

    Cyclic because customers pick packs like Sat-Wed that run over the
    weekend: {5, 6, 0, 1, 2} is 5 consecutive days.
    """
    if len(days) != n or not 0 < n <= 7:
        return False
    return any(days == {(s + k) % 7 for k in range(n)} for s in days)


def format_days(days: frozenset[int]) -> str:
    """Shortest readable form: `"mon-fri"`, `"sat-wed"`, `"mon-sun"`, else a
    list `"mon,wed,fri"`."""
    if len(days) == 7:
        return "mon-sun"
    n = len(days)
    for s in sorted(days):
        if n > 1 and days == {(s + k) % 7 for k in range(n)}:
            return f"{DAY_NAMES[s]}-{DAY_NAMES[(s + n - 1) % 7]}"
    return ",".join(DAY_NAMES[d] for d in sorted(days))
