"""HP(E) mails: Onboard Administrator AlertMail and iLO alert mails (FORMATS.md §1).

AlertMail is recognised by its subject, `HP AlertMail-<seq>: (<SEVERITY>)
<summary>` (parentheses optional, `HPE` accepted); the summary splits at
its first `:` into component and code (`Power Supply #2: Failed`).  Its
body's `EVENT (04 Mar 03:12)` has no year, so the time comes from the Date
header.

iLO mails have no published template; they are recognised by an `Event
Code:` line plus `iLO`, `AlertMail` or `Integrated Lights-Out` somewhere in
the subject, sender or body, and read from `Severity:`, `Class:`, `Event
Code:`, `Description:` and `Last Update:` lines.
"""

from __future__ import annotations

import re

from monitor.formats.mailtext import (
    MAX_MESSAGE,
    Extracted,
    FormatError,
    MailText,
    cap,
)

_ALERTMAIL = re.compile(
    r"\bHPE?\s+AlertMail-(\d+)\s*:\s*(?:\(\s*)?"
    r"(FATAL|CRITICAL|WARNING\s+MAJOR|WARNING\s+MINOR|WARNING|NORMAL)\b\s*\)?(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_ALERTMAIL_SEVERITY: dict[str, str] = {
    "FATAL": "critical",
    "CRITICAL": "critical",
    "WARNING MAJOR": "major",
    "WARNING MINOR": "minor",
    "WARNING": "warning",
    "NORMAL": "clear",
}
# IML severities; iLO 3's XML spells them in capitals (FAILED, CAUTION…).
_ILO_SEVERITY: dict[str, str] = {
    "critical": "critical",
    "failed": "critical",
    "caution": "warning",
    "informational": "info",
    "repaired": "clear",
}
_ILO_MARKERS = re.compile(r"\bilo\b|alertmail|integrated lights-out", re.IGNORECASE)


def parse_alertmail(mail: MailText) -> Extracted | FormatError | None:
    m = _ALERTMAIL.search(mail.subject)
    if m is None:
        return None
    severity = _ALERTMAIL_SEVERITY[" ".join(m.group(2).upper().split())]
    summary = " ".join(m.group(3).split())
    component, colon, code = summary.partition(":")
    if not colon:
        component, code = "", summary
    component, code = component.strip(), code.strip()
    if not code:
        return FormatError("hp", f"AlertMail-{m.group(1)} has no summary")
    when, raw = mail.date()
    return Extracted(
        format="hp",
        severity=severity,
        code=cap(code),
        message=cap(summary, MAX_MESSAGE),
        component=cap(component),
        occurred=when,
        occurred_raw=raw,
    )


def parse_ilo(mail: MailText) -> Extracted | FormatError | None:
    if "event code" not in mail.body.lower():
        return None  # cheap exit before the label scan
    labels = mail.labels()
    code = labels.get("event code")
    if code is None:
        return None
    if not (
        _ILO_MARKERS.search(mail.subject)
        or _ILO_MARKERS.search(mail.from_header)
        or _ILO_MARKERS.search(mail.body)
    ):
        return None
    if not code:
        return FormatError("ilo", "empty Event Code")
    # Unknown (or absent) severity: alarm as a warning rather than drop it.
    severity = _ILO_SEVERITY.get(labels.get("severity", "").lower(), "warning")
    component = labels.get("class", "") or labels.get("category", "")
    message = labels.get("description", "") or mail.subject.strip() or f"iLO event {code}"
    last = labels.get("last update", "")
    if last and "NOT SET" not in last.upper():
        # MM/DD/YYYY HH:MM in the iLO's local zone, which the mail doesn't
        # name: keep the text, don't guess.
        occurred, raw = None, last
    else:
        occurred, raw = mail.date()
    return Extracted(
        format="ilo",
        severity=severity,
        code=cap(code),
        message=cap(message, MAX_MESSAGE),
        component=cap(component),
        occurred=occurred,
        occurred_raw=raw,
        host=cap(labels.get("server name", "")),
    )
