"""Linux md RAID: `/proc/mdstat`.

    md1 : active raid1 sdb2[1](F) sda2[0]
          976629760 blocks super 1.2 [2/1] [U_]
          [=>...................]  recovery =  8.5% (83017088/976629760) finish=80.6min ...

Per array (component = `/dev/<name>`, codes are mdadm's event names, as in
its monitor mails, SPEC 3.3):

| condition | code | severity |
|---|---|---|
| members marked `(F)` | Fail | major (again when more fail) |
| fewer active members than raid disks (`[2/1]`) | DegradedArray | major (again when more go) |
| a rebuild running or queued (`recovery = x%`, `recovery=DELAYED`) | RebuildStarted | info |

When an array listed again has none of these, one `clear` is sent for it.
`resync`, `check` and `repair` are routine (after an unclean shutdown, the
monthly scrub) and report nothing.  An array missing from the file (stopped)
keeps its conditions: nothing is known about it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor_agent.collectors.base import (
    CollectorError,
    CollectorSpec,
    Sample,
    TypeInfo,
    remember,
    require_success,
)
from monitor_agent.conditions import Finding, Observation, Snapshot

__all__ = ["INFO", "MdArray", "MdstatCollector", "Member", "observe", "parse_mdstat"]

INFO = TypeInfo(command=None, path="/proc/mdstat", interval=timedelta(seconds=60), options={})

_HEADER = re.compile(r"^(md[\w/.-]*)\s*:\s*(\S+)\s*(.*)$")
_MEMBER = re.compile(r"^([^\s\[]+)\[(\d+)\]((?:\([A-Za-z]\))*)$")
_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s*\[([U_]+)\]")
_ACTION = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*([\d.]+)%")
_WAITING = re.compile(r"\b(recovery|resync|reshape|check|repair)\s*=\s*(DELAYED|PENDING|REMOTE)")
_LEVEL = re.compile(r"^(raid\d+|linear|multipath|faulty|container)$")


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # sdb2
    index: int
    flags: str = ""  # "F" failed, "S" spare, "W" write-mostly, "R" replacement, …

    @property
    def failed(self) -> bool:
        return "F" in self.flags


@dataclass(frozen=True, slots=True)
class MdArray:
    name: str  # md1, md/data
    state: str  # active, inactive
    level: str = ""  # raid1, raid5, …; "" for inactive arrays
    members: tuple[Member, ...] = ()
    raid_disks: int | None = None
    active_disks: int | None = None
    status: str = ""  # U_
    action: str = ""  # recovery, resync, reshape, check, repair
    progress: float | None = None  # percent; None when DELAYED/PENDING
    read_only: bool = False

    @property
    def device(self) -> str:
        return f"/dev/{self.name}"

    @property
    def failed(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.failed)

    @property
    def missing(self) -> int:
        if self.raid_disks is None or self.active_disks is None:
            return 0
        return max(0, self.raid_disks - self.active_disks)


def _header(name: str, state: str, rest: str) -> MdArray:
    words = rest.split()
    read_only = False
    while words and words[0].startswith("("):
        read_only = read_only or "read-only" in words[0]
        words.pop(0)
    level = ""
    if words and _LEVEL.match(words[0]):
        level = words.pop(0)
    members = []
    for word in words:
        m = _MEMBER.match(word)
        if m is not None:
            flags = "".join(re.findall(r"\(([A-Za-z])\)", m[3]))
            members.append(Member(m[1], int(m[2]), flags))
    return MdArray(name, state, level, tuple(members), read_only=read_only)


def parse_mdstat(text: str) -> list[MdArray]:
    """Every array of /proc/mdstat.  Raises CollectorError if it is not that file."""
    if "Personalities" not in text and not _HEADER.search(text):
        raise CollectorError("not /proc/mdstat (no `Personalities` line)")
    arrays: list[MdArray] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            arrays.append(MdArray(**current))

    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            m = _HEADER.match(line)
            close()
            if m is None:
                current = None
                continue
            head = _header(m[1], m[2], m[3])
            current = {
                "name": head.name,
                "state": head.state,
                "level": head.level,
                "members": head.members,
                "read_only": head.read_only,
            }
            continue
        if current is None:
            continue
        if (s := _STATUS.search(line)) is not None:
            current["raid_disks"], current["active_disks"] = int(s[1]), int(s[2])
            current["status"] = s[3]
        if (a := _ACTION.search(line)) is not None:
            current["action"], current["progress"] = a[1], float(a[2])
        elif (w := _WAITING.search(line)) is not None:
            current["action"], current["progress"] = w[1], None
    close()
    return arrays


def observe(arrays: list[MdArray]) -> Snapshot:
    out: list[Observation] = []
    for md in arrays:
        dev = md.device
        if md.failed:
            names = ", ".join(m.name for m in md.failed)
            out.append(
                Observation(
                    f"{dev}:Fail",
                    dev,
                    "Fail",
                    "major",
                    f"{dev}: failed member(s) {names}",
                    len(md.failed),
                )
            )
        if md.missing:
            out.append(
                Observation(
                    f"{dev}:DegradedArray",
                    dev,
                    "DegradedArray",
                    "major",
                    f"{dev} ({md.level or 'md'}) degraded: {md.active_disks} of {md.raid_disks} "
                    f"members active [{md.status}]",
                    md.missing,
                )
            )
        if md.action == "recovery":
            where = f"{md.progress:g}%" if md.progress is not None else "queued"
            out.append(
                Observation(
                    f"{dev}:RebuildStarted",
                    dev,
                    "RebuildStarted",
                    "info",
                    f"{dev}: rebuild in progress ({where})",
                )
            )
    return Snapshot(tuple(out), frozenset(md.device for md in arrays))


class MdstatCollector:
    """`type = "mdstat"`: degraded or failed arrays, rebuilds, and their recovery."""

    def __init__(self, spec: CollectorSpec, serial: str) -> None:
        self.spec = spec
        self.serial = serial

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        require_success(sample)
        snapshot = observe(parse_mdstat(sample.text))
        return remember("md", self.serial, memory, snapshot, now, self.spec.min_severity)
