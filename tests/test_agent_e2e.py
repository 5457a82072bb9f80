"""The agent against a real mosquitto and the real daemon (in-process), end
to end: SEL lines in a file → collector → spool → channel → daemon → alarms.

What it shows (issue 8): new SEL lines become alarms once; faults while the
broker is down all arrive, in order, after it restarts; a SIGKILLed agent
makes the daemon raise AGENT-SILENT; with the broker down past `after`,
reports arrive by mail, and by the emulated modem; signed reports are
accepted by a daemon that requires signatures (and a wrong key is not).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import tty
from pathlib import Path
from typing import Any

import pytest
from monitor_agent.agent import send_once
from monitor_agent.conditions import Finding
from monitor_agent.reports import Identity, make_report

from tests.support import mosquitto as support
from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_agent_helpers import (
    FAST_DTE,
    NUMBER,
    SERIAL,
    MasterPort,
    agent_toml,
    load,
    running_agent,
    sel_collector,
    sel_line,
    until,
)

mosquitto_broker = support.mosquitto_broker

CLOCK_START = "2026-11-20T10:00:00+09:00"  # a Friday, in service hours


def _listener(name: str) -> pytest.MarkDecorator:
    missing = importlib.util.find_spec(f"monitor.listeners.{name}") is None
    return pytest.mark.skipif(
        missing,
        reason=f"monitor/listeners/{name}.py (the daemon's {name} listener) is not there yet",
    )


pytestmark = [
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
    _listener("mqtt"),
]


def daemon_config(
    tmp: Path, broker: Mosquitto, *, smtp_port: int | None = None, serial_path: str | None = None
) -> Path:
    extra = (
        f'\n[mqtt]\nurl = "{broker.url}"\nclient_id = "monitor-e2e"\n'
        'topic_prefix = "express"\nprotocol = 5\n'
    )
    if smtp_port is not None:
        extra += (
            f'\n[smtp]\nlisten = "127.0.0.1:{smtp_port}"\naccept = ["alarms@monitor.example"]\n'
        )
    if serial_path is not None:
        extra += (
            f'\n[[serial]]\nport = "{serial_path}"\nbaud = 9600\n'
            f'numbers = ["{NUMBER}"]\nidle_timeout = "30s"\n'
        )
    return write_config(tmp, clock_start=CLOCK_START, extra=extra)


async def listener_up(d: RunningDaemon, name: str) -> None:
    async def up() -> bool:
        return d.rt.listeners.get(name) is True

    await until(up, f"daemon listener {name} up")


async def alarms(d: RunningDaemon, serial: str = SERIAL) -> list[dict[str, Any]]:
    """Stored alarms of a device, oldest first."""
    body = await d.get(f"/api/v1/alarms?device={serial}&limit=1000")
    items: list[dict[str, Any]] = body["items"]
    return sorted(items, key=lambda a: a["seq"])


async def wait_alarms(
    d: RunningDaemon, n: int, serial: str = SERIAL, code: str | None = None
) -> list[dict[str, Any]]:
    """Wait for exactly `n` alarms (of `code`; else the agent's own reports,
    leaving out the daemon's AGENT-SILENT ones: a broker restart publishes
    the agent's will, and the daemon rightly says so)."""

    def wanted(a: dict[str, Any]) -> bool:
        return bool(a["code"] == code if code is not None else a["code"] != "AGENT-SILENT")

    async def check() -> list[dict[str, Any]]:
        got = [a for a in await alarms(d, serial) if wanted(a)]
        assert len(got) <= n, got
        return got if len(got) == n else []

    found: list[dict[str, Any]] = await until(check, f"{n} alarms of {serial}")
    return found


async def quarantined(d: RunningDaemon) -> list[tuple[str, str]]:
    def q(conn: Any) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in conn.execute("SELECT channel, reason FROM quarantine ORDER BY seq")
        ]

    result: list[tuple[str, str]] = await d.rt.store.read(q)
    return result


async def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(lines))


async def spooled(agent: Any, n: int) -> None:
    async def check() -> bool:
        return bool(await asyncio.to_thread(agent.spool.count) == n)

    await until(check, f"{n} reports spooled")


async def baseline(agent: Any) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(agent.spool.get_state, "collector:ipmi") is not None

    await until(check, "the SEL baseline")


def sel_id(n: int) -> str:
    return f"sel:{SERIAL}:{n:x}:20261120T10{n // 60 % 60:02d}{n % 60:02d}"


# -- MQTT -------------------------------------------------------------------------------------


