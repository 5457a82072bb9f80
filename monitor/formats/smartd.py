"""smartd warning mails (smartmontools `smartd_warning.sh`, FORMATS.md §4.1).

    Subject: SMART error (CurrentPendingSector) detected on host: nas02
    ...
    The following warning/error was logged by the smartd daemon:

    Device: /dev/sdc [SAT], 16 Currently unreadable (pending) sectors

The failure type in the subject is the code; the device named in the logged
message (else in the `Device info:` line) is the component.
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

FORMAT = "smartd"

_SUBJECT = re.compile(r"SMART error \(([A-Za-z]+)\) detected on host:\s*(\S*)", re.IGNORECASE)
_DEVICE = re.compile(r"\b(?:Device|device):\s*(/dev/[^\s,\[\]]+|[^\s,\[\]]+)")
_INTRO = "the following warning/error was logged by the smartd daemon"

_SEVERITY: dict[str, str] = {
    "failedhealthcheck": "critical",
    "health": "major",
    "usage": "major",
    "selftest": "major",
    "currentpendingsector": "major",
    "offlineuncorrectablesector": "major",
    "failedopendevice": "major",
    "errorcount": "warning",
    "temperature": "warning",
    "emailtest": "info",
}


def severity_of(failtype: str) -> str:
    key = failtype.lower()
    if key.startswith("failedread"):
        return "warning"  # FailedReadSmartData, …ErrorLog, …SelfTestLog
    # A failure type added by a future smartd: alarm rather than drop it.
    return _SEVERITY.get(key, "warning")


def parse_smartd(mail: MailText) -> Extracted | FormatError | None:
    m = _SUBJECT.search(mail.subject)
    if m is None:
        return None
    failtype, host = m.group(1), m.group(2)
    lines = mail.lines()
    message = _logged_message(lines)
    device = _device(message)
    if not device:
        for i, line in enumerate(lines):
            if line.strip().lower() == "device info:" and i + 1 < len(lines):
                device = _device(lines[i + 1])
                break
    when, raw = mail.date()
    return Extracted(
        format=FORMAT,
        severity=severity_of(failtype),
        code=cap(failtype),
        message=cap(message or mail.subject.strip(), MAX_MESSAGE),
        component=cap(device),
        occurred=when,
        occurred_raw=raw,
        host=cap(host),
    )


def _logged_message(lines: list[str]) -> str:
    """The first non-blank line after the 'was logged by the smartd daemon' intro."""
    seen = False
    for line in lines:
        text = line.strip()
        if not seen:
            seen = text.lower().startswith(_INTRO)
            continue
        if text:
            return text
    return ""


def _device(text: str) -> str:
    m = _DEVICE.search(text)
    return m.group(1) if m is not None else ""
