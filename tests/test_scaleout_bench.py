"""Throughput of 1, 2 and 3 instances on one PostgreSQL beside one on SQLite
(docs/scale-out.md).  `wrk` pushes one alarm per HTTP request, 32
connections split over the instances.  Run: `pytest -m bench -s
tests/test_scaleout_bench.py` (needs wrk)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, write_config
from tests.support.postgres import PgServer, pg_server  # noqa: F401

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
