"""SMTP ingest, durable, vs. a bare aiosmtpd sink — same client, same run.

    .venv/bin/python tests/bench/bench_smtp.py [--seconds 5] [--clients 8] [--runs 3]

PERF.md's goal: the daemon (parse, store with group commit and fsync, then
`250`) reaches >= 50 % of an aiosmtpd server whose handler answers `250` at
once, both driven by the same client: `--clients` persistent connections,
each in its own process, each a raw-socket client with pre-built commands
(MAIL, RCPT, DATA without PIPELINING: four round trips a message), so the
client costs far less than either server.  1 KB express reports, each with
its own report id, so every one is stored.

Runs alternate sink / daemon `--runs` times; the medians and their ratio are
printed.  Latency: the client's end-of-data → `250` (p50/p99) at full load,
and again in a paced run at half the daemon's measured rate (PERF.md: p99 <
50 ms there); plus the daemon's own receipt → durable from the stored rows
(`stored_at - received_at`).  After the daemon runs, every `250` is checked
against the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from monitor.formats.express import build_express_mail  # noqa: E402
from monitor.model import AlarmReport  # noqa: E402
from tests.support.daemon import DaemonProcess, write_config  # noqa: E402
from tests.support.ports import free_port, wait_port  # noqa: E402

ACCEPT = "alarms@monitor.example"
MAX_BYTES = 1048576

BENCH_SECTION = """
[smtp]
listen = "127.0.0.1:{port}"
accept = ["{accept}"]
max_message_bytes = {max_bytes}
idle_timeout = "300s"
max_sessions = 500

[[contracts]]
id = "C-BENCH"
customer = "Bench KK"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
contacts = [ {{ name = "Bench", email = "bench@example.jp" }} ]

[[devices]]
serial = "BENCH00001"
model = "N8100-2801"
host = "bench01"
contract = "C-BENCH"
"""


# -- the messages ---------------------------------------------------------------------


def template() -> bytes:
    """A 1 KB express report with a `@@ID@@` slot for a unique report id."""
    report = AlarmReport(
        id="@@ID@@",
        serial="BENCH00001",
        severity="major",
        code="PSU-0003",
        component="PSU1",
        message="Power supply 1 failure detected. " * 20,
        model="N8100-2801",
        host="bench01",
        occurred_raw="2026-11-20T17:45:12+09:00",
    )
    raw = build_express_mail(report, sender="agent@bench01.example.jp", to=ACCEPT)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# -- the client (one process per connection) ------------------------------------------


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.expect(b"220")
        self.sock.sendall(b"EHLO bench.example\r\n")
        self.expect(b"250")

    def expect(self, code: bytes) -> None:
        while True:
            line = self.file.readline()
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            if line[3:4] != b"-":
                return

    def send(self, data: bytes) -> float:
        """One message; returns the seconds from end of data to `250`."""
        self.sock.sendall(b"MAIL FROM:<agent@bench01.example.jp>\r\n")
        self.expect(b"250")
        self.sock.sendall(b"RCPT TO:<" + ACCEPT.encode() + b">\r\n")
        self.expect(b"250")
        self.sock.sendall(b"DATA\r\n")
        self.expect(b"354")
        t0 = time.perf_counter()
        self.sock.sendall(data + b".\r\n")
        self.expect(b"250")
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.file.readline()
        finally:
            self.sock.close()


def client(
    port: int, tag: str, start_at: float, warm_until: float, end_at: float, rate: float | None
) -> tuple[int, int, list[float]]:
    """Send until `end_at` (time.monotonic is system-wide on Linux, so the
    processes share it); count what completed after `warm_until`.  `rate`:
    messages/s for this client, paced on a fixed schedule; None: flat out."""
    tmpl = template()
    conn = Conn(port)
    counted = sent = 0
    latencies: list[float] = []
    while time.monotonic() < start_at:
        time.sleep(0.001)
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end_at:
            break
        if rate is not None:
            if now < next_at:
                time.sleep(next_at - now)
            next_at += 1.0 / rate
        data = tmpl.replace(b"@@ID@@", f"{tag}-{sent}".encode())
        latency = conn.send(data)
        sent += 1
        if time.monotonic() >= warm_until:
            counted += 1
            latencies.append(latency)
    conn.close()
    return counted, sent, latencies


def drive(
    port: int, tag: str, clients: int, seconds: float, warmup: float, rate: float | None = None
) -> dict[str, Any]:
    start_at = time.monotonic() + 0.5
    warm_until = start_at + warmup
    end_at = warm_until + seconds
    per_client = rate / clients if rate else None
    ctx = mp.get_context("fork")
    with ctx.Pool(clients) as pool:
        results = pool.starmap(
            client,
            [
                (port, f"{tag}-c{i}", start_at, warm_until, end_at, per_client)
                for i in range(clients)
            ],
        )
    counted = sum(r[0] for r in results)
    sent = sum(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    return {
        "rate": counted / seconds,
        "sent": sent,
        "p50_ms": pct(lat, 0.50) * 1000,
        "p99_ms": pct(lat, 0.99) * 1000,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# -- the sink ---------------------------------------------------------------------------


class SinkHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def serve_sink(port: int) -> None:
    """A bare aiosmtpd server with the daemon's SMTP settings, on its own loop."""
    import logging

    from aiosmtpd.smtp import SMTP

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = SinkHandler()
        hostname = socket.gethostname()
        server = await loop.create_server(
            lambda: SMTP(
                handler,
                data_size_limit=MAX_BYTES,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=hostname,
                loop=loop,
            ),
            "127.0.0.1",
            port,
            reuse_address=True,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-sink", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", self.port, alive=lambda: self.proc.poll() is None)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the daemon ---------------------------------------------------------------------------


