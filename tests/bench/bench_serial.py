"""Serial channel throughput through the real daemon, over one pty line.

    .venv/bin/python tests/bench/bench_serial.py [--reports 2000] [--runs 3]

The daemon runs as a subprocess (`monitor run`) with one `[[serial]]` line at
115200 baud on a pty slave; its SQLite store (WAL, synchronous=FULL) is on the
disk of the working directory (a tmpfs would make fsync free).  This process is
the agent: `monitor.dte.DialupClient` on the pty master dials, then sends
~300-byte framed reports stop-and-wait, each waiting for its ACK, which the
daemon sends only after the commit (SPEC 3.5).

A pty has no baud rate: bytes move as fast as the kernel copies them.  So
four figures, medians of `--runs` runs:

1. **raw pty**: bytes/s one way through the same kind of pty, no daemon (the
   transport's own ceiling on this machine);
2. **unpaced**: framed reports/s through the daemon, and the bytes/s they put
   on the line, as a share of 115200 8N1 (11,520 bytes/s: 10 bits a byte)
   and of the raw pty rate;
3. **bare engine**: the same agent against `ModemEngine` alone in a thread,
   ACKing at once (no daemon, no store): stop-and-wait's own ceiling here;
4. **paced at 115200 8N1**: the agent's writes are spread out at 11,520
   bytes/s (64-byte chunks, like a UART FIFO) and each answer byte costs its
   wire time, as on a real line.  The share of the line's raw byte rate that
   this reaches is what stop-and-wait with ACK-after-commit costs: the line
   is idle while the daemon stores a report and answers.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.dte import DialupClient, DteOptions  # noqa: E402
from monitor.frames import encode_frame  # noqa: E402
from monitor.modem import FrameReceived, ModemEngine, ModemSettings, Write  # noqa: E402
from tests.support.daemon import DaemonProcess, write_config  # noqa: E402
from tests.test_serial_pty import MasterPort, PtyLine  # noqa: E402

BAUD = 115200
LINE_BYTES_PER_S = BAUD / 10  # 8N1: start bit, 8 data bits, stop bit
NUMBER = "0120223042"
OPTIONS = DteOptions(command_timeout=10.0, connect_timeout=10.0, answer_timeout=10.0)


def payload(report_id: str) -> bytes:
    """A 300-byte SPEC 3.1 alarm (PERF.md's message size), unique id."""
    alarm = {
        "v": 1,
        "id": report_id,
        "serial": "JPN0012345",
        "model": "N8100-2801",
        "host": "db01",
        "occurred": "2026-11-20T17:45:12+09:00",
        "severity": "critical",
        "component": "PSU1",
        "code": "PSU-0003",
        "message": "Power supply 1 failure detected on chassis 1, slot A (replace FRU)",
    }
    data = json.dumps(alarm, separators=(",", ":")).encode()
    return data[:-2] + b" " * max(0, 300 - len(data)) + data[-2:]  # JSON allows the padding


class PacedPort(MasterPort):
    """A pty master that behaves like a 115200 8N1 line in both directions."""

    def __init__(self, fd: int, rate: float) -> None:
        super().__init__(fd)
        self.rate = rate
        self._tx_free = 0.0  # when the transmitter has sent everything so far

    def write(self, data: bytes) -> int:
        for i in range(0, len(data), 64):
            chunk = data[i : i + 64]
            start = max(time.perf_counter(), self._tx_free)
            self._tx_free = start + len(chunk) / self.rate
            _sleep_until(start)
            super().write(chunk)
        _sleep_until(self._tx_free)  # the last bit is on the wire
        return len(data)

    def read(self, size: int = 1) -> bytes:
        data = super().read(size)
        if data:
            _sleep_until(time.perf_counter() + len(data) / self.rate)
        return data


def _sleep_until(when: float) -> None:
    while (left := when - time.perf_counter()) > 0:
        time.sleep(left if left > 0.002 else 0)


def raw_pty_rate(total: int = 64 << 20) -> float:
    """Bytes/s master → slave through a raw pty with a reader thread."""
    line = PtyLine.open()
    block = b"\x55" * 65536
    got = 0

    def reader() -> None:
        nonlocal got
        while got < total:
            got += len(os.read(line.slave, 65536))

    thread = threading.Thread(target=reader)
    start = time.perf_counter()
    thread.start()
    sent = 0
    while sent < total:
        sent += os.write(line.master, block[: min(len(block), total - sent)])
    thread.join()
    elapsed = time.perf_counter() - start
    line.close()
    return total / elapsed


def bare_dce_rate(reports: int, runs: int) -> float:
    """The same agent against a bare engine that ACKs at once (no daemon, no
    store): the ceiling of stop-and-wait over a pty with this Python DTE."""
    line = PtyLine.open()
    engine = ModemEngine(ModemSettings(baud=BAUD, numbers=(NUMBER,)))
    stop = threading.Event()

    def dce() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([line.slave], [], [], 0.05)
            if not ready:
                continue
            now = time.monotonic()
            actions = engine.feed(os.read(line.slave, 65536), now)
            while actions:
                action = actions.pop(0)
                if isinstance(action, Write):
                    os.write(line.slave, action.data)
                elif isinstance(action, FrameReceived):
                    report_id = json.loads(action.payload)["id"]
                    actions.extend(engine.report_result(action.token, report_id, None, now))

    thread = threading.Thread(target=dce, daemon=True)
    thread.start()
    try:
        return statistics.median(one_call(line.port, reports, f"b{r}")[0] for r in range(runs))
    finally:
        stop.set()
        thread.join()
        line.close()


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError("the serial line did not come up")


def one_call(port: MasterPort, reports: int, tag: str) -> tuple[float, int]:
    """Dial, send `reports` framed reports, hang up: (reports/s, frame bytes)."""
    client = DialupClient(port, OPTIONS)
    client.initialize()
    client.dial(NUMBER)
    frames = [(f"{tag}-{i}", payload(f"{tag}-{i}")) for i in range(reports)]
    start = time.perf_counter()
    for report_id, data in frames:
        result = client.send(report_id, data)
        if not result.ok:
            raise RuntimeError(f"{report_id}: {result}")
    elapsed = time.perf_counter() - start
    client.hangup()
    return reports / elapsed, len(encode_frame(frames[0][1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=2000, help="reports per unpaced run")
    parser.add_argument("--paced-reports", type=int, default=150, help="reports per paced run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()

    raw = statistics.median(raw_pty_rate() for _ in range(args.runs))
    bare = bare_dce_rate(args.reports, args.runs)
    work = Path(tempfile.mkdtemp(prefix="bench-serial-", dir=Path.cwd()))
    line = PtyLine.open()
    section = (
        f'\n[[serial]]\nport = "{line.path}"\nbaud = {BAUD}\n'
        f'numbers = ["{NUMBER}"]\nidle_timeout = "60s"\n'
    )
    daemon = DaemonProcess(write_config(work, clock_start=None, extra=section))
    try:
        daemon.start()
        wait_ready(daemon.url)
        one_call(line.port, 50, "warm")
        unpaced = [one_call(line.port, args.reports, f"u{r}") for r in range(args.runs)]
        paced_port = PacedPort(line.master, LINE_BYTES_PER_S)
        paced = [one_call(paced_port, args.paced_reports, f"p{r}") for r in range(args.runs)]
        daemon.stop()
    finally:
        daemon.kill()
        line.close()
        shutil.rmtree(work, ignore_errors=True)

    frame_bytes = unpaced[0][1]
    u_rate = statistics.median(r for r, _ in unpaced)
    p_rate = statistics.median(r for r, _ in paced)
    out = {
        "frame_bytes": frame_bytes,
        "raw_pty_bytes_per_s": round(raw),
        "unpaced_reports_per_s": round(u_rate, 1),
        "unpaced_bytes_per_s": round(u_rate * frame_bytes),
        "unpaced_share_of_115200": round(u_rate * frame_bytes / LINE_BYTES_PER_S, 3),
        "unpaced_share_of_raw_pty": round(u_rate * frame_bytes / raw, 5),
        "bare_engine_reports_per_s": round(bare, 1),
        "unpaced_share_of_bare_engine": round(u_rate / bare, 3),
        "line_ceiling_reports_per_s": round(LINE_BYTES_PER_S / frame_bytes, 1),
        "paced_reports_per_s": round(p_rate, 1),
        "paced_share_of_115200": round(p_rate * frame_bytes / LINE_BYTES_PER_S, 3),
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"frame: {frame_bytes} bytes on the wire (300-byte payload); medians of {args.runs} runs")
    print(f"raw pty, one way, no daemon          {raw / 1e6:10.1f} MB/s")
    print(f"bare engine on a pty, ACK at once    {bare:10.1f} reports/s  (no daemon, no store)")
    print(
        f"unpaced pty, through the daemon      {u_rate:10.1f} reports/s"
        f"  = {out['unpaced_bytes_per_s']:,} B/s"
        f"  = {out['unpaced_share_of_115200']:.0%} of 115200 8N1"
        f"  = {out['unpaced_share_of_raw_pty']:.3%} of the raw pty"
        f"  = {out['unpaced_share_of_bare_engine']:.0%} of the bare engine"
    )
    print(
        f"paced at 115200 8N1 (11,520 B/s)     {p_rate:10.1f} reports/s"
        f"  = {out['paced_share_of_115200']:.0%} of the line's raw byte rate"
        f"  (ceiling {out['line_ceiling_reports_per_s']} reports/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
