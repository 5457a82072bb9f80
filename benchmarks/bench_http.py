"""HTTP push ingest, durable, vs. Prometheus Alertmanager — same client, same run.

    .venv/bin/python benchmarks/bench_http.py [--duration 10] [--connections 32] [--runs 3]

The client is wrk (C, keep-alive HTTP/1.1; Debian package `wrk`) with a Lua
script that makes every request unique: one alarm (daemon) or one alert
(Alertmanager, `POST /api/v2/alerts`, in memory, null receiver) per request.
The aiohttp client would cap near 7,000 requests/s here (PERF.md), so it is
not used.  The daemon runs on the system clock with its real SQLite store;
receipt→durable latency is read from the stored rows (`stored_at -
received_at`).  Prints medians of `--runs` runs and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.daemon import write_config  # noqa: E402
from tests.support.ports import free_port, wait_port  # noqa: E402

LUA = """
local counter = 0
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
request = function()
  counter = counter + 1
  local body = string.format(BODY, RUN, tid, counter, counter %% 100)
  return wrk.format("POST", PATH, HEADERS, body)
end
"""

DAEMON_BODY = (
    '{"v":1,"id":"b-%%s-%%d-%%d","serial":"JPN0012345","severity":"major",'
    '"component":"C%%d","code":"PSU-0003","message":"Power supply failure detected",'
    '"occurred":"2026-11-20T10:00:00+09:00"}'
)
AM_BODY = (
    '[{"labels":{"alertname":"PSU","run":"%%s","thread":"%%d","n":"%%d","c":"%%d"},'
    '"annotations":{"summary":"Power supply failure detected"}}]'
)


def lua_script(path: str, body: str, headers: dict[str, str], run: str) -> str:
    hdr = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    text = LUA.replace("BODY", json.dumps(body % ()).replace("%%", "%"))
    text = text.replace("RUN", json.dumps(run)).replace("PATH", json.dumps(path))
    text = text.replace("HEADERS", hdr).replace("%%", "%")
    return text


def run_wrk(
    url: str, script: str, duration: int, connections: int, threads: int
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        name = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "requests": total, "errors": int(non2xx.group(1)) if non2xx else 0}


def alertmanager_run(
    tmp: Path, duration: int, connections: int, threads: int, run: str
) -> dict[str, float]:
    port = free_port()
    cfg = tmp / "am.yml"
    cfg.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    proc = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={cfg}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port, 20)
        script = lua_script("/api/v2/alerts", AM_BODY, {"Content-Type": "application/json"}, run)
        return run_wrk(f"http://127.0.0.1:{port}", script, duration, connections, threads)
    finally:
        proc.terminate()
        proc.wait(10)


def daemon_run(
    tmp: Path, duration: int, connections: int, threads: int, run: str
) -> dict[str, float]:
    cfg = write_config(tmp, clock_start=None, name=f"bench-{run}.toml", db=tmp / f"{run}.db")
    port = int(re.search(r'listen = "127.0.0.1:(\d+)"', cfg.read_text()).group(1))  # type: ignore[union-attr]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "run", "-c", str(cfg), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port, 20)
        script = lua_script(
            "/api/v1/alarms",
            DAEMON_BODY,
            {"Content-Type": "application/json", "Authorization": "Bearer t-agent"},
            run,
        )
        result = run_wrk(f"http://127.0.0.1:{port}", script, duration, connections, threads)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
        urllib.request.urlopen(req, timeout=10).read()
    finally:
        proc.terminate()
        proc.wait(30)
    conn = sqlite3.connect(tmp / f"{run}.db")
    lat = sorted(r[0] for r in conn.execute("SELECT stored_at - received_at FROM alarms"))
    stored = len(lat)
    conn.close()
    result["stored"] = stored
    result["p50_ms"] = lat[len(lat) // 2] * 1000 if lat else 0.0
    result["p99_ms"] = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install wrk prometheus-alertmanager")
    (ROOT / "var").mkdir(exist_ok=True)
    am, dm = [], []
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as tmp_:
        tmp = Path(tmp_)
        for i in range(args.runs):
            am.append(alertmanager_run(tmp, args.duration, args.connections, args.threads, f"a{i}"))
            dm.append(daemon_run(tmp, args.duration, args.connections, args.threads, f"d{i}"))
            time.sleep(0.5)
    out = {
        "alertmanager_alerts_s": round(statistics.median(r["rate"] for r in am)),
        "daemon_alarms_s": round(statistics.median(r["rate"] for r in dm)),
        "daemon_errors": sum(int(r["errors"]) for r in dm),
        "daemon_lost": sum(int(r["requests"] - r["errors"] - r["stored"]) for r in dm),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in dm), 2),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in dm), 2),
        "connections": args.connections,
    }
    out["ratio"] = round(out["daemon_alarms_s"] / out["alertmanager_alerts_s"], 3)
    if args.json:
        print(json.dumps(out))
        return
    print(f"Alertmanager, single-alert POSTs  {out['alertmanager_alerts_s']:>8} alerts/s")
    print(
        f"daemon, durable HTTP push         {out['daemon_alarms_s']:>8} alarms/s "
        f"(p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms receipt→durable)"
    )
    print(
        f"ratio {out['ratio']:.0%}; non-2xx {out['daemon_errors']}; "
        f"completed-but-not-stored {out['daemon_lost']}"
    )


if __name__ == "__main__":
    main()
