"""Conversions between stored epoch seconds and RFC 3339 on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def rfc3339(seconds: float | None, zone: tzinfo = UTC) -> str | None:
    """Epoch seconds → RFC 3339 with the zone's offset, millisecond precision."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, zone).isoformat(timespec="milliseconds")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time; an offset is required (`Z` accepted)."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    return when
