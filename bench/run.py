"""The standard benchmark set in one go (`make bench`), written to bench/REPORT.md.

    .venv/bin/python bench/run.py [--runs 3] [--seconds 5]
                                  [--only smtp,mqtt,http,serial,writer,micro]

Each round measures a building block's ceiling and, right after, the daemon
with the same client (`monitor_sim.load`, the code behind `monitor-sim
load`): PERF.md asks for ratios measured in the same run, because this
machine is shared and absolute figures drift.

- SMTP: a bare aiosmtpd sink (handler answers 250 at once) vs the daemon,
  8 persistent connections, ~1 KB express mails, `--rate 0`;
- MQTT: a bare paho QoS 1 consumer vs the daemon on a fresh mosquitto each,
  the same aiomqtt publisher (4 connections, 256 in flight); rate = stored
  (consumed) per second from the first publish to the last store;
- HTTP push: Prometheus Alertmanager (in memory, null receiver, one alert per
  request) vs the daemon, the same number of requests over 32 keep-alive
  connections of the simulator's minimal HTTP/1.1 client; plus the same
  pair under wrk (a C client) from benchmarks/bench_http.py, as a check
  that the client is not what is measured;
- serial: the daemon over 8 pty lines (DialupClient, stop-and-wait);
- latency: each channel again at half the daemon's measured maximum, open
  loop; receipt→durable as sent→`stored_at` (includes the client and, for
  MQTT, the broker hop);
- writer: batched SQLite (commit per 100, stdlib) vs the group-commit
  writer with 64 callers (benchmarks/bench_writer.py);
- micro: the hours engine, the mail parsers and the modem engine
  (pytest-benchmark, tests/bench).

Medians of `--runs` rounds.  The daemon runs as `monitor run` on the system
clock, logging at warning, with its SQLite database under var/ (a real
disk: fsync must cost what it costs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT, HERE, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import measure  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402

PARTS = ("smtp", "mqtt", "http", "serial", "writer", "micro")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def fig(f: measure.Figure) -> dict[str, Any]:
    return dict(f.__dict__)


def round_smtp(tmp: Path, i: int, secs: float) -> dict[str, Any]:
    ceiling = measure.smtp_ceiling(f"s{i}c", secs)
    top, half = measure.smtp_daemon(tmp, f"s{i}d", secs)
    return {"ceiling": fig(ceiling), "daemon": fig(top), "half": fig(half)}


def round_mqtt(tmp: Path, i: int, secs: float, version: int) -> dict[str, Any]:
    """One protocol on both sides: the bare consumer and the daemon's
    `[mqtt] protocol` (paho decodes MQTT 5 properties on every PUBLISH)."""
    ceiling = measure.mqtt_ceiling(tmp, f"m{version}-{i}c", secs, 5 if version == 5 else 4)
    top, half = measure.mqtt_daemon(tmp, f"m{version}-{i}d", secs, version)
    return {"ceiling": fig(ceiling), "daemon": fig(top), "half": fig(half)}


def round_http(tmp: Path, i: int, secs: float, count: int) -> dict[str, Any]:
    import bench_http  # the lead's wrk benchmark: same pair, C client

    am = measure.http_alertmanager(tmp, f"h{i}a", count)
    top, half = measure.http_daemon(tmp, f"h{i}d", count, secs)
    out = {"ceiling": fig(am), "daemon": fig(top), "half": fig(half)}
    try:
        wrk_am = bench_http.alertmanager_run(tmp, int(secs), 32, 2, f"w{i}a")
        wrk_d = bench_http.daemon_run(tmp, int(secs), 32, 2, f"w{i}d")
        # wrk stops with requests in flight: those may be stored without
        # counting as completed, so stored may exceed completed; the reverse
        # would be a loss.
        completed = wrk_d["requests"] - wrk_d["errors"]
        out["wrk"] = {
            "alertmanager": wrk_am["rate"],
            "daemon": wrk_d["rate"],
            "daemon_lost": max(0, completed - wrk_d["stored"]),
            "daemon_errors": wrk_d["errors"],
        }
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"wrk skipped: {exc}")
    return out


def round_serial(tmp: Path, i: int, secs: float) -> dict[str, Any]:
    top, half = measure.serial_daemon(tmp, f"l{i}d", secs)
    return {"daemon": fig(top), "half": fig(half)}


def round_writer(tmp: Path, i: int) -> dict[str, Any]:
    import bench_writer

    rows, callers = 20000, 64
    folder = tmp / f"writer{i}"
    folder.mkdir()
    batched = bench_writer.batched(bench_writer._fresh(str(folder), "b.db"), rows)
    group, mean_batch = bench_writer.group_commit(
        bench_writer._fresh(str(folder), "g.db"), rows, callers
    )
    return {"ceiling": batched, "daemon": group, "mean_batch": mean_batch}


def micro(tmp: Path) -> list[dict[str, Any]]:
    """The pytest-benchmark suites of tests/bench, summarised per benchmark."""
    out = tmp / "micro.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            str(ROOT / "tests" / "bench"),
            "-m",
            "bench",
            "--benchmark-enable",
            f"--benchmark-json={out}",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data = json.loads(out.read_text())
    rows = []
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        mean = b["stats"]["mean"]
        per_round = extra.get("calls_per_round", 1)
        per_s = extra.get("frames_per_s") or per_round / mean
        rows.append(
            {
                "name": b["name"],
                "file": b["fullname"].split("::")[0].rsplit("/", 1)[-1],
                "mean_us": 1e6 / per_s,
                "per_s": per_s,
            }
        )
    return rows


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each load run")
    ap.add_argument(
        "--http-count",
        type=int,
        default=30000,
        help="requests per HTTP run, the same for both servers",
    )
    ap.add_argument("--only", default=",".join(PARTS))
    ap.add_argument("--out", default=str(HERE / "REPORT.md"))
    ap.add_argument("--json", default=str(HERE / "results.json"), help="raw figures")
    args = ap.parse_args()
    parts = [p for p in args.only.split(",") if p]
    (ROOT / "var").mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "machine": procs.machine(),
        "runs": args.runs,
        "seconds": args.seconds,
        "started": time.time(),
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(dir=ROOT / "var", prefix="bench-") as tmp_:
        tmp = Path(tmp_)
        for i in range(args.runs):
            for part in parts:
                if part == "micro":
                    continue
                quiet = procs.wait_quiet()
                log(f"round {i + 1}/{args.runs}: {part} (others' CPU before: {quiet:.2f} cores)")
                before = procs.cpu_now()
                if part == "smtp":
                    r = round_smtp(tmp, i, args.seconds)
                elif part == "mqtt":
                    r = round_mqtt(tmp, i, args.seconds, 3)
                    results.setdefault("mqtt5", []).append(round_mqtt(tmp, i, args.seconds, 5))
                elif part == "http":
                    r = round_http(tmp, i, args.seconds, args.http_count)
                elif part == "serial":
                    r = round_serial(tmp, i, args.seconds)
                elif part == "writer":
                    r = round_writer(tmp, i)
                else:
                    raise SystemExit(f"unknown part {part}")
                # What other tenants took while we measured: a disturbed round shows.
                r["others_cpu"] = procs.others_cores(before, procs.cpu_now())
                if part == "mqtt":
                    results["mqtt5"][-1]["others_cpu"] = r["others_cpu"]
                results.setdefault(part, []).append(r)
                log(f"  {json.dumps(r, default=str)[:300]}")
        if "micro" in parts:
            log("micro benchmarks (pytest-benchmark)")
            results["micro"] = micro(tmp)
    results["load_after"] = os.getloadavg()
    results["seconds_total"] = time.time() - results["started"]
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    Path(args.out).write_text(report.render(results), encoding="utf-8")
    log(f"wrote {args.out} ({results['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
