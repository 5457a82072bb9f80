"""Collectors: one module per fault source, each a pure parser plus a small
`evaluate` that decides what is new against the collector's memory.

The runner (`monitor_agent.runner`) does the I/O — runs the configured
command or reads the path on the collector's interval — and hands the
result to `evaluate` as a `Sample`.  `evaluate` returns the findings to
report and the memory to keep; both are stored in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor_agent.collectors import edac, ipmi, mdstat, sensors, smart
from monitor_agent.collectors.base import (
    Collector,
    CollectorError,
    CollectorSpec,
    Sample,
    TypeInfo,
)

__all__ = [
    "TYPES",
    "Collector",
    "CollectorError",
    "CollectorSpec",
    "Sample",
    "TypeInfo",
    "make_collector",
]

TYPES: Mapping[str, TypeInfo] = {
    "ipmi": ipmi.INFO,
    "smart": smart.INFO,
    "mdstat": mdstat.INFO,
    "edac": edac.INFO,
    "sensors": sensors.INFO,
}

_FACTORIES: Mapping[str, Any] = {
    "ipmi": ipmi.SelCollector,
    "smart": smart.SmartCollector,
    "mdstat": mdstat.MdstatCollector,
    "edac": edac.EdacCollector,
    "sensors": sensors.SensorsCollector,
}


def make_collector(spec: CollectorSpec, serial: str) -> Collector:
    collector: Collector = _FACTORIES[spec.type](spec, serial)
    return collector
