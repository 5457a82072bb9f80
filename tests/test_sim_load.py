"""`monitor-sim load`: its figures add up, against the real daemon (system
clock, as SPEC 7 requires for latencies) and on made-up accounts."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from monitor_sim.api import Api
from monitor_sim.load import ApiObserver, LoadOptions, Sample, account, percentile, run_load
from monitor_sim.loadgen import ReportMaker, synthetic_devices
from monitor_sim.plot import series

from tests.test_sim_replay import HAVE_MOSQUITTO, rig


def rid(n: int) -> str:
    return f"r-{n}"


def test_accounting_of_lost_and_duplicates() -> None:
    samples = [
        Sample(0, 100.0, 100.010),
        Sample(1, 100.1, 100.2),
        Sample(2, 100.2, 100.3),
        Sample(3, 100.3, None),
        Sample(4, 100.4, 100.5),
    ]
    stored = [
        ("r-0", 100.005),
        ("r-1", 100.15),
        ("r-1", 100.16),  # r-1 stored twice
        ("r-3", 100.35),
    ]  # r-3 stored though never acknowledged (lost ack)
    res = account(samples, rid, stored)
    assert (res.sent, res.acked, res.stored) == (5, 4, 3)
    assert res.lost == 2  # r-2 and r-4: acknowledged, not stored
    assert res.duplicates == 1
    assert res.acked <= res.sent
    assert res.p50_ms == pytest.approx(50.0)  # r-1: 100.1 → 100.15
    assert res.rate == pytest.approx(3 / 0.5)  # stored over first send … last ack


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([], 0.5) == 0.0 and percentile([7.0], 0.99) == 7.0


def test_plot_series_bins_per_second() -> None:
    samples = [Sample(i, 10 + i / 10, 10 + i / 10 + 0.01, 10 + i / 10 + 0.005) for i in range(30)]
    data = series(samples)
    assert data["t"] == [0.0, 1.0, 2.0]
    assert data["acked"] == [10.0, 10.0, 10.0] and data["stored"] == [10.0, 10.0, 10.0]
    assert all(abs(p - 5.0) < 0.01 for p in data["p99"])


async def run_cli(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor_sim.cli",
        "load",
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, (out, err)
    result: dict[str, Any] = json.loads(out)
    assert set(result) == {
        "sent",
        "acked",
        "stored",
        "lost",
        "duplicates",
        "rate",
        "p50_ms",
        "p99_ms",
    }
    return result


def adds_up(r: dict[str, Any]) -> None:
    assert 0 < r["acked"] <= r["sent"]
    assert r["lost"] == 0 and r["duplicates"] == 0
    assert r["stored"] >= r["acked"]
    assert r["rate"] > 0 and 0 <= r["p50_ms"] <= r["p99_ms"]


async def test_load_json_figures_add_up_over_http_smtp_and_mqtt(tmp_path: Path) -> None:
    async with rig(tmp_path, serial=False, clock_start=None) as r:
        api = ["--api", r.daemon.url, "--token", "t-admin"]
        before = await r.daemon.get("/api/v1/alarms?limit=1000")
        png = tmp_path / "http.png"
        http = await run_cli(
            "--channel",
            "http",
            "--rate",
            "0",
            "--count",
            "400",
            *api,
            "--connections",
            "4",
            "--plot",
            str(png),
        )
        adds_up(http)
        assert http["sent"] == 400 and http["stored"] == 400
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        smtp = await run_cli(
            "--channel", "smtp", "--smtp", r.ep.smtp or "", "--rate", "200", "--duration", "1", *api
        )
        adds_up(smtp)
        assert smtp["stored"] == smtp["acked"]  # 250 only once durable
        total = http["stored"] + smtp["stored"]
        if HAVE_MOSQUITTO:
            mqtt = await run_cli(
                "--channel",
                "mqtt",
                "--mqtt",
                r.ep.mqtt or "",
                "--rate",
                "0",
                "--count",
                "300",
                "--window",
                "32",
                *api,
            )
            adds_up(mqtt)
            assert mqtt["stored"] == 300  # the daemon drained what the broker acknowledged
            total += mqtt["stored"]
        # The figures are the daemon's own: its API holds exactly that many more.
        after = await r.daemon.get("/api/v1/alarms?limit=1000")
        new = [a for a in after["items"] if a["seq"] > (before["items"] or [{"seq": 0}])[0]["seq"]]
        assert len(new) == min(total, 1000)


async def test_load_over_a_dialup_line(tmp_path: Path) -> None:
    """Serial load through the library (a pty's master end has no path for the CLI)."""
    async with rig(tmp_path, mqtt=False, clock_start=None) as r:
        async with Api(r.daemon.url, "t-admin") as api:
            maker = ReportMaker("serial", synthetic_devices(4), "serial-load")
            opts = LoadOptions(channel="serial", rate=0, count=60)
            res = await run_load(opts, r.ep, maker, ApiObserver(api))
        assert (res.sent, res.acked, res.stored, res.lost, res.duplicates) == (60, 60, 60, 0, 0)
        assert 0 < res.p50_ms <= res.p99_ms
