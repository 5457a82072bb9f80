"""`monitor-sim replay` against the real daemon over its real channels:
HTTP, SMTP, a pty dial-up line and (when installed) mosquitto.

The daemon runs in-process on its simulated clock; `--drive-clock` moves
that clock through the trace, so a holiday weekend replays in a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from monitor_sim.channels import Endpoints
from monitor_sim.generate import generate
from monitor_sim.replay import ReplayOptions, ReplayResult, replay
from monitor_sim.scenarios.base import Options
from monitor_sim.simconfig import SimConfig, load_sim_config
from monitor_sim.trace import Trace

from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_serial_pty import PtyLine

HAVE_MOSQUITTO = find_mosquitto() is not None
CLOCK = "2026-11-20T16:30:00+09:00"
FAST = ReplayOptions(speed=0, drive_clock=True, settle=10)


@dataclass
class Rig:
    daemon: RunningDaemon
    sim: SimConfig
    ep: Endpoints
    channels: tuple[str, ...]


@contextlib.asynccontextmanager
async def rig(
    tmp: Path, *, serial: bool = True, mqtt: bool = True, clock_start: str | None = CLOCK
) -> AsyncIterator[Rig]:
    """The daemon with SMTP, a serial line on a pty and MQTT (if mosquitto is
    installed) configured, and the simulator's endpoints for them."""
    smtp_port = free_port()
    extra = f'\n[smtp]\nlisten = "127.0.0.1:{smtp_port}"\naccept = ["alarms@monitor.example"]\n'
    channels = ["http", "smtp"]
    async with contextlib.AsyncExitStack() as stack:
        line = None
        if serial:
            line = PtyLine.open()
            stack.callback(line.close)
            extra += f'\n[[serial]]\nport = "{line.path}"\nbaud = 115200\nnumbers = []\n'
            channels.append("serial")
        broker = None
        if mqtt and HAVE_MOSQUITTO:
            broker = stack.enter_context(Mosquitto(tmp / "broker"))
            extra += (
                f'\n[mqtt]\nurl = "{broker.url}"\nclient_id = "sim-test"\n'
                'topic_prefix = "express"\nprotocol = 5\n'
            )
            channels.append("mqtt")
        cfg = write_config(tmp, extra=extra, clock_start=clock_start)
        daemon = await stack.enter_async_context(running(cfg))
        await _ready(daemon)
        ep = Endpoints(
            api=daemon.url,
            token="t-admin",
            smtp=f"127.0.0.1:{smtp_port}",
            mqtt=broker.url if broker else None,
            serial=[line.port] if line else [],
        )
        yield Rig(daemon, load_sim_config(cfg), ep, tuple(channels))


async def _ready(daemon: RunningDaemon) -> None:
    for _ in range(200):
        async with daemon.session.get(daemon.url + "/readyz") as resp:
            if resp.status == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("daemon not ready")


def failed(result: ReplayResult) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]


