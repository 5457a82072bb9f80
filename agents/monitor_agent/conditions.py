"""Conditions: what a collector sees now, against what it reported before.

Collectors that sample a state (SMART, md RAID, EDAC counters, sensors)
turn each sample into a `Snapshot` of `Observation`s.  `track` compares it
with the conditions still standing from earlier samples and says what to
report (pure: state in, findings and state out; the runner stores the new
state and the reports in one transaction, so a crash can neither lose nor
repeat a report).

Rules (SPEC 5.1: "each new condition once ... `clear` with the same
component when a condition goes away"):

- a new condition is reported; the same condition again is not, unless
  its severity changed or its counter (`level`) grew;
- a condition that disappears from a sample is gone.  Once a component
  has no standing condition left, one `clear` is reported for it — never
  while another condition of that component stands, because the daemon's
  `clear` recovers *every* incident of the serial and component;
- a component absent from the sample (`present`) is not known to be
  healthy (an array stopped, a disk that vanished): its conditions stand;
- counter conditions (`clears=False`, EDAC) never clear; a lower count
  means the counter was reset (a reboot) and what it holds now is new.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.model import SEVERITIES, SEVERITY_RANK

__all__ = [
    "Finding",
    "Observation",
    "Snapshot",
    "at_least",
    "id_stamp",
    "report_id",
    "track",
]


@dataclass(frozen=True, slots=True)
class Finding:
    """One report to make (before serial/model/host and the signature)."""

    id: str
    component: str
    code: str
    severity: str
    message: str
    occurred: datetime | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One condition seen in one sample."""

    key: str  # unique within the collector, stable across samples
    component: str
    code: str
    severity: str
    message: str
    level: int | None = None  # a counter: reported again when it grows
    clears: bool = True  # False: a counter that never "recovers"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES or self.severity == "clear":
            raise ValueError(f"bad observation severity {self.severity!r}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    observations: tuple[Observation, ...] = ()
    # Components the sample covered (healthy or not); see the module doc.
    present: frozenset[str] = field(default_factory=frozenset)


def at_least(severity: str, minimum: str) -> bool:
    """`severity` is `minimum` or worse (`clear` never is)."""
    if severity == "clear":
        return False
    return SEVERITY_RANK[severity] <= SEVERITY_RANK[minimum]


def id_stamp(when: datetime) -> str:
    """Compact UTC time for report ids: `20261120T084512Z`."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


_BLANKS = re.compile(r"\s+")


def report_id(*parts: str) -> str:
    """Join id parts with `:`; blanks become `_`, each part is capped.

    Ids must stay under the schema's 256 characters and are easier to quote
    in logs and mails without spaces.
    """
    return ":".join(_BLANKS.sub("_", p.strip())[:96] for p in parts)


def _state(obs: Observation) -> dict[str, Any]:
    return {
        "component": obs.component,
        "code": obs.code,
        "severity": obs.severity,
        "level": obs.level,
        "clears": obs.clears,
    }


def _changed(old: Mapping[str, Any], obs: Observation) -> bool:
    if old.get("severity") != obs.severity:
        return True
    if obs.level is None:
        return False
    before = old.get("level")
    if not isinstance(before, int) or obs.level > before:
        return True
    # A counter that never clears went down: it was reset (a reboot), so
    # what it holds now are new errors.  (A sector count going down is a
    # repair in progress, not news.)
    return not obs.clears and obs.level < before


def track(
    prefix: str,
    serial: str,
    previous: Mapping[str, Mapping[str, Any]],
    snapshot: Snapshot,
    now: datetime,
    minimum: str = "info",
) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Compare a sample with the standing conditions.

    `previous` and the returned state map a condition key to what was
    reported for it (JSON-able, kept in the spool's state table).  Findings
    below `minimum` are left out but still tracked, so a filtered condition
    is neither reported later nor "cleared".
    """
    stamp = id_stamp(now)
    findings: list[Finding] = []
    state: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for obs in snapshot.observations:
        seen.add(obs.key)
        old = previous.get(obs.key)
        if (old is None or _changed(old, obs)) and at_least(obs.severity, minimum):
            findings.append(
                Finding(
                    id=report_id(prefix, serial, obs.component, obs.code, stamp),
                    component=obs.component,
                    code=obs.code,
                    severity=obs.severity,
                    message=obs.message,
                    occurred=now,
                )
            )
        state[obs.key] = _state(obs)

    gone: dict[str, list[Mapping[str, Any]]] = {}
    for key, old in previous.items():
        if key in seen:
            continue
        component = str(old.get("component", ""))
        if not old.get("clears", True):
            continue  # a counter reset: forget it quietly
        if component not in snapshot.present:
            state[key] = dict(old)  # nothing known about it now: it stands
            continue
        gone.setdefault(component, []).append(old)

    standing = {str(s["component"]) for s in state.values() if s.get("clears", True)}
    for component, olds in gone.items():
        if component in standing:
            continue  # another condition of this component still stands
        if not any(at_least(str(o.get("severity")), minimum) for o in olds):
            continue  # nothing of it was reported, so nothing to clear
        worst = min(olds, key=lambda o: SEVERITY_RANK.get(str(o.get("severity")), 99))
        codes = ", ".join(sorted({str(o.get("code")) for o in olds}))
        findings.append(
            Finding(
                id=report_id(prefix, serial, component, "clear", stamp),
                component=component,
                code=str(worst.get("code")),
                severity="clear",
                message=f"{component}: recovered ({codes})",
                occurred=now,
            )
        )
    return findings, state
