"""lm-sensors: `sensors -j`.

    {"coretemp-isa-0000": {"Adapter": "ISA adapter",
       "Package id 0": {"temp1_input": 101.0, "temp1_max": 84.0, "temp1_crit": 100.0}},
     "nct6775-isa-0290": {"Adapter": "ISA adapter",
       "fan2": {"fan2_input": 0.0, "fan2_min": 300.0}}}

A reading beyond its limits is a condition (component `<chip>/<feature>`):
over `_crit` → critical, over `_max` → warning (code `SENSOR-<KIND>-HIGH`);
for voltages, fans and currents also under `_lcrit` → critical, under
`_min` → warning (`SENSOR-<KIND>-LOW`).  The same code for both severities,
so the daemon folds a rising reading into one incident and escalates it.
"Beyond" is strict: a reading equal to its limit is still within it.

A limit of exactly 0 is taken as "not set" (many chips report unset limits
as 0; a real 0 limit would be meaningless for these kinds anyway).  When
the reading is back within its limits the component gets its `clear`.
"""

from __future__ import annotations

import json
import math
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
    require_output,
)
from monitor_agent.conditions import Finding, Observation, Snapshot

__all__ = ["INFO", "Reading", "SensorsCollector", "observe", "parse_sensors"]

INFO = TypeInfo(command="sensors -j", path=None, interval=timedelta(seconds=60), options={})

_KINDS: dict[str, tuple[str, str, bool]] = {
    # subfeature prefix: (code word, unit, also check the low limits)
    "temp": ("TEMP", "C", False),
    "in": ("VOLTAGE", "V", True),
    "fan": ("FAN", "RPM", True),
    "curr": ("CURRENT", "A", True),
    "power": ("POWER", "W", False),
    "humidity": ("HUMIDITY", "%", False),
}
_INPUT = re.compile(r"^([a-z]+)(\d*)_input$")


@dataclass(frozen=True, slots=True)
class Reading:
    chip: str
    feature: str  # the label, e.g. "Package id 0", "fan2"
    kind: str  # temp, in, fan, curr, power, humidity
    value: float
    crit: float | None = None
    max: float | None = None
    lcrit: float | None = None
    min: float | None = None

    @property
    def component(self) -> str:
        return f"{self.chip}/{self.feature}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _limit(values: Mapping[str, Any], name: str) -> float | None:
    number = _number(values.get(name))
    return None if number is None or number == 0 else number


def parse_sensors(text: str) -> list[Reading]:
    """`sensors -j` → every reading with an `_input`.  Raises CollectorError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CollectorError(f"sensors output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CollectorError("sensors -j output is not a JSON object")
    readings: list[Reading] = []
    for chip, features in data.items():
        if not isinstance(features, dict):
            continue
        for feature, values in features.items():
            if not isinstance(values, dict):
                continue  # "Adapter": "ISA adapter"
            for key, raw in values.items():
                m = _INPUT.match(key)
                value = _number(raw)
                if m is None or value is None or m[1] not in _KINDS:
                    continue
                prefix = key.removesuffix("_input")
                readings.append(
                    Reading(
                        chip=str(chip),
                        feature=str(feature),
                        kind=m[1],
                        value=value,
                        crit=_limit(values, f"{prefix}_crit"),
                        max=_limit(values, f"{prefix}_max"),
                        lcrit=_limit(values, f"{prefix}_lcrit"),
                        min=_limit(values, f"{prefix}_min"),
                    )
                )
    return readings


def _fmt(value: float) -> str:
    return f"{value:g}"


def observe(readings: list[Reading]) -> Snapshot:
    out: list[Observation] = []
    for r in readings:
        word, unit, low = _KINDS[r.kind]
        comp = r.component
        now = f"{comp}: {_fmt(r.value)} {unit}"
        high_code = f"SENSOR-{word}-HIGH"
        if r.crit is not None and r.value > r.crit:
            out.append(
                Observation(
                    f"{comp}:high",
                    comp,
                    high_code,
                    "critical",
                    f"{now} over its critical limit {_fmt(r.crit)} {unit}",
                )
            )
        elif r.max is not None and r.value > r.max and (r.min is None or r.max > r.min):
            out.append(
                Observation(
                    f"{comp}:high",
                    comp,
                    high_code,
                    "warning",
                    f"{now} over its limit {_fmt(r.max)} {unit}",
                )
            )
        if not low:
            continue
        low_code = f"SENSOR-{word}-LOW"
        if r.lcrit is not None and r.value < r.lcrit:
            out.append(
                Observation(
                    f"{comp}:low",
                    comp,
                    low_code,
                    "critical",
                    f"{now} under its critical limit {_fmt(r.lcrit)} {unit}",
                )
            )
        elif r.min is not None and r.value < r.min and (r.max is None or r.max > r.min):
            out.append(
                Observation(
                    f"{comp}:low",
                    comp,
                    low_code,
                    "warning",
                    f"{now} under its limit {_fmt(r.min)} {unit}",
                )
            )
    return Snapshot(tuple(out), frozenset(r.component for r in readings))


class SensorsCollector:
    """`type = "sensors"`: readings beyond their limits."""

    def __init__(self, spec: CollectorSpec, serial: str) -> None:
        self.spec = spec
        self.serial = serial

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        require_output(sample)
        # sensors exits non-zero when one chip fails to read but still prints
        # the others: use what it printed.
        snapshot = observe(parse_sensors(sample.text))
        return remember("sensor", self.serial, memory, snapshot, now, self.spec.min_severity)
