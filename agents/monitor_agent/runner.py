"""Runs each collector on its interval and spools what it finds.

One task per collector: run the command (no shell; killed at `timeout`)
or read the path, let the collector decide what is new, then write the
reports *and* the collector's new memory in one spool transaction.  A
crash before that commit repeats the sample (same memory, same findings);
a crash after it finds the reports spooled and the memory saying so.

A collector that cannot produce a usable sample (tool missing, timeout,
output it does not recognise) concludes nothing: its standing conditions
stay.  After `FAILURES_BEFORE_REPORT` failures in a row it reports itself
(`COLLECTOR-FAILED`, warning, component `agent/<name>`), because a
collector that silently stopped working would hide real faults; it sends
the `clear` once it works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from monitor_agent.collectors import TYPES as COLLECTOR_TYPES
from monitor_agent.collectors import (
    Collector,
    CollectorError,
    CollectorSpec,
    Sample,
    make_collector,
)
from monitor_agent.conditions import Finding, Observation, Snapshot, track
from monitor_agent.reports import Identity, encode, make_report
from monitor_agent.spool import Spool

__all__ = ["FAILURES_BEFORE_REPORT", "CollectorRunner", "read_tree"]

log = structlog.get_logger("monitor_agent.runner")

FAILURES_BEFORE_REPORT = 3
MAX_FILE = 1 << 20  # sysfs and /proc files are small; this is a safety cap


def _now() -> datetime:
    return datetime.now().astimezone()


def read_tree(root: str, names: tuple[str, ...], depth: int = 3) -> str:
    """`<path>:<first line>` for the files called `names` under `root`.

    The shape of `grep -r . <root>`, which the EDAC parser reads.  Only the
    named files are opened: some sysfs files block or have side effects.
    """
    if not os.path.isdir(root):
        raise CollectorError(f"{root}: no such directory")
    lines: list[str] = []
    base = root.rstrip("/").count("/")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if dirpath.rstrip("/").count("/") - base >= depth:
            dirnames[:] = []
        dirnames.sort()
        for name in sorted(filenames):
            if name not in names:
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    value = f.readline().strip()
            except OSError:
                continue  # a counter that vanished mid-walk (module unloaded)
            lines.append(f"{path}:{value}")
    return "\n".join(lines) + ("\n" if lines else "")


class CollectorRunner:
    def __init__(
        self,
        spec: CollectorSpec,
        spool: Spool,
        identity: Identity,
        on_spooled: Callable[[], None] = lambda: None,
        *,
        clock: Callable[[], datetime] = _now,
        collector: Collector | None = None,
    ) -> None:
        self.spec = spec
        self.spool = spool
        self.identity = identity
        self.on_spooled = on_spooled
        self.clock = clock
        self.collector = collector or make_collector(spec, identity.serial)
        self.memory_key = f"collector:{spec.name}"
        self.health_key = f"health:{spec.name}"

    # -- sampling ------------------------------------------------------------------

    async def sample(self) -> Sample:
        if self.spec.command is not None:
            return await self._run_command(self.spec.command)
        assert self.spec.path is not None
        return await asyncio.to_thread(self._read_path, self.spec.path)

    def _read_path(self, path: str) -> Sample:
        if os.path.isdir(path):
            return Sample(read_tree(path, COLLECTOR_TYPES[self.spec.type].dir_files))
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return Sample(f.read(MAX_FILE))
        except OSError as exc:
            raise CollectorError(f"{path}: {exc.strerror or exc}") from None

    async def _run_command(self, command: tuple[str, ...]) -> Sample:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # The C locale: dates, decimal points and messages as parsed.
                env={**os.environ, "LC_ALL": "C"},
            )
        except OSError as exc:
            raise CollectorError(f"{command[0]}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self.spec.timeout.total_seconds()):
                out, err = await proc.communicate()
        except TimeoutError:
            raise CollectorError(
                f"{command[0]} timed out after {self.spec.timeout.total_seconds():g}s"
            ) from None
        finally:
            if proc.returncode is None:  # timed out, or the agent is stopping
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(proc.wait())
        return Sample(
            out.decode("utf-8", "replace"), proc.returncode, err.decode("utf-8", "replace")
        )

    # -- one round -------------------------------------------------------------------

    def _health(self, failures: int, error: str) -> Snapshot:
        component = f"agent/{self.spec.name}"
        observations: tuple[Observation, ...] = ()
        if failures >= FAILURES_BEFORE_REPORT:
            observations = (
                Observation(
                    "failing",
                    component,
                    "COLLECTOR-FAILED",
                    "warning",
                    f"collector {self.spec.name} ({self.spec.source}) failed "
                    f"{failures} times in a row: {error}",
                ),
            )
        return Snapshot(observations, frozenset({component}))

    async def run_once(self) -> list[Finding]:
        """Sample, evaluate, spool.  Returns what was reported."""
        now = self.clock()
        memory: Mapping[str, Any] = (
            await asyncio.to_thread(self.spool.get_state, self.memory_key) or {}
        )
        health: Mapping[str, Any] = (
            await asyncio.to_thread(self.spool.get_state, self.health_key) or {}
        )
        failures = int(health.get("failures", 0))
        error = ""
        try:
            sample = await self.sample()
            findings, kept = self.collector.evaluate(sample, memory, now)
            failures = 0
        except CollectorError as exc:
            findings, kept = [], dict(memory)
            failures += 1
            error = str(exc)
            log.warning(
                "collector failed", collector=self.spec.name, failures=failures, error=error
            )
        except Exception as exc:  # a parser bug on odd input: a failure, not a crash
            findings, kept = [], dict(memory)
            failures += 1
            error = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("collector crashed", collector=self.spec.name, failures=failures)
        standing = health.get("conditions", {})
        health_findings, conditions = track(
            "agent",
            self.identity.serial,
            standing if isinstance(standing, dict) else {},
            self._health(failures, error),
            now,
        )
        findings = [*findings, *health_findings]
        new_health = {"failures": failures, "conditions": conditions}
        if not findings and kept == memory and new_health == health:
            return []  # nothing changed: spare the disk a commit
        reports = [make_report(self.identity, f) for f in findings]
        await asyncio.to_thread(
            self.spool.add,
            [(r.id, encode(r)) for r in reports],
            {self.memory_key: kept, self.health_key: new_health},
        )
        for report in reports:
            log.info(
                "report spooled",
                collector=self.spec.name,
                id=report.id,
                severity=report.severity,
                component=report.component,
                code=report.code,
            )
        if reports:
            self.on_spooled()
        return findings

    async def run(self) -> None:
        """Every `interval` until cancelled (the first round at once)."""
        interval = self.spec.interval.total_seconds()
        while True:
            try:
                await self.run_once()
            except (OSError, sqlite3.Error) as exc:  # the spool itself failed
                log.error("collector round failed", collector=self.spec.name, error=str(exc))
            await asyncio.sleep(interval)
