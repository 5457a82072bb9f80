"""Types shared by the collectors and the runner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from monitor_agent.conditions import Finding, Snapshot, track

__all__ = [
    "Collector",
    "CollectorError",
    "CollectorSpec",
    "Sample",
    "TypeInfo",
    "remember",
    "require_output",
    "require_success",
]


class CollectorError(Exception):
    """The sample cannot be used (the tool failed, the text is not what we parse).

    Nothing is concluded from such a sample: standing conditions stay, and
    nothing is cleared.
    """


@dataclass(frozen=True, slots=True)
class Sample:
    """What the runner got from a collector's source."""

    text: str
    status: int | None = None  # exit status of a command; None for a path
    stderr: str = ""


@dataclass(frozen=True, slots=True)
class CollectorSpec:
    """One `[collectors.<name>]` table, validated (see monitor_agent.config)."""

    name: str
    type: str
    command: tuple[str, ...] | None
    path: str | None
    interval: timedelta
    timeout: timedelta
    min_severity: str = "info"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return " ".join(self.command) if self.command else str(self.path)


class Collector(Protocol):
    spec: CollectorSpec

    def evaluate(
        self, sample: Sample, memory: Mapping[str, Any], now: datetime
    ) -> tuple[list[Finding], dict[str, Any]]:
        """Findings to report and the memory to keep.  Raises CollectorError."""
        ...


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the config needs to know about a collector type."""

    command: str | None  # default command, or None
    path: str | None  # default path, or None
    interval: timedelta
    options: Mapping[str, str]  # extra keys: name -> "int" | "str" | "zone"
    # A directory path: which file names the runner reads under it.
    dir_files: tuple[str, ...] = ()


def require_success(sample: Sample) -> None:
    """A tool that failed tells us nothing: raise rather than conclude."""
    if sample.status not in (None, 0):
        raise CollectorError(f"exit status {sample.status}: {sample.stderr.strip()[-200:]}")


def require_output(sample: Sample) -> None:
    """For tools that exit non-zero on partial trouble but still print what
    they could read (smartctl, sensors): only empty output is a failure."""
    if not sample.text.strip():
        raise CollectorError(
            f"no output (exit status {sample.status}): {sample.stderr.strip()[-200:]}"
        )


def remember(
    prefix: str,
    serial: str,
    memory: Mapping[str, Any],
    snapshot: Snapshot,
    now: datetime,
    min_severity: str,
) -> tuple[list[Finding], dict[str, Any]]:
    """Compare a snapshot with the conditions remembered so far: the findings
    to report and the memory to keep (the shared tail of every collector)."""
    conditions = memory.get("conditions", {})
    findings, state = track(
        prefix,
        serial,
        conditions if isinstance(conditions, dict) else {},
        snapshot,
        now,
        min_severity,
    )
    return findings, {"conditions": state}
