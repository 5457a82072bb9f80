"""Agent liveness (SPEC 3.2) with several daemons on one PostgreSQL database.

With an MQTT shared subscription each heartbeat reaches one instance of N,
so no instance's own messages tell whether an agent is alive: the
`heartbeats` table does.  These tests run three in-process daemons on one
database, each with its own `HeartbeatTracker` on its own simulated clock
(all set to the same instants), and feed heartbeats and statuses to the
trackers directly, as the MQTT listener does.  The last test runs one
tracker on SQLite, as before scale-out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import SimulatedClock
from monitor.heartbeats import HeartbeatTracker
from monitor.timefmt import rfc3339
from tests.support import mosquitto as support
from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.postgres import pg_server, pg_url  # noqa: F401
from tests.test_mqtt_helpers import Agent as MqttAgent
from tests.test_mqtt_helpers import mqtt_section, mqtt_up, query, until

mosquitto_factory = support.mosquitto_factory

SERIAL = "JPN0012345"  # C-0001, express-5x9
OTHER = "JPN0099999"  # C-0002
START = "2026-11-20T10:00:00+09:00"  # a Friday morning: in service hours
T0 = datetime.fromisoformat(START)


@dataclass
class Node:
    """One daemon instance and its tracker (what its MQTT listener runs)."""

    d: RunningDaemon
    tracker: HeartbeatTracker
    task: asyncio.Task[None]

    @property
    def clock(self) -> SimulatedClock:
        clock = self.d.rt.clock
        assert isinstance(clock, SimulatedClock)
        return clock

    async def heartbeat(self, serial: str = SERIAL, interval: float = 60) -> None:
        await self.tracker.heartbeat(serial, interval, self.clock.now())

    async def status(self, online: bool, serial: str = OTHER) -> None:
        await self.tracker.status(serial, online, self.clock.now())


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path, db_url: str | None, n: int, grace: float = 0.0
) -> AsyncIterator[list[Node]]:
    async with contextlib.AsyncExitStack() as stack:
        out: list[Node] = []
        for i in range(n):
            cfg = write_config(tmp_path, clock_start=START, db_url=db_url, name=f"m{i}.toml")
            text = cfg.read_text().replace('instance = "test-1"', f'instance = "test-{i + 1}"')
            cfg.write_text(text)
            d = await stack.enter_async_context(running(cfg))
            tracker = HeartbeatTracker(d.rt, grace=grace)
            await tracker.load()
            node = Node(d, tracker, asyncio.create_task(tracker.run()))
            node.clock.set(T0)
            tracker.link_up()
            out.append(node)
        try:
            yield out
        finally:
            for node in out:
                node.task.cancel()
            await asyncio.gather(*(node.task for node in out), return_exceptions=True)


async def at(ns: list[Node], when: datetime) -> None:
    """Set every instance's clock to `when`; return once every tracker has
    looked at the table at that time or later (the jump wakes them)."""
    for node in ns:
        node.clock.set(when)
    target = when.timestamp()

    async def checked() -> bool:
        return all(
            node.tracker.checked_at is not None and node.tracker.checked_at >= target for node in ns
        )

    await until(checked, f"every tracker checked at {when}")


async def agent_alarms(node: Node, serial: str = SERIAL) -> list[tuple[Any, ...]]:
    return await query(
        node.d,
        "SELECT report_id, severity, format FROM alarms"
        " WHERE device = ? AND code = 'AGENT-SILENT' ORDER BY seq",
        serial,
    )


async def settled(node: Node, n: int, serial: str = SERIAL) -> list[tuple[Any, ...]]:
    """Wait for `n` AGENT-SILENT alarms of `serial` and an empty outbox."""

    async def check() -> list[tuple[Any, ...]]:
        rows = await agent_alarms(node, serial)
        assert len(rows) <= n, rows
        owed = await query(node.d, "SELECT count(*) FROM agent_outbox")
        return rows if len(rows) == n and owed == [(0,)] else []

    rows: list[tuple[Any, ...]] = await until(check, f"{n} AGENT-SILENT alarms of {serial}")
    return rows


async def incidents(node: Node) -> list[tuple[Any, ...]]:
    return await query(node.d, "SELECT id, code, severity, recovered_at FROM incidents ORDER BY id")


async def last_seen(node: Node, serial: str = SERIAL) -> float:
    [(seen,)] = await query(node.d, "SELECT last_seen FROM heartbeats WHERE serial = ?", serial)
    return float(seen)


def decided(ns: list[Node]) -> int:
    return sum(node.tracker.decided for node in ns)


async def duplicates(ns: list[Node]) -> float:
    """Alarms the pipelines recognised as already stored: a change
    announced twice (or decided twice with the same id) shows here."""
    return sum([await node.d.metric("monitor_alarms_duplicate_total") for node in ns])


async def gauges_are(ns: list[Node], silent: int) -> None:
    """Every instance's `monitor_agents_silent`, as its tracker set it (not
    the /metrics scrape, which reads the table itself)."""

    async def check() -> bool:
        values = [
            node.d.rt.metrics.registry.get_sample_value("monitor_agents_silent") for node in ns
        ]
        return values == [silent] * len(ns)

    await until(check, f"monitor_agents_silent == {silent} on every instance")


async def test_heartbeats_through_any_instance_one_silence_one_clear(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with nodes(tmp_path, pg_url, 3) as ns:
        # Heartbeats every 100 s (interval 60: overdue after 180 s), through
        # instances 0 and 1 in turn.  Each of those hears one every 200 s,
        # and instance 2 never hears any: alone, each would call it silent.
        when = T0
        for k in range(6):
            await ns[k % 2].heartbeat()
            when += timedelta(seconds=100)
            await at(ns, when)
        assert await agent_alarms(ns[0]) == []
        assert decided(ns) == 0
        assert await query(ns[0].d, "SELECT count(*) FROM agent_outbox") == [(0,)]

        # Heartbeats stop: every tracker reaches the deadline, one decides.
        due = await last_seen(ns[2]) + 180
        await at(ns, datetime.fromtimestamp(due + 1, UTC))
        assert decided(ns) == 1
        [silent] = await settled(ns[2], 1)
        assert silent == (f"agent-silent:{SERIAL}:{rfc3339(due)}", "major", "heartbeat")
        assert [i[1:3] for i in await incidents(ns[1])] == [("AGENT-SILENT", "major")]
        await gauges_are(ns, 1)
        # Later looks (a jump, the shared-store polls) find it silent already.
        await at(ns, datetime.fromtimestamp(due + 600, UTC))
        assert decided(ns) == 1

        # One heartbeat, through the instance that never heard of the agent.
        await ns[2].heartbeat()
        assert decided(ns) == 2
        rows = await settled(ns[0], 2)
        assert rows[1][0].startswith(f"agent-back:{SERIAL}:") and rows[1][1] == "clear"
        [incident] = await incidents(ns[0])
        assert incident[3] is not None  # recovered
        await gauges_are(ns, 0)
        assert await duplicates(ns) == 0
        assert len(await agent_alarms(ns[0])) == 2


async def test_status_delivered_to_every_instance_decides_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    # `status/+` is not a shared subscription: every instance gets every
    # status message, at about the same time.
    async with nodes(tmp_path, pg_url, 3) as ns:
        await asyncio.gather(*(node.status(True) for node in ns))
        assert decided(ns) == 0
        await asyncio.gather(*(node.status(False) for node in ns))
        assert decided(ns) == 1
        [silent] = await settled(ns[0], 1, OTHER)
        assert silent[0].startswith(f"agent-silent:{OTHER}:") and silent[1:] == (
            "major",
            "status",
        )
        await gauges_are(ns, 1)
        # The retained `offline` replayed to each on a resubscribe: nothing.
        await asyncio.gather(*(node.status(False) for node in ns))
        assert decided(ns) == 1
        await asyncio.gather(*(node.status(True) for node in ns))
        assert decided(ns) == 2
        rows = await settled(ns[1], 2, OTHER)
        assert rows[1][0].startswith(f"agent-back:{OTHER}:") and rows[1][1] == "clear"
        await gauges_are(ns, 0)
        assert await duplicates(ns) == 0
        [incident] = await incidents(ns[2])
        assert incident[1] == "AGENT-SILENT" and incident[3] is not None


async def test_instance_finds_deadlines_other_instances_stored(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    # Instance 0 hears the agent but its broker link is down (it decides
    # nothing); instance 1 never hears it and is not woken (no clock jump):
    # it finds the agent in the table on its own and declares it silent.
    async with nodes(tmp_path, pg_url, 2) as ns:
        ns[0].tracker.link_down()
        await at(ns[1:], T0)
        await ns[0].heartbeat(interval=0.5)  # overdue 1.5 s from now

        async def decided_by_1() -> bool:
            return ns[1].tracker.decided == 1

        await until(decided_by_1, "instance 1 declares the agent silent")
        [silent] = await settled(ns[1], 1)
        assert silent[0].startswith(f"agent-silent:{SERIAL}:")
        assert ns[0].tracker.decided == 0


async def test_orphaned_outbox_row_is_taken_over_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    # An instance stored "went silent" and died before announcing it: the
    # outbox row stays.  The others take it over once it stayed pending;
    # the alarm is stored once, then the row is gone.
    async with nodes(tmp_path, pg_url, 3) as ns:
        for node in ns:
            node.tracker.orphan_after = 0.3
            node.tracker.sweep_seconds = 0.1

        def owe(conn: Any) -> None:
            conn.execute(
                "INSERT INTO heartbeats (serial, last_seen, interval, status, silent_since)"
                " VALUES (?, 1.0e9, 60, 'online', 1.0e9)",
                (SERIAL,),
            )
            conn.execute(
                "INSERT INTO agent_outbox (serial, kind, at, format, message, received)"
                " VALUES (?, 'silent', 1.0e9, 'heartbeat', 'x', 1.0e9)",
                (SERIAL,),
            )

        await ns[0].d.rt.store.write(owe)
        [silent] = await settled(ns[0], 1)
        assert silent[0] == f"agent-silent:{SERIAL}:2001-09-09T01:46:40.000+00:00"
        assert decided(ns) == 0


async def test_sqlite_one_tracker_as_before(tmp_path: Path) -> None:
    async with nodes(tmp_path, None, 1) as ns:
        [node] = ns
        assert not node.tracker.shared
        await node.heartbeat()
        due = await last_seen(node) + 180
        await at(ns, datetime.fromtimestamp(due - 60, UTC))  # two intervals: not yet
        assert await agent_alarms(node) == [] and node.tracker.decided == 0
        await at(ns, datetime.fromtimestamp(due + 1, UTC))
        [silent] = await settled(node, 1)
        assert silent[0] == f"agent-silent:{SERIAL}:{rfc3339(due)}"
        await gauges_are(ns, 1)
        await node.heartbeat()
        rows = await settled(node, 2)
        assert rows[1][1] == "clear"
        await gauges_are(ns, 0)

        await node.status(False, SERIAL)
        await node.status(False, SERIAL)  # a replay: nothing
        rows = await settled(node, 3)
        assert rows[2][1:] == ("major", "status")
        assert node.tracker.decided == 3

        # Nothing is awaited now (the agent is silent): no deadline, no
        # polling on a store of our own; it sleeps until woken.
        passes = node.tracker.passes
        await asyncio.sleep(1.5)
        assert node.tracker.passes == passes


async def offline_since(node: Node, serial: str = OTHER) -> float | None:
    [(since,)] = await query(
        node.d, "SELECT offline_since FROM heartbeats WHERE serial = ?", serial
    )
    return None if since is None else float(since)


async def test_offline_grace_on_several_instances_decides_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    # `[mqtt] offline_grace = "60s"`: every instance gets every status; the
    # first stores the pending `offline`, and when its grace is over every
    # tracker finds it due: one decides.
    async with nodes(tmp_path, pg_url, 2, grace=60) as ns:
        await asyncio.gather(*(node.status(True) for node in ns))

        # A flap: offline, online 10 s later.  Nothing at all.
        await asyncio.gather(*(node.status(False) for node in ns))
        first = await offline_since(ns[0])
        assert first is not None and decided(ns) == 0
        await at(ns, datetime.fromtimestamp(first + 10, UTC))
        await asyncio.gather(*(node.status(True) for node in ns))
        assert await offline_since(ns[1]) is None
        await at(ns, datetime.fromtimestamp(first + 600, UTC))
        assert decided(ns) == 0 and await agent_alarms(ns[0], OTHER) == []

        # A heartbeat within the grace (through one instance) cancels too.
        await asyncio.gather(*(node.status(False) for node in ns))
        assert await offline_since(ns[0]) is not None
        await ns[1].heartbeat(OTHER, interval=600)
        assert await offline_since(ns[0]) is None
        await at(ns, datetime.fromtimestamp(first + 1200, UTC))
        assert decided(ns) == 0 and await agent_alarms(ns[0], OTHER) == []

        # Offline and nothing for the grace: one AGENT-SILENT, dated the arrival.
        await asyncio.gather(*(node.status(True) for node in ns))
        await asyncio.gather(*(node.status(False) for node in ns))
        arrived = await offline_since(ns[1])
        assert arrived is not None
        await asyncio.gather(*(node.status(False) for node in ns))  # a replay: same arrival
        assert await offline_since(ns[0]) == arrived
        await at(ns, datetime.fromtimestamp(arrived + 59, UTC))
        assert decided(ns) == 0
        await at(ns, datetime.fromtimestamp(arrived + 61, UTC))
        assert decided(ns) == 1
        [silent] = await settled(ns[0], 1, OTHER)
        assert silent == (f"agent-silent:{OTHER}:{rfc3339(arrived)}", "major", "status")
        await gauges_are(ns, 1)
        await at(ns, datetime.fromtimestamp(arrived + 600, UTC))
        assert decided(ns) == 1

        await asyncio.gather(*(node.status(True) for node in ns))
        assert decided(ns) == 2
        rows = await settled(ns[1], 2, OTHER)
        assert rows[1][0].startswith(f"agent-back:{OTHER}:") and rows[1][1] == "clear"
        await gauges_are(ns, 0)
        assert await duplicates(ns) == 0


async def test_offline_grace_paused_while_our_link_is_down(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    # Our link drops (the broker restart that fired the will): nothing is
    # decided meanwhile, and when it returns the pending `offline` gets a
    # full grace from then.
    async with nodes(tmp_path, pg_url, 2, grace=60) as ns:
        await asyncio.gather(*(node.status(False) for node in ns))
        arrived = await offline_since(ns[0])
        assert arrived is not None
        for node in ns:
            node.tracker.link_down()
        for node in ns:
            node.clock.set(datetime.fromtimestamp(arrived + 3600, UTC))
        await asyncio.sleep(0.3)
        assert decided(ns) == 0
        up = arrived + 3600
        for node in ns:
            node.clock.set(datetime.fromtimestamp(up, UTC))
            node.tracker.link_up()
        await at(ns, datetime.fromtimestamp(up + 30, UTC))
        assert decided(ns) == 0
        await at(ns, datetime.fromtimestamp(up + 61, UTC))
        assert decided(ns) == 1
        [silent] = await settled(ns[0], 1, OTHER)
        assert silent[0] == f"agent-silent:{OTHER}:{rfc3339(arrived)}"


async def test_sqlite_offline_grace_wakes_the_tracker(tmp_path: Path) -> None:
    # One tracker on a store of its own sleeps until the next deadline: a
    # pending `offline` (a short real grace, no clock jump) must wake it.
    async with nodes(tmp_path, None, 1, grace=0.5) as ns:
        [node] = ns
        await node.status(False)
        arrived = await offline_since(node)
        assert arrived is not None and node.tracker.decided == 0

        async def decided_once() -> bool:
            return node.tracker.decided == 1

        await until(decided_once, "the pending offline decided")
        [silent] = await settled(node, 1, OTHER)
        assert silent == (f"agent-silent:{OTHER}:{rfc3339(arrived)}", "major", "status")


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
async def test_share_group_sees_retained_status_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    # Two daemons in one share group on a real broker.  An agent's retained
    # Last Will `offline` is there before they start: MQTT 5 sends retained
    # messages on no shared subscription, but `status/+` is not shared, so
    # both get it, and one AGENT-SILENT is stored.
    broker = mosquitto_factory()
    serial = OTHER
    agent = MqttAgent(broker)
    try:
        await agent.publish(f"express/status/{serial}", b"offline", retain=True)
    finally:
        agent.close()
    async with contextlib.AsyncExitStack() as stack:
        ds: list[RunningDaemon] = []
        for i in range(2):
            section = mqtt_section(broker.url, client_id=f"monitor-{i}", share_group="g")
            cfg = write_config(
                tmp_path, clock_start=START, db_url=pg_url, name=f"m{i}.toml", extra=section
            )
            text = cfg.read_text().replace('instance = "test-1"', f'instance = "test-{i + 1}"')
            cfg.write_text(text)
            ds.append(await stack.enter_async_context(running(cfg)))
        for d in ds:
            await mqtt_up(d)

        async def one_alarm() -> list[tuple[Any, ...]]:
            rows = await query(
                ds[0],
                "SELECT report_id, format FROM alarms WHERE device = ? AND code = 'AGENT-SILENT'",
                serial,
            )
            assert len(rows) <= 1, rows
            return rows

        [(report, fmt)] = await until(one_alarm, "the retained offline raised once")
        assert report.startswith(f"agent-silent:{serial}:") and fmt == "status"

        # (Through a shared subscription it would never have arrived.)
        await asyncio.sleep(0.3)
        assert len(await one_alarm()) == 1
        assert sum([await d.metric("monitor_alarms_duplicate_total") for d in ds]) == 0
