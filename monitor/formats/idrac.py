"""Dell iDRAC / DRAC alert mails (FORMATS.md §2).

The exact iDRAC 7/8/9 layout is unpublished, so the parser keys on what is
documented: a `Message ID:` label holding a Dell message id (up to 4 letters
then up to 4 digits, `PSU0003`), or an iDRAC / DRAC subject, plus
`Severity:`, `Message:` (or DRAC 4's `Event:`), `Service Tag:`, `Host Name:`
and `Date/Time:` lines.  A DRAC 4 mail has no message id; its event text is
then the code, so repeats of one event still fold into one incident.
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

FORMAT = "idrac"

_MESSAGE_ID = re.compile(r"^([A-Z]{2,4})(\d{3,4})$")
_ID_IN_TEXT = re.compile(r"\b([A-Z]{2,4})(\d{3,4})\b")
_SUBJECT = re.compile(r"\bi?DRAC\b|Dell Remote Access Controller", re.IGNORECASE)
_SEVERITY: dict[str, str] = {
    "critical": "critical",
    "warning": "warning",
    "info": "info",
    "informational": "info",
    "information": "info",
    "ok": "clear",
    "normal": "clear",
}


def parse_idrac(mail: MailText) -> Extracted | FormatError | None:
    by_subject = _SUBJECT.search(mail.subject) is not None
    if not by_subject and "message id" not in mail.body.lower():
        return None  # cheap exit before the label scan
    labels = mail.labels()
    msgid = labels.get("message id", "").upper()
    m = _MESSAGE_ID.match(msgid)
    if m is None:
        if not by_subject:
            return None
        m = _ID_IN_TEXT.search(mail.subject)
    if m is not None:
        component, code = m.group(1), m.group(0)
    else:
        component, code = "", labels.get("event", "")
        if not code:
            return FormatError(FORMAT, "no Message ID and no Event line")
    # Unknown (or absent) severity: alarm as a warning rather than drop it.
    severity = _SEVERITY.get(labels.get("severity", "").lower(), "warning")
    message = labels.get("message", "") or labels.get("event", "") or mail.subject.strip() or code
    stamp = labels.get("date/time", "")
    if stamp:
        # The iDRAC's local time of an unnamed zone: keep the text only.
        occurred, raw = None, stamp
    else:
        occurred, raw = mail.date()
    return Extracted(
        format=FORMAT,
        severity=severity,
        code=cap(code),
        message=cap(message, MAX_MESSAGE),
        component=cap(component),
        occurred=occurred,
        occurred_raw=raw,
        host=cap(labels.get("host name", "")),
        model=cap(labels.get("model", "") or labels.get("system model", "")),
    )
