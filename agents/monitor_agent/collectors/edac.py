"""EDAC memory error counters under /sys/devices/system/edac/mc.

The runner reads the counter files of a directory `path` into lines of
`<path>:<value>`, the same shape `grep -r . /sys/devices/system/edac/mc`
prints, so either works as the source:

    /sys/devices/system/edac/mc/mc0/ce_count:3
    /sys/devices/system/edac/mc/mc0/ue_count:0
    /sys/devices/system/edac/mc/mc0/dimm2/dimm_ce_count:3
    /sys/devices/system/edac/mc/mc0/dimm2/dimm_label:CPU_SrcID#0_Ha#0_Chan#1_DIMM#0

Counters (corrected errors → `EDAC-CE`, warning; uncorrected → `EDAC-UE`,
critical) are reported when they grow, per DIMM where the driver exposes
DIMMs (`dimm*/` or `rank*/`; component = the DIMM's label, else
`mc0/dimm2`) plus the controller's `*_noinfo_count` (errors it could not
place), else per memory controller (component `mc0`).  Counters only grow
until a reboot resets them: a lower non-zero value holds new errors and is
reported too.  They never send `clear` (an error that happened stays
happened).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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

__all__ = ["INFO", "Controller", "EdacCollector", "observe", "parse_edac"]

INFO = TypeInfo(
    command=None,
    path="/sys/devices/system/edac/mc",
    interval=timedelta(seconds=60),
    options={},
    dir_files=(
        "ce_count",
        "ue_count",
        "ce_noinfo_count",
        "ue_noinfo_count",
        "dimm_ce_count",
        "dimm_ue_count",
        "dimm_label",
    ),
)

_LINE = re.compile(r"(?:^|/)(mc\d+)/(?:((?:dimm|rank)\d+)/)?([a-z_]+):(.*)$")


@dataclass
class Dimm:
    label: str = ""
    ce: int | None = None
    ue: int | None = None


@dataclass
class Controller:
    name: str  # mc0
    ce: int | None = None
    ue: int | None = None
    ce_noinfo: int | None = None
    ue_noinfo: int | None = None
    dimms: dict[str, Dimm] = field(default_factory=dict)


def _count(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_edac(text: str) -> list[Controller]:
    """`<path>:<value>` lines → controllers.  Raises CollectorError when none."""
    found: dict[str, Controller] = {}
    for line in text.splitlines():
        m = _LINE.search(line.strip())
        if m is None:
            continue
        mc = found.setdefault(m[1], Controller(m[1]))
        name, value = m[3], m[4]
        if m[2] is not None:
            dimm = mc.dimms.setdefault(m[2], Dimm())
            if name == "dimm_label":
                dimm.label = value.strip()
            elif name == "dimm_ce_count":
                dimm.ce = _count(value)
            elif name == "dimm_ue_count":
                dimm.ue = _count(value)
        elif name in ("ce_count", "ue_count", "ce_noinfo_count", "ue_noinfo_count"):
            setattr(mc, name.removesuffix("_count"), _count(value))
    if not found:
        raise CollectorError("no EDAC memory controller (mc*/) counters found")
    return [found[k] for k in sorted(found, key=lambda n: int(n[2:]))]


def _counters(
    out: list[Observation], component: str, where: str, ce: int | None, ue: int | None
) -> None:
    if ue:
        out.append(
            Observation(
                f"{component}:ue",
                component,
                "EDAC-UE",
                "critical",
                f"{where}: {ue} uncorrected memory errors (EDAC)",
                ue,
                False,
            )
        )
    if ce:
        out.append(
            Observation(
                f"{component}:ce",
                component,
                "EDAC-CE",
                "warning",
                f"{where}: {ce} corrected memory errors (EDAC)",
                ce,
                False,
            )
        )


def _dimm_order(name: str) -> tuple[str, int]:
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz")
    return name[: len(name) - len(digits)], int(digits or 0)


def observe(controllers: list[Controller]) -> Snapshot:
    out: list[Observation] = []
    for mc in controllers:
        if mc.dimms:
            for key in sorted(mc.dimms, key=_dimm_order):
                dimm = mc.dimms[key]
                component = dimm.label or f"{mc.name}/{key}"
                where = f"{component} ({mc.name}/{key})" if dimm.label else component
                _counters(out, component, where, dimm.ce, dimm.ue)
            _counters(
                out, mc.name, f"{mc.name} (not attributed to a DIMM)", mc.ce_noinfo, mc.ue_noinfo
            )
        else:
            _counters(out, mc.name, mc.name, mc.ce, mc.ue)
    return Snapshot(tuple(out), frozenset())


class EdacCollector:
    """`type = "edac"`: memory error counters that grew."""

    def __init__(self, spec: CollectorSpec, serial: str) -> None:
        self.spec = spec
        self.serial = serial

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        require_success(sample)
        snapshot = observe(parse_edac(sample.text))
        return remember("edac", self.serial, memory, snapshot, now, self.spec.min_severity)
