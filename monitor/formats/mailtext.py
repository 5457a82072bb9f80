"""What the format parsers see of a mail, and what they give back.

A `MailText` is the decoded subject and main text body plus lazily computed
views (normalised lines, `Label: value` pairs, the Date header), so the
dispatcher can offer one mail to several parsers without redoing work and
without paying for views nobody asks for (the express fast path needs none).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr, parsedate_to_datetime

# SPEC 3.1 limits, also applied to what vendor formats produce (truncated
# there rather than rejected: a long vendor message must not lose an alarm).
MAX_MESSAGE = 8192
MAX_FIELD = 256

# `Label: value` with a short label of letters, digits, spaces and a few
# punctuation marks; applied to NFKC-normalised lines so `Severity：Critical`
# (full-width colon) matches too.
_LABEL = re.compile(r"^([A-Za-z][A-Za-z0-9 /_.#()-]{0,40}?)\s*:(.*)$")

# No '@' inside either half: keeps the match linear on `a@a@a@…` garbage.
_ADDR = r"""([^\s<>()\[\]\\,;:"@]+@[^\s<>()\[\]\\,;:"@]+)"""
_BARE = re.compile(r"\s*<?" + _ADDR + r">?\s*$")
_NAME_ADDR = re.compile(r"<" + _ADDR + r">\s*$")


@dataclass(frozen=True, slots=True)
class Extracted:
    """One alarm read from a vendor mail, before its device is known."""

    format: str  # esmpro | hp | ilo | idrac | smartd | mdadm
    severity: str
    code: str
    message: str
    component: str = ""
    occurred: datetime | None = None
    occurred_raw: str = ""
    host: str = ""  # the name the mail gives itself, used when the device has none
    model: str = ""


@dataclass(frozen=True, slots=True)
class FormatError:
    """The mail is this format, but unusable (reason code `invalid`)."""

    format: str
    detail: str


class MailText:
    """A mail's decoded text, with views computed on first use."""

    __slots__ = (
        "_date",
        "_labels",
        "_lines",
        "_norm_lines",
        "body",
        "date_header",
        "from_header",
        "subject",
    )

    def __init__(
        self, subject: str, body: str, from_header: str = "", date_header: str = ""
    ) -> None:
        self.subject = subject
        self.body = body
        self.from_header = from_header
        self.date_header = date_header
        self._lines: list[str] | None = None
        self._norm_lines: list[str] | None = None
        self._labels: dict[str, str] | None = None
        self._date: tuple[datetime | None, str] | None = None

    def lines(self) -> list[str]:
        """Body lines as sent (line ends removed)."""
        if self._lines is None:
            self._lines = self.body.splitlines()
        return self._lines

    def norm_lines(self) -> list[str]:
        """Body lines under NFKC, stripped (also of U+3000): for label matching.

        NFKC turns full-width colons, brackets, spaces, digits and letters and
        half-width katakana into their ordinary forms, which is exactly the
        variation Japanese mailers introduce in labels.
        """
        if self._norm_lines is None:
            if self.body.isascii():
                self._norm_lines = [line.strip() for line in self.lines()]
            else:
                self._norm_lines = [
                    unicodedata.normalize("NFKC", line).strip() for line in self.lines()
                ]
        return self._norm_lines

    def labels(self) -> dict[str, str]:
        """`Label: value` lines, label lower-cased; the first occurrence wins."""
        if self._labels is None:
            found: dict[str, str] = {}
            for line in self.norm_lines():
                if ":" not in line:
                    continue
                m = _LABEL.match(line)
                if m is not None:
                    found.setdefault(" ".join(m.group(1).lower().split()), m.group(2).strip())
            self._labels = found
        return self._labels

    def sender(self) -> str:
        """The From header's address, lower-cased ("" if none)."""
        return address_of(self.from_header)

    def date(self) -> tuple[datetime | None, str]:
        """The Date header as (aware datetime or None, raw text)."""
        if self._date is None:
            raw = self.date_header.strip()
            when: datetime | None = None
            if raw:
                try:
                    when = parsedate_to_datetime(raw)
                except (TypeError, ValueError, IndexError, OverflowError):
                    when = None
                # `-0000` means "zone unknown" (RFC 5322 3.3): naive, not UTC.
                if when is not None and when.tzinfo is None:
                    when = None
            self._date = (when, raw if when is not None else "")
        return self._date


def address_of(value: str) -> str:
    """The bare address, lower-cased, of `a@b`, `<a@b>` or `Name <a@b>`.

    The two usual shapes are matched directly; `email.utils.parseaddr`
    (~20 µs, pure Python) only sees the odd ones (comments, groups).
    """
    if not value:
        return ""
    m = _BARE.match(value) or _NAME_ADDR.search(value)
    if m is not None:
        return m.group(1).lower()
    return parseaddr(value)[1].strip().lower()


def cap(text: str, limit: int = MAX_FIELD) -> str:
    return text if len(text) <= limit else text[:limit]


def first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def aware_iso(text: str) -> datetime | None:
    """An ISO 8601 / RFC 3339 time with an offset, or None."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