async def test_weekend_backlog_is_deferred_then_raised_at_tuesdays_window(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        trace = generate(r.sim, "weekend-backlog", 5, Options(channels=r.channels))
        assert {rec.channel for rec in trace.records} == set(r.channels)
        result = await replay(trace, r.ep, FAST)
        assert result.ok, failed(result)
        names = [c.name for c in result.checks]
        assert any("deferred, 0 raised" in n for n in names)  # looked before Tuesday 08:30
        assert any("0 deferred" in n and "raised" in n for n in names)  # and after
        # The daemon agrees, seen directly through its API:
        tuesday = datetime.fromisoformat("2026-11-24T08:30:00+09:00")
        page = await r.daemon.get("/api/v1/incidents?limit=1000")
        deferred = [i for i in page["items"] if i["due_at"]]
        assert deferred, "the weekend's incidents were deferred"
        for inc in deferred:
            assert inc["state"] in ("open", "notified")
            assert datetime.fromisoformat(inc["raised_at"]) >= datetime.fromisoformat(inc["due_at"])
        holiday = [i for i in deferred if i["contract"] == "C-0001"]
        assert holiday and all(datetime.fromisoformat(i["due_at"]) == tuesday for i in holiday)
        assert any(i["after_hours"] for i in page["items"])  # C-0002's critical one, at once


async def test_checks_catch_a_daemon_that_disagrees(tmp_path: Path) -> None:
    """The checks are not vacuous: an expectation the daemon does not meet fails."""
    async with rig(tmp_path, serial=False, mqtt=False) as r:
        trace = generate(r.sim, "weekend-backlog", 5, Options(channels=r.channels))
        incidents: dict[str, Any] = json.loads(json.dumps(trace.expect["incidents"]))
        fp, first = next((k, v) for k, v in incidents.items() if v["due_at"])
        first["due_at"] = "2026-11-25T08:30:00+09:00"  # a day late
        first["count"] += 1
        bent = replace(trace, expect={**trace.expect, "incidents": incidents})
        result = await replay(bent, r.ep, replace(FAST, settle=2))
        bad = {c.name.split(" (")[0] for c in result.checks if not c.ok}
        assert "counts, severities, recoveries" in bad
        assert "deferrals and after-hours raises" in bad
        assert any(fp in c.detail for c in result.checks if not c.ok)


async def test_malformed_mix_refused_and_quarantined_on_every_channel(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        trace = generate(r.sim, "malformed-mix", 3, Options(channels=r.channels))
        result = await replay(trace, r.ep, FAST)
        assert result.ok, failed(result)
        assert result.refused == sum(
            1 for x in trace.records if x.malformed and x.channel != "mqtt"
        )
        assert any(c.name.startswith("damaged reports quarantined") for c in result.checks)


async def test_mail_zoo_stored_as_each_format_maps(tmp_path: Path) -> None:
    async with rig(tmp_path, serial=False, mqtt=False) as r:
        trace = generate(r.sim, "mail-zoo", 4, Options(channels=r.channels))
        result = await replay(trace, r.ep, FAST)
        assert result.ok, failed(result)
        formats = {a["format"] for a in (await r.daemon.get("/api/v1/alarms?limit=100"))["items"]}
        assert formats == {"esmpro", "hp", "ilo", "idrac", "smartd", "mdadm", "express"}


async def test_storm_with_resends_over_every_channel(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        trace = generate(r.sim, "storm", 9, Options(devices=80, channels=r.channels))
        assert any(x.dup for x in trace.records)
        result = await replay(trace, r.ep, FAST)
        assert result.ok, failed(result)
        assert result.acked == len(trace.records)  # resends are acknowledged too


async def test_cli_replay_without_clock_driving(tmp_path: Path) -> None:
    """The command line, as a tester types it; the daemon's own clock decides
    windows, so the incident check is the structural one."""
    async with rig(tmp_path, serial=False, mqtt=False) as r:
        trace_file = tmp_path / "flap.jsonl"
        trace: Trace = generate(r.sim, "flapping", 2, Options(channels=("http", "smtp")))
        with trace_file.open("w", encoding="utf-8") as f:
            trace.write(f)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor_sim.cli",
            "replay",
            str(trace_file),
            "--api",
            r.daemon.url,
            "--token",
            "t-admin",
            "--smtp",
            r.ep.smtp or "",
            "--speed",
            "0",
            "--settle",
            "5",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out, err)
        result = json.loads(out)
        assert result["ok"] and result["acked"] == len(trace.records)
        assert any("one incident per covered fingerprint" in c["name"] for c in result["checks"])


async def test_replay_needs_a_target_for_each_channel(tmp_path: Path) -> None:
    async with rig(tmp_path, serial=False, mqtt=False) as r:
        trace = generate(r.sim, "normal-day", 1)
        with pytest.raises(ValueError, match="--mqtt"):
            await replay(trace, r.ep, FAST)
