"""What the daemon should end up with after a trace: computed at generation
time from the records, the config and the independent hours model
(`oracle.py`), and written into the trace header so `replay` needs only the
trace to check the daemon.

The model follows SPEC 4: exact duplicates (same device and report id) are
stored once and change nothing; only `covered` alarms make incidents; one
incident per unresolved fingerprint, folding repeats (`count`, highest
severity); a `clear` marks the same serial and component recovered; an
incident opened outside service hours is deferred to the next window start
unless it is critical on a `notify-critical` contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from monitor_sim.oracle import Hours, coverage
from monitor_sim.simconfig import SimConfig
from monitor_sim.trace import Record

RANK = {"critical": 0, "major": 1, "minor": 2, "warning": 3, "info": 4, "clear": 5}
CHECK_OFFSET = 120.0  # checkpoints sit this far before and after a due time


def first_copies(records: Sequence[Record]) -> list[Record]:
    """Well-formed records, one per (device, report id), in trace order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for rec in sorted(records, key=lambda r: r.at):
        if rec.malformed or (rec.serial, rec.id) in seen:
            continue
        seen.add((rec.serial, rec.id))
        out.append(rec)
    return out


def expectations(
    config: SimConfig, start: datetime, records: Sequence[Record], end: float
) -> dict[str, Any]:
    incidents: dict[str, dict[str, Any]] = {}
    uncovered: dict[str, str] = {}
    for rec in first_copies(records):
        when = start + timedelta(seconds=rec.at)
        device = config.device(rec.serial)
        cov = coverage(config, device, when)
        if cov != "covered" or device is None:
            uncovered[rec.serial] = cov
            continue
        contract = config.contracts[device.contract]
        if rec.severity == "clear":
            for inc in incidents.values():
                if inc["device"] == rec.serial and inc["component"] == rec.component:
                    inc["recovered"] = True
            continue
        seen = incidents.get(rec.fingerprint)
        if seen is not None:
            inc = seen
            inc["count"] += 1
            inc["recovered"] = False
            if RANK[rec.severity] < RANK[inc["severity"]]:
                inc["severity"] = rec.severity
            continue
        hours = Hours(config, contract)
        due: datetime | None = None
        after_hours = False
        if hours.in_hours(when):
            pass
        elif contract.after_hours == "notify-critical" and rec.severity == "critical":
            after_hours = True
        else:
            due = hours.next_start(when)
        incidents[rec.fingerprint] = {
            "contract": contract.id,
            "device": rec.serial,
            "component": rec.component,
            "code": rec.code,
            "first_at": rec.at,
            "count": 1,
            "severity": rec.severity,
            "recovered": False,
            "after_hours": after_hours,
            "due_at": due.isoformat() if due else None,
            "notice": contract.notifies,
        }
    end_time = start + timedelta(seconds=end)
    for inc in incidents.values():
        due_text = inc["due_at"]
        late = due_text is not None and datetime.fromisoformat(due_text) > end_time
        inc["state"] = "deferred" if late else "raised"
    return {
        "incidents": incidents,
        "uncovered": uncovered,
        "checkpoints": _checkpoints(start, incidents, end),
    }


def _checkpoints(start: datetime, incidents: dict[str, dict[str, Any]], end: float) -> list[Any]:
    """Moments a `--drive-clock` replay stops to look: just before each due
    time (its incidents still deferred) and just after (raised)."""
    by_due: dict[float, list[tuple[str, float]]] = {}
    for fp, inc in incidents.items():
        if inc["due_at"]:
            due = (datetime.fromisoformat(inc["due_at"]) - start).total_seconds()
            by_due.setdefault(due, []).append((fp, inc["first_at"]))
    points: dict[float, dict[str, list[str]]] = {}
    for due, items in sorted(by_due.items()):
        before = due - CHECK_OFFSET
        waiting = sorted(fp for fp, first in items if first < before)
        if waiting and before <= end:
            points.setdefault(before, {"deferred": [], "raised": []})["deferred"] += waiting
        after = due + CHECK_OFFSET
        if after <= end:
            points.setdefault(after, {"deferred": [], "raised": []})["raised"] += sorted(
                fp for fp, _ in items
            )
    return [{"at": at, **points[at]} for at in sorted(points)]