async def test_new_sel_lines_become_alarms_once(
    tmp_path: Path, mosquitto_broker: Mosquitto
) -> None:
    sel = tmp_path / "sel.txt"
    sel.write_text(sel_line(1, "Presence detected"))  # history before the agent ran
    agent_cfg = load(
        agent_toml(tmp_path, mqtt_url=mosquitto_broker.url, collectors=sel_collector(sel))
    )
    async with running(daemon_config(tmp_path, mosquitto_broker)) as d:
        await listener_up(d, "mqtt")
        async with running_agent(agent_cfg) as agent:
            await baseline(agent)
            await append(
                sel,
                sel_line(2, "Failure detected"),
                sel_line(3, "Upper Critical going high", "Temperature CPU1 Temp"),
                sel_line(4, "Upper Critical going high", "Temperature CPU1 Temp", "Deasserted"),
            )
            got = await wait_alarms(d, 3)
            # More rounds over the same SEL find nothing new.
            for _ in range(3):
                assert await agent.runners[0].run_once() == []
            assert await asyncio.to_thread(agent.spool.count) == 0
        assert [(a["id"], a["channel"], a["severity"], a["component"], a["code"]) for a in got] == [
            (sel_id(2), "mqtt", "critical", "PS1 Status", "SEL-FAILURE-DETECTED"),
            (sel_id(3), "mqtt", "critical", "CPU1 Temp", "SEL-UPPER-CRITICAL-GOING-HIGH"),
            (sel_id(4), "mqtt", "clear", "CPU1 Temp", "SEL-UPPER-CRITICAL-GOING-HIGH"),
        ]
        assert got[0]["occurred"].startswith("2026-11-20T10:00:02")
        assert len([a for a in await alarms(d) if a["id"].startswith("sel:")]) == 3
        incidents = {i["component"]: i for i in (await d.get("/api/v1/incidents"))["items"]}
        assert incidents["PS1 Status"]["severity"] == "critical"
        assert incidents["CPU1 Temp"]["recovered_at"] is not None  # the Deasserted clear


async def test_broker_down_while_faults_occur_all_arrive_in_order(
    tmp_path: Path, mosquitto_broker: Mosquitto
) -> None:
    broker = mosquitto_broker
    sel = tmp_path / "sel.txt"
    sel.write_text("")
    agent_cfg = load(agent_toml(tmp_path, mqtt_url=broker.url, collectors=sel_collector(sel)))
    async with running(daemon_config(tmp_path, broker)) as d:
        await listener_up(d, "mqtt")
        async with running_agent(agent_cfg) as agent:
            await baseline(agent)
            await asyncio.to_thread(broker.stop)
            faults = range(0x10, 0x16)
            for n in range(0, len(faults), 2):  # faults keep happening while it is down
                await append(
                    sel,
                    *(
                        sel_line(r, "Failure detected", f"Power Supply PS{r} Status")
                        for r in faults[n : n + 2]
                    ),
                )
                await spooled(agent, n + 2)  # they wait in the spool
            await asyncio.to_thread(broker.start)
            got = await wait_alarms(d, len(faults))
        assert [a["id"] for a in got] == [sel_id(n) for n in faults]
        assert {a["channel"] for a in got} == {"mqtt"}


async def test_sigkilled_agent_raises_agent_silent(
    tmp_path: Path, mosquitto_broker: Mosquitto
) -> None:
    agent_path = agent_toml(tmp_path, mqtt_url=mosquitto_broker.url)
    log = tmp_path / "agent.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "monitor_agent", "run", "-c", str(agent_path)],
                stdout=out,
                stderr=out,
            )

    async with running(daemon_config(tmp_path, mosquitto_broker)) as d:
        await listener_up(d, "mqtt")

        async def status(want: str) -> bool:
            rows = await d.rt.store.read(
                lambda conn: conn.execute(
                    "SELECT status FROM heartbeats WHERE serial = ?", (SERIAL,)
                ).fetchall()
            )
            return [tuple(r) for r in rows] == [(want,)]

        proc = start()
        try:
            await until(lambda: status("online"), "the agent online at the daemon")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            [silent] = await wait_alarms(d, 1, code="AGENT-SILENT")
            assert silent["id"].startswith(f"agent-silent:{SERIAL}:")
            assert (silent["severity"], silent["component"]) == ("major", "agent")
            # Started again: online, and the matching clear.
            proc = start()
            [_, back] = await wait_alarms(d, 2, code="AGENT-SILENT")
            assert (back["severity"], back["component"]) == ("clear", "agent")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0, log.read_text()


