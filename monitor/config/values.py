"""Parsers for the small value languages of the config file.

Each function takes the raw text and returns the typed value, or raises
`ValueError` with a message that completes the sentence
"`<key path>`: ..." (so it says what is wrong and what is expected, without
repeating the key).  They are pure and reused outside the loader (the agent's
config, the CLI's `--at`), so nothing here knows about files or lines.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from monitor.hours.days import DAY_NAMES, format_days, is_consecutive, parse_days
from monitor.model import TimeRange

__all__ = [
    "DAY_NAMES",
    "format_days",
    "is_consecutive",
    "parse_datetime",
    "parse_days",
    "parse_duration",
    "parse_hostport",
    "parse_hours",
    "parse_listen",
    "parse_rate",
    "parse_time",
]


def _q(text: str) -> str:
    """Quote a value as TOML would write it (messages quote what the user wrote)."""
    return json.dumps(text, ensure_ascii=False)


# Units largest first so "1d2h30m15s" reads naturally; each may appear once.
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HINT = 'a duration like "90s", "30m", "2h", "1d" or "1h30m"'


def parse_duration(text: str) -> timedelta:
    """`"90s"`, `"30m"`, `"2h"`, `"1d"`, `"1h30m"` -> timedelta (must be > 0).

    Zero is refused: every duration in the config is a timeout, a target or a
    retention period, and zero is always a typo there.
    """
    m = _DURATION_RE.fullmatch(text)
    if not text or m is None:
        raise ValueError(f"{_q(text)} is not {_DURATION_HINT}")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    value = timedelta(days=d, hours=h, minutes=mi, seconds=s)
    if value <= timedelta(0):
        raise ValueError(f"{_q(text)} must be longer than zero")
    return value


_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)/([smh])")
_RATE_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """`"200/s"`, `"30/m"`, `"100/h"` -> events per second (> 0)."""
    m = _RATE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f'{_q(text)} is not a rate like "200/s", "30/m" or "100/h"')
    value = float(m.group(1)) / _RATE_UNIT[m.group(2)]
    if value <= 0:
        raise ValueError(f"{_q(text)} must be more than zero")
    return value


def _split_hostport(text: str) -> tuple[str, str | None]:
    """Split `host:port`, `[v6]:port`, `host`, `[v6]` (port None when absent)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{_q(text)}: unclosed '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{_q(text)}: expected ':<port>' after ']'")
        return host, rest[1:]
    if text.count(":") > 1:
        # A bare IPv6 address is ambiguous with a port: "::1:9120".
        raise ValueError(f'{_q(text)}: write IPv6 addresses in brackets, e.g. "[::1]:9120"')
    if ":" in text:
        host, port = text.split(":", 1)
        return host, port
    return text, None


def _port(text: str, whole: str, *, allow_zero: bool) -> int:
    if not text.isdigit():
        raise ValueError(f"{_q(whole)}: port {_q(text)} is not a number")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"{_q(whole)}: port must be {low}..65535")
    return port


def _check_host(host: str, whole: str) -> None:
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{_q(whole)}: missing or invalid host")


def parse_listen(text: str) -> tuple[str, int]:
    """A listening address `"host:port"` or `"[::1]:9120"` -> (host, port).

    The port is mandatory (there is no sensible default per listener) and 0
    is allowed: it asks the OS for a free port, which tests rely on.
    """
    host, port = _split_hostport(text)
    _check_host(host, text)
    if port is None:
        raise ValueError(f'{_q(text)}: expected "host:port" (IPv6: "[::1]:9120")')
    return host, _port(port, text, allow_zero=True)


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """A server to connect to, `"host"` or `"host:port"` -> (host, port)."""
    host, port = _split_hostport(text)
    _check_host(host, text)
    return host, default_port if port is None else _port(port, text, allow_zero=False)


_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")


def _time(text: str, allow_24: bool) -> int:
    m = _TIME_RE.fullmatch(text)
    if m is None:
        raise ValueError('is not a time "HH:MM"')
    hh, mm = int(m.group(1)), int(m.group(2))
    if mm > 59:
        raise ValueError("minutes must be 00..59")
    if hh == 24 and mm == 0:
        if not allow_24:
            raise ValueError("24:00 is only valid as the end of a range")
        return 1440
    if hh > 23:
        raise ValueError("hour must be 00..23 (24:00 only as an end)")
    return hh * 60 + mm


def parse_time(text: str, *, allow_24: bool = False) -> int:
    """`"HH:MM"` -> minutes after midnight.  `24:00` only when `allow_24`."""
    try:
        return _time(text, allow_24)
    except ValueError as e:
        raise ValueError(_explain(_q(text), e)) from None


def _explain(subject: str, e: ValueError) -> str:
    # "<subject> is not ..." reads as a sentence; other reasons follow a colon.
    return f"{subject} {e}" if str(e).startswith("is ") else f"{subject}: {e}"


def parse_hours(text: str) -> TimeRange:
    """`"08:30-17:30"` -> TimeRange.  End before start crosses midnight.

    `"17:00-00:00"` is normalised to end=1440 so a range that merely ends at
    midnight is not mistaken for one that crosses it.  Equal ends are refused
    (empty or all day? `"00:00-24:00"` says all day unambiguously).
    """
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f'{_q(text)} is not a time range like "08:30-17:30"')
    try:
        start = _time(parts[0].strip(), False)
    except ValueError as e:
        raise ValueError(f"{_q(text)}: {_explain('start ' + _q(parts[0].strip()), e)}") from None
    try:
        end = _time(parts[1].strip(), True)
    except ValueError as e:
        raise ValueError(f"{_q(text)}: {_explain('end ' + _q(parts[1].strip()), e)}") from None
    if end == 0 and start > 0:
        end = 1440
    if end == start:
        raise ValueError(f'{_q(text)}: start equals end (all day is "00:00-24:00")')
    return TimeRange(start, end)


def parse_datetime(text: str) -> datetime:
    """RFC 3339 with a mandatory offset -> aware datetime."""
    try:
        value = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f'{_q(text)} is not an RFC 3339 time like "2026-11-20T09:00:00+09:00"'
        ) from None
    if value.tzinfo is None:
        raise ValueError(f"{_q(text)} has no UTC offset (add e.g. +09:00 or Z)")
    return value
