"""Value checkers for `Table.get`: decoded TOML value in, typed value out.

Each raises `ValueError` with the reason; `Table` turns it into a located
problem.  They combine the TOML type check with the value languages of
`values.py`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import urllib.parse
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.config.table import as_str, type_name
from monitor.config.values import parse_datetime, parse_days, parse_duration, parse_rate

__all__ = [
    "as_date",
    "as_days",
    "as_duration",
    "as_email",
    "as_hex64",
    "as_nonempty",
    "as_offset_datetime",
    "as_rate",
    "as_url",
    "as_zone",
    "choice",
    "q",
    "zone_exists",
]


def q(text: str) -> str:
    """Quote a value the way TOML writes strings."""
    return json.dumps(text, ensure_ascii=False)


def as_nonempty(value: object) -> str:
    text = as_str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def choice(*options: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = as_str(value)
        if text not in options:
            raise ValueError(f"{q(text)} is not one of {', '.join(q(o) for o in options)}")
        return text

    return parse


def as_duration(value: object) -> timedelta:
    return parse_duration(as_str(value))


def as_rate(value: object) -> float:
    return parse_rate(as_str(value))


def as_days(value: object) -> frozenset[int]:
    """A day expression, or (friendlier for generated files) an array of them."""
    if isinstance(value, list):
        days: set[int] = set()
        for item in value:
            days |= parse_days(as_str(item))
        if not days:
            raise ValueError('empty day list (e.g. "mon-fri")')
        return frozenset(days)
    return parse_days(as_str(value))


@functools.cache
def zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def as_zone(value: object) -> str:
    name = as_str(value)
    if not zone_exists(name):
        raise ValueError(f'unknown time zone {q(name)} (an IANA name like "Asia/Tokyo")')
    return name


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def as_hex64(value: object) -> str:
    """A SHA-256 digest in hex; stored lower-case so comparisons are exact."""
    text = as_str(value)
    if not _HEX64.fullmatch(text):
        raise ValueError("must be 64 hex digits (a SHA-256 digest)")
    return text.lower()


# Deliberately loose: the point is catching pasted names and missing '@',
# not policing RFC 5321.
_EMAIL = re.compile(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+")


def as_email(value: object) -> str:
    text = as_str(value)
    if not _EMAIL.fullmatch(text):
        raise ValueError(f"{q(text)} is not an e-mail address like user@example.jp")
    return text


def as_url(*schemes: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = as_str(value)
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname:
            want = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"{q(text)} is not a {want} URL")
        return text

    return parse


def as_date(value: object) -> date:
    """A TOML date (`2025-04-01`, unquoted).

    Strings are refused on purpose: a quoted date is the usual sign of a
    hand-edited file, and being strict keeps one obvious spelling.
    """
    if isinstance(value, datetime):
        raise ValueError("must be a date like 2025-04-01, not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        raise ValueError(
            f"must be a TOML date like 2025-04-01 (no quotes), not the string {q(value)}"
        )
    raise ValueError(f"must be a TOML date like 2025-04-01, not {type_name(value)}")


def as_offset_datetime(value: object) -> datetime:
    """A TOML offset datetime or an RFC 3339 string, with an offset."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset (e.g. 2026-11-20T09:00:00+09:00)")
        return value
    if isinstance(value, str):
        return parse_datetime(value)
    raise ValueError(f"must be a date and time with offset, not {type_name(value)}")


def as_path(base_dir: str) -> Callable[[object], str]:
    """A file path; relative ones are taken from the config file's folder."""

    def parse(value: object) -> str:
        text = as_str(value)
        if not text:
            return ""
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))

    return parse
