"""mdadm --monitor mails (FORMATS.md §4.2).

    Subject: Fail event on /dev/md1:fs01
    ...
    A Fail event had been detected on md device /dev/md1.
    It could be related to component device /dev/sdb2.

The greeting, sign-off and `P.S.` changed between mdadm versions, so only the
subject and the `A <Event> event had been detected on md device <dev>.`
sentence are relied on; either one is enough (the sentence alone is what a
forwarded body or a legacy serial line carries).
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

FORMAT = "mdadm"

# The device may itself contain ':' (/dev/md/host:name), so the host is the
# part after the last one.
_SUBJECT = re.compile(r"^\s*([A-Za-z0-9]+) event on (/dev/\S+|md\S*):([^\s:]+)\s*$")
_SENTENCE = re.compile(r"\bA ([A-Za-z0-9]+) event had been detected on md device (\S+?)\.?\s*$")
_RELATED = re.compile(r"related to (?:component|sub-)\s*device (\S+?)\.?\s*$")

_SEVERITY: dict[str, str] = {
    "Fail": "major",
    "DegradedArray": "major",
    "DeviceDisappeared": "major",
    "FailSpare": "minor",
    "SparesMissing": "minor",
    "RebuildFinished": "clear",
    "SpareActive": "clear",
}


def parse_mdadm(mail: MailText) -> Extracted | FormatError | None:
    subject = _SUBJECT.match(mail.subject)
    sentence: re.Match[str] | None = None
    related = ""
    if subject is not None or " event had been detected on md device " in mail.body:
        for line in mail.lines():
            if sentence is None:
                sentence = _SENTENCE.search(line)
            elif not related:
                r = _RELATED.search(line)
                if r is not None:
                    related = r.group(1)
                    break
    if subject is None and sentence is None:
        return None
    if sentence is not None:
        event, device = sentence.group(1), sentence.group(2)
    else:
        assert subject is not None
        event, device = subject.group(1), subject.group(2)
    host = subject.group(3) if subject is not None else ""
    message = f"{event} event on md device {device}"
    if related:
        message += f" (component device {related})"
    when, raw = mail.date()
    return Extracted(
        format=FORMAT,
        # Rebuild20/40/…, NewArray, TestMessage and the like: informational.
        severity=_SEVERITY.get(event, "info"),
        code=cap(event),
        message=cap(message, MAX_MESSAGE),
        component=cap(device),
        occurred=when,
        occurred_raw=raw,
        host=cap(host),
    )