class Daemon:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        extra = BENCH_SECTION.format(port=self.port, accept=ACCEPT, max_bytes=MAX_BYTES)
        cfg = write_config(folder, clock_start=None, extra=extra)
        self.db = folder / "monitor.db"
        os.environ["MONITOR_LOG_LEVEL"] = "warning"
        self.proc = DaemonProcess(cfg)
        self.proc.start()
        wait_port("127.0.0.1", self.port)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.stop()


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve-sink", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_sink is not None:
        serve_sink(args.serve_sink)
        return 0

    folder = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    sink_rates: list[float] = []
    daemon_rates: list[float] = []
    daemon_runs: list[dict[str, Any]] = []
    sink_runs: list[dict[str, Any]] = []
    sink = Sink()
    daemon = Daemon(folder)
    try:
        for run in range(args.runs):
            s = drive(sink.port, f"s{run}", args.clients, args.seconds, args.warmup)
            d = drive(daemon.port, f"d{run}", args.clients, args.seconds, args.warmup)
            sink_rates.append(s["rate"])
            daemon_rates.append(d["rate"])
            sink_runs.append(s)
            daemon_runs.append(d)
            print(
                f"run {run + 1}: sink {s['rate']:7.0f} msg/s (p50 {s['p50_ms']:.2f} ms,"
                f" p99 {s['p99_ms']:.2f} ms) | daemon {d['rate']:7.0f} msg/s"
                f" (p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms)",
                flush=True,
            )
        sink_med = statistics.median(sink_rates)
        daemon_med = statistics.median(daemon_rates)
        half = drive(daemon.port, "half", args.clients, args.seconds, args.warmup, daemon_med / 2)
        sent = sum(r["sent"] for r in daemon_runs) + half["sent"]
        stored = daemon.rows("SELECT count(*) FROM alarms")[0][0]
        durable = daemon.rows(
            "SELECT (stored_at - received_at) * 1000 FROM alarms WHERE report_id LIKE 'half-%'"
        )
        dlat = sorted(r[0] for r in durable)
    finally:
        sink.stop()
        daemon.stop()
    print()
    print(
        f"SMTP, {args.clients} persistent connections, 1 KB express reports, medians of {args.runs}"
    )
    print(f"  sink   (aiosmtpd, 250 at once):   {sink_med:7.0f} msg/s")
    print(f"  daemon (parse, store, fsync, 250): {daemon_med:7.0f} msg/s")
    print(f"  ratio: {daemon_med / sink_med:.0%} of the sink (goal >= 50 %)")
    print(
        f"  latency end-of-data -> 250 at full load: p50 "
        f"{statistics.median(r['p50_ms'] for r in daemon_runs):.1f} ms, p99 "
        f"{statistics.median(r['p99_ms'] for r in daemon_runs):.1f} ms"
    )
    print(
        f"  at half rate ({half['rate']:.0f} msg/s): end-of-data -> 250 p50 "
        f"{half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms; receipt -> durable "
        f"(stored rows) p50 {pct(dlat, 0.5):.1f} ms, p99 {pct(dlat, 0.99):.1f} ms"
        " (goal p99 < 50 ms)"
    )
    print(f"  every 250 stored: {stored} rows for {sent} messages answered 250")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if stored == sent else 1


if __name__ == "__main__":
    sys.exit(main())
