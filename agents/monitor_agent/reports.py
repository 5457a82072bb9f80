"""Findings → signed SPEC 3.1 reports, and their wire bytes.

The spool keeps each report as the exact bytes every channel sends (the
JSON of 3.1, signature included), made once: a retransmission, whichever
channel carries it, is the same report with the same id and signature.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.formats.alarm_json import MAX_FIELD, MAX_ID, MAX_MESSAGE, Invalid, decode_alarm, sign
from monitor.formats.alarm_json import encode_alarm as _encode
from monitor.model import AlarmReport
from monitor_agent.conditions import Finding

__all__ = ["Identity", "decode", "encode", "make_report", "send_id"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the reports are about (`[agent]`)."""

    serial: str
    model: str = ""
    host: str = ""
    secret: str = ""


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def make_report(who: Identity, finding: Finding) -> AlarmReport:
    """A complete report, signed when the agent has a secret."""
    report = AlarmReport(
        id=_cap(finding.id, MAX_ID),
        serial=who.serial,
        severity=finding.severity,
        code=_cap(finding.code, MAX_FIELD),
        message=_cap(finding.message, MAX_MESSAGE),
        model=_cap(who.model, MAX_FIELD),
        host=_cap(who.host, MAX_FIELD),
        occurred=finding.occurred,
        occurred_raw=rfc3339(finding.occurred) if finding.occurred else "",
        component=_cap(finding.component, MAX_FIELD),
    )
    if who.secret:
        report = replace(report, sig=sign(report, who.secret))
    return report


def encode(report: AlarmReport) -> bytes:
    return _encode(report)


def decode(body: bytes) -> AlarmReport:
    """Spooled bytes → the report (they were valid when spooled)."""
    report = decode_alarm(body)
    if isinstance(report, Invalid):
        raise ValueError(f"spooled report is not valid: {report.detail}")
    return report


def send_id(serial: str) -> str:
    """Id of a `monitor-agent send` test report."""
    return f"send:{serial}:{uuid.uuid4()}"
