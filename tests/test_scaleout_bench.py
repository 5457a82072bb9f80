"""Throughput of 1, 2 and 3 instances on one PostgreSQL beside one on SQLite
(docs/scale-out.md).  `wrk` pushes one alarm per HTTP request, 32
connections split over the instances.  Run: `pytest -m bench -s
tests/test_scaleout_bench.py` (needs wrk)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import mosquitto as mosquitto_support
from tests.support.daemon import DaemonProcess, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.postgres import PgServer, pg_server  # noqa: F401
from tests.test_mqtt_helpers import mqtt_section

mosquitto_factory = mosquitto_support.mosquitto_factory

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed"),
]

SECONDS = 8
LUA = """
local n = 0
local tid = tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer t-agent"
request = function()
  n = n + 1
  local body = '{"v":1,"id":"w' .. tid .. '-' .. n .. '","serial":"SERIAL","severity":"major",'
    .. '"component":"COMPONENT","code":"PSU-0003","message":"Power supply 1 failure detected"}'
  return wrk.format(nil, "/api/v1/alarms", nil, body)
end
"""
LOADS = {
    # one device, 50 fingerprints: every alarm folds into an incident row
    "fold storm": ("JPN0012345", "C' .. (n % 50) .. '"),
    # unregistered devices: stored, no incident
    "plain ingest": ("UNREG' .. (n % 50) .. '", "PSU1"),
}


def _run(tmp: Path, n: int, url: str | None, script: Path) -> tuple[float, int]:
    daemons = []
    for i in range(n):
        folder = tmp / f"{script.stem}-{n}-{url is not None}-{i}"
        folder.mkdir()
        cfg = write_config(folder, clock_start="2026-11-24T10:00:00+09:00", db_url=url)
        daemons.append(DaemonProcess(cfg))
        daemons[-1].start(30)
    try:
        conns = max(1, 32 // n)
        procs = [
            subprocess.Popen(
                ["wrk", "-t1", f"-c{conns}", f"-d{SECONDS}s", "-s", str(script), d.url],
                stdout=subprocess.PIPE,
                text=True,
            )
            for d in daemons
        ]
        total, bad = 0.0, 0
        for p in procs:
            out = p.communicate()[0]
            m = re.search(r"Requests/sec:\s+([\d.]+)", out)
            assert m, out
            total += float(m.group(1))
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            bad += int(m.group(1)) if m else 0
        return total, bad
    finally:
        for d in daemons:
            d.stop(20)


@pytest.fixture
def scripts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    out = {}
    for i, (name, (serial, component)) in enumerate(LOADS.items()):
        path = tmp_path / f"load{i}.lua"
        path.write_text(LUA.replace("SERIAL", serial).replace("COMPONENT", component))
        out[name] = path
    yield out


def test_throughput_by_instances(
    tmp_path: Path,
    pg_server: PgServer,  # noqa: F811
    scripts: dict[str, Path],
) -> None:
    rows = []
    for name, script in scripts.items():
        figures = [_run(tmp_path, 1, None, script)]
        for n in (1, 2, 3):
            db = pg_server.create_db()
            try:
                figures.append(_run(tmp_path, n, pg_server.url(db), script))
            finally:
                pg_server.drop_db(db)
        assert all(bad == 0 for _, bad in figures), figures
        rows.append(f"| {name} | " + " | ".join(f"{rate:,.0f}/s" for rate, _ in figures) + " |")
    print("\n| load | SQLite x1 | PostgreSQL x1 | x2 | x3 |\n|---|---|---|---|---|")
    print("\n".join(rows))


def _mqtt_run(
    tmp: Path, n: int, url: str | None, broker_url: str, seconds: int
) -> dict[str, float]:
    """`monitor-sim load --channel mqtt --rate 0` against n instances in one
    share group: the broker spreads the reports over them."""
    daemons = []
    for i in range(n):
        folder = tmp / f"mqtt-{n}-{url is not None}-{i}"
        folder.mkdir()
        extra = mqtt_section(broker_url, client_id=f"bench-{folder.name}", share_group="bench")
        cfg = write_config(folder, clock_start=None, db_url=url, extra=extra)
        daemons.append(DaemonProcess(cfg))
        daemons[-1].start(30)
    try:
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "monitor-sim"),
                "load",
                "--channel",
                "mqtt",
                "--rate",
                "0",
                "--duration",
                str(seconds),
                "--mqtt",
                broker_url,
                "--api",
                daemons[0].url,
                "--token",
                "t-admin",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        result: dict[str, float] = json.loads(out.stdout)
        return result
    finally:
        for d in daemons:
            d.stop(20)


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_mqtt_throughput_by_instances(
    tmp_path: Path,
    pg_server: PgServer,  # noqa: F811
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    """MQTT 5 through a shared subscription, 1–3 instances on PostgreSQL
    beside one on SQLite; nothing acknowledged may be lost."""
    figures = []
    for n, on_pg in ((1, False), (1, True), (2, True), (3, True)):
        broker = mosquitto_factory()
        db = pg_server.create_db() if on_pg else None
        try:
            url = pg_server.url(db) if db else None
            figures.append(_mqtt_run(tmp_path, n, url, broker.url, SECONDS))
        finally:
            broker.stop()
            if db:
                pg_server.drop_db(db)
    assert all(f["lost"] == 0 for f in figures), figures
    print("\n| MQTT 5, share group | SQLite x1 | PostgreSQL x1 | x2 | x3 |\n|---|---|---|---|---|")
    print(
        "| stored/s (p99 ms) | "
        + " | ".join(f"{f['rate']:,.0f}/s ({f['p99_ms']:.0f})" for f in figures)
        + " |"
    )