async def test_signed_reports_with_send(tmp_path: Path, mosquitto_broker: Mosquitto) -> None:
    """Device SIGNED0001 has a secret at the daemon: its reports must be signed."""
    signed = agent_toml(
        tmp_path, serial_no="SIGNED0001", secret="s3cret", mqtt_url=mosquitto_broker.url
    )
    async with running(daemon_config(tmp_path, mosquitto_broker)) as d:
        await listener_up(d, "mqtt")
        # The real CLI, as an operator tests an installation.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor_agent",
            "send",
            "-c",
            str(signed),
            "--severity",
            "warning",
            "--code",
            "TEST-0001",
            "--component",
            "agent",
            "--message",
            "test report from monitor-agent send",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().startswith("delivered send:SIGNED0001:")
        [stored] = await wait_alarms(d, 1, "SIGNED0001")
        assert (stored["code"], stored["severity"], stored["channel"]) == (
            "TEST-0001",
            "warning",
            "mqtt",
        )
        assert stored["id"] == out.decode().split()[1]

        # The same device with the wrong key: the broker takes it, the daemon refuses it.
        wrong = load(
            agent_toml(
                tmp_path,
                serial_no="SIGNED0001",
                secret="not-the-key",
                mqtt_url=mosquitto_broker.url,
                name="wrong.toml",
            )
        )
        report = make_report(
            Identity("SIGNED0001", secret="not-the-key"),
            Finding("forged-1", "PSU1", "PSU-0003", "critical", "forged"),
        )
        result = await send_once(wrong, report, timeout=30)
        assert result.outcome == "delivered"

        async def refused() -> list[tuple[str, str]]:
            return await quarantined(d)

        assert await until(refused, "the bad signature quarantined") == [("mqtt", "bad-signature")]
        assert len(await alarms(d, "SIGNED0001")) == 1


# -- fallbacks --------------------------------------------------------------------------------


@_listener("smtp")
async def test_broker_down_past_after_reports_arrive_by_mail(
    tmp_path: Path, mosquitto_broker: Mosquitto
) -> None:
    broker = mosquitto_broker
    smtp_port = free_port()
    sel = tmp_path / "sel.txt"
    sel.write_text("")
    agent_cfg = load(
        agent_toml(
            tmp_path,
            mqtt_url=broker.url,
            smtp=f"127.0.0.1:{smtp_port}",
            smtp_after="1s",
            collectors=sel_collector(sel),
        )
    )
    async with running(daemon_config(tmp_path, broker, smtp_port=smtp_port)) as d:
        await listener_up(d, "smtp")
        async with running_agent(agent_cfg) as agent:
            await baseline(agent)
            await asyncio.to_thread(broker.stop)
            await append(
                sel,
                sel_line(0x20, "Uncorrectable ECC", "Memory DIMM_B3"),
                sel_line(0x21, "Predictive Failure", "Drive Slot / Bay Disk 2"),
            )
            got = await wait_alarms(d, 2)
        assert [
            (a["id"], a["channel"], a["format"], a["severity"], a["component"]) for a in got
        ] == [
            (sel_id(0x20), "smtp", "express", "critical", "DIMM_B3"),
            (sel_id(0x21), "smtp", "express", "warning", "Disk 2"),
        ]


@_listener("serial")
async def test_broker_down_past_after_reports_arrive_by_modem(
    tmp_path: Path, mosquitto_broker: Mosquitto
) -> None:
    broker = mosquitto_broker
    master, slave = os.openpty()
    tty.setraw(slave)  # raw before the daemon opens it
    try:
        line = os.ttyname(slave)
        sel = tmp_path / "sel.txt"
        sel.write_text("")
        # The port is opened by `serial_opener` (the pty's master); the name is
        # never opened, and deliberately no real device.
        agent_cfg = load(
            agent_toml(
                tmp_path,
                mqtt_url=broker.url,
                serial_port=str(tmp_path / "not-a-tty"),
                serial_after="1s",
                collectors=sel_collector(sel),
            )
        )
        async with running(daemon_config(tmp_path, broker, serial_path=line)) as d:
            await listener_up(d, f"serial:{line}")
            async with running_agent(
                agent_cfg,
                serial_options=FAST_DTE,
                serial_opener=lambda url, baud: MasterPort(master),
            ) as agent:
                await baseline(agent)
                await asyncio.to_thread(broker.stop)
                await append(
                    sel,
                    sel_line(0x30, "AC lost", "Power Supply PS2 Status"),
                    sel_line(0x31, "Fully Redundant", "Power Supply PS Redundancy"),
                )
                got = await wait_alarms(d, 2)
        assert [(a["id"], a["channel"], a["severity"], a["component"]) for a in got] == [
            (sel_id(0x30), "serial", "critical", "PS2 Status"),
            (sel_id(0x31), "serial", "clear", "PS Redundancy"),
        ]
    finally:
        os.close(master)
        os.close(slave)
