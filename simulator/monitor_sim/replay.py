"""`monitor-sim replay`: send a trace over the real channels, then check.

Records are sent in batches of nearby times.  Within a batch, different
devices go concurrently and one device's reports in trace order (a fault
and its clear must not swap).  `--speed X` maps trace time to wall time
(0: no waiting at all).  With `--drive-clock`, each batch first sets the
daemon's simulated clock to the batch's trace time, and the expectations'
checkpoints (just before and after each due time) stop the replay to look
at incident states; a week then replays in seconds.

A sender that gets no definite answer (a timeout, 421, 451, 503, NAK busy)
tries again like an agent would; a definite refusal (400, 5xx, NAK
invalid) is final.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor_sim import checks
from monitor_sim.api import Api, ApiError
from monitor_sim.channels import Endpoints, open_pool
from monitor_sim.checks import Check
from monitor_sim.clients import Outcome, Pool
from monitor_sim.expect import first_copies
from monitor_sim.trace import Record, Trace
from monitor_sim.wire import render

RETRIES = 3
RETRY_PAUSE = 0.5
MAX_QUANTUM = 60.0  # trace seconds; generators keep 180 s clear of window edges
SETTLE = 20.0  # seconds to wait for the daemon to catch up before checking


@dataclass
class ReplayOptions:
    speed: float = 1.0
    drive_clock: bool = False
    connections: int = 8
    settle: float = SETTLE
    on_progress: Callable[[int], None] | None = None  # reports done so far


@dataclass
class ReplayResult:
    sent: int = 0
    acked: int = 0
    refused: int = 0
    failed: int = 0
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def batches(records: Sequence[Record], quantum: float) -> list[list[int]]:
    """Indexes of records grouped into runs spanning less than `quantum`."""
    out: list[list[int]] = []
    first = 0.0
    for i, rec in enumerate(records):
        if not out or rec.at - first >= quantum:
            out.append([])
            first = rec.at
        out[-1].append(i)
    return out


class Replayer:
    def __init__(self, trace: Trace, ep: Endpoints, opts: ReplayOptions) -> None:
        self.trace = trace
        self.ep = ep
        self.opts = opts
        self.outcomes: list[Outcome | None] = [None] * len(trace.records)
        self.pools: dict[str, Pool] = {}
        self.result = ReplayResult()

    async def _send_one(self, index: int) -> None:
        rec = self.trace.records[index]
        wire = render(rec, self.ep.targets)
        pool = self.pools[rec.channel]
        out = Outcome(False, "not sent")
        for attempt in range(RETRIES + 1):
            out = await pool.send(wire)
            if out.ok or out.refused:
                break
            await asyncio.sleep(RETRY_PAUSE * (attempt + 1))
        self.outcomes[index] = out
        res = self.result
        res.sent += 1
        res.acked += out.ok
        res.refused += out.refused
        res.failed += not out.ok and not out.refused
        if self.opts.on_progress is not None:
            self.opts.on_progress(res.sent)

    async def _send_batch(self, batch: list[int]) -> None:
        by_device: dict[str, list[int]] = {}
        for i in batch:
            by_device.setdefault(self.trace.records[i].device, []).append(i)

        async def in_order(indexes: list[int]) -> None:
            for i in indexes:
                await self._send_one(i)

        await asyncio.gather(*(in_order(ix) for ix in by_device.values()))

    async def run(self, api: Api | None) -> ReplayResult:
        trace, opts = self.trace, self.opts
        channels = {r.channel for r in trace.records}
        missing = self.ep.missing(channels)
        if missing:
            raise ValueError("give " + ", ".join(missing))
        if opts.drive_clock and api is None:
            raise ValueError("--drive-clock needs --api and an admin --token")
        marks = await api.marks() if api is not None else {}
        stale = await self._stale_fingerprints(api) if api is not None else []
        for ch in channels:
            self.pools[ch] = open_pool(ch, self.ep, opts.connections)
        quantum = 1.0 if opts.speed <= 0 else min(MAX_QUANTUM, max(0.001, 0.05 * opts.speed))
        points = list(trace.expect.get("checkpoints", [])) if opts.drive_clock else []
        t0 = time.monotonic()
        try:
            for batch in batches(trace.records, quantum):
                at = trace.records[batch[0]].at
                while points and points[0]["at"] <= at:
                    assert api is not None
                    await self._checkpoint(api, points.pop(0), marks, t0)
                await self._wait_until(t0, at)
                if opts.drive_clock:
                    assert api is not None
                    await api.set_clock(trace.time_of(at))
                await self._send_batch(batch)
            for point in points:
                assert api is not None
                await self._checkpoint(api, point, marks, t0)
            if opts.drive_clock:
                assert api is not None
                await api.set_clock(trace.time_of(trace.end))
        finally:
            await asyncio.gather(*(p.close() for p in self.pools.values()))
        self.result.seconds = time.monotonic() - t0
        if api is not None:
            await self._final_checks(api, marks, stale)
        else:
            self.result.checks.append(Check("daemon checks", True, "skipped: no --api"))
        self.result.checks[:0] = checks.check_acks(trace, self.outcomes)
        return self.result

    async def _wait_until(self, t0: float, at: float) -> None:
        if self.opts.speed > 0:
            delay = t0 + at / self.opts.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _checkpoint(
        self, api: Api, point: dict[str, Any], marks: dict[str, int], t0: float
    ) -> None:
        await self._wait_until(t0, float(point["at"]))
        when = self.trace.time_of(float(point["at"]))
        await api.set_clock(when)
        off: list[str] = []
        deadline = time.monotonic() + self.opts.settle
        while True:
            ok, off = checks.check_checkpoint(point, await api.incidents_since(marks["incidents"]))
            if ok or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        n = len(point["deferred"]) + len(point["raised"])
        label = (
            f"at {when:%a %d %H:%M}: {len(point['deferred'])} deferred, "
            f"{len(point['raised'])} raised"
        )
        self.result.checks.append(
            Check(f"checkpoint {label}", not off and n > 0, "; ".join(off[:3]))
        )

    async def _stale_fingerprints(self, api: Api) -> list[str]:
        """Fingerprints of the trace that already have an unresolved incident:
        new alarms fold into it, so the trace's incident model cannot hold."""
        mine = {r.fingerprint for r in self.trace.records}
        stale = []
        for state in ("deferred", "open", "notified", "acknowledged"):
            async for inc in api.since("/api/v1/incidents", "id", 0, state=state):
                if inc["fingerprint"] in mine:
                    stale.append(inc["fingerprint"])
        return stale

    async def _final_checks(self, api: Api, marks: dict[str, int], stale: list[str]) -> None:
        trace = self.trace
        want = {(r.serial, r.id) for r in first_copies(trace.records)}
        deadline = time.monotonic() + self.opts.settle
        alarms: list[Any] = []
        while True:  # MQTT acknowledgements come from the broker: let the daemon drain
            alarms = await api.alarms_since(marks["alarms"])
            if want <= {(a["device"], a["id"]) for a in alarms} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        res = self.result.checks
        res += checks.check_storage(trace, alarms)
        quarantine = None
        if "quarantine" in marks:
            quarantine = await api.quarantine_since(marks["quarantine"])
        res += checks.check_quarantine(trace, quarantine)
        if stale:
            res.append(
                Check(
                    "incidents",
                    True,
                    f"skipped: {len(stale)} of the trace's "
                    "fingerprints had unresolved incidents before the replay "
                    "(start from a fresh database, or resolve them)",
                )
            )
        elif self.opts.drive_clock:
            incidents = await self._settled_incidents(api, marks)
            notices = {}
            for inc in incidents:
                try:
                    notices[inc["id"]] = (await api.incident(inc["id"]))["notices"]
                except ApiError:
                    notices[inc["id"]] = []
            res += checks.check_incidents(trace, incidents, notices)
        else:
            res += checks.check_incidents_structural(
                alarms, await api.incidents_since(marks["incidents"])
            )

    async def _settled_incidents(self, api: Api, marks: dict[str, int]) -> list[Any]:
        """Incidents once the scheduler has raised what is due at the end."""
        want = self.trace.expect.get("incidents", {})
        deadline = time.monotonic() + self.opts.settle
        while True:
            incidents: list[Any] = await api.incidents_since(marks["incidents"])
            states = {i["fingerprint"]: i["state"] for i in incidents}
            due = [fp for fp, e in want.items() if e["state"] == "raised" and e["due_at"]]
            if all(states.get(fp) in checks.RAISED for fp in due):
                return incidents
            if time.monotonic() > deadline:
                return incidents
            await asyncio.sleep(0.1)


async def replay(trace: Trace, ep: Endpoints, opts: ReplayOptions) -> ReplayResult:
    if ep.api is None:
        return await Replayer(trace, ep, opts).run(None)
    async with Api(ep.api, ep.token) as api:
        return await Replayer(trace, ep, opts).run(api)
