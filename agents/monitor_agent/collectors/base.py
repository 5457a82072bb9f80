"""Types shared by the collectors and the runner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from monitor_agent.conditions import Finding

__all__ = ["Collector", "CollectorError", "CollectorSpec", "Sample", "TypeInfo"]


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
