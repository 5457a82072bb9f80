"""Soak: a steady replay on all four channels for 30 minutes (SOAK_SECONDS),
with the daemon's RSS and open file descriptors sampled from /proc.

Reports go in at a fixed rate per channel (HTTP push, SMTP, MQTT through
mosquitto, a dial-up DTE on a pty), plus invalid input (quarantined) and API
reads (incidents, alarms, metrics) as a dashboard and Prometheus make them.
The daemon runs as a subprocess on the system clock.

What must hold:
- every acknowledged report is stored, once (lost = 0);
- RSS stays flat: after the warm-up, the highest RSS of the second half is
  within 10 % + 16 MiB of the highest of the first half (a leak of a few KiB
  per report would grow by tens of MiB over 30 minutes);
- open file descriptors stay flat: the last sample is within 8 of the
  first one after warm-up (a leaked socket or file per session would grow
  by thousands).

The samples and figures go to test-artifacts/soak.json (docs/reliability.md
quotes them).  `make soak` runs it; SOAK_SECONDS=120 for a quick look.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import TOKENS, DaemonProcess
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_chaos_helpers import DEVICES as DEVICE_OF
from tests.test_chaos_helpers import (
    HttpSender,
    MqttSender,
    Sender,
    SerialSender,
    SmtpSender,
    channels_config,
    db_rows,
    hook_server,
    proc_sample,
    progress,
    stored_ids,
    verify,
    wait_until,
)
from tests.test_serial_pty import PtyLine, ptys

__all__ = ["ptys"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
RATE = float(os.environ.get("SOAK_RATE", "10"))  # reports/s per channel
SAMPLE_EVERY = float(os.environ.get("SOAK_SAMPLE", "10"))


class Reader(threading.Thread):
    """A dashboard and a scraper: API reads and invalid pushes, steadily."""

    def __init__(self, stop: threading.Event, port: int) -> None:
        super().__init__(name="reader", daemon=True)
        self.stop = stop
        self.port = port
        self.reads = 0
        self.invalid = 0
        self.slowest = 0.0
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _call(self, method: str, path: str, body: bytes | None, role: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            start = time.monotonic()
            conn.request(
                method, path, body=body, headers={"Authorization": f"Bearer {TOKENS[role]}"}
            )
            resp = conn.getresponse()
            resp.read()
            took = time.monotonic() - start
            self.latencies.append(took)
            self.slowest = max(self.slowest, took)
            return resp.status
        finally:
            conn.close()

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.5):
            i += 1
            status = self._call("POST", "/api/v1/alarms", b'{"v":1,"id":"broken', "agent")
            assert status == 400, status
            self.invalid += 1
            if i % 4 == 0:
                for path in (
                    "/api/v1/incidents?limit=50",
                    "/api/v1/alarms?limit=50",
                    "/metrics",
                    "/readyz",
                ):
                    status = self._call("GET", path, None, "admin")
                    assert status == 200, (path, status)
                    self.reads += 1


@pytest.mark.timeout(SECONDS + 900)
def test_soak(tmp_path: Path, ptys: list[PtyLine]) -> None:
    line = PtyLine.open()
    ptys.append(line)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    stop = threading.Event()
    daemon: DaemonProcess | None = None
    samples: list[dict[str, float]] = []
    try:
        with hook_server() as hook:
            smtp_port = free_port()
            cfg = channels_config(
                tmp_path,
                hook=hook.url,
                smtp_port=smtp_port,
                broker_url=broker.url,
                serial_path=line.path,
            )
            db = tmp_path / "monitor.db"
            daemon = DaemonProcess(cfg)
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            http_port = int(daemon.url.rsplit(":", 1)[1])
            wait_until(lambda: "mqtt connected" in daemon.read_log(), "mqtt up", 60)
            senders: list[Sender] = [
                HttpSender(stop, http_port, rate=RATE),
                SmtpSender(stop, smtp_port, rate=RATE),
                MqttSender(stop, broker.host, broker.port, rate=RATE),
                SerialSender(stop, line.port, rate=RATE),
            ]
            reader = Reader(stop, http_port)
            for s in senders:
                s.start()
            reader.start()
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < SECONDS:
                rss, fds = proc_sample(pid)
                samples.append(
                    {
                        "t": round(elapsed, 1),
                        "rss_kib": rss,
                        "fds": fds,
                        "acked": sum(len(s.acked) for s in senders),
                    }
                )
                for s in [*senders, reader]:
                    assert s.is_alive() or s.error is None, (s.name, s.error)
                time.sleep(min(SAMPLE_EVERY, max(0.0, SECONDS - elapsed)))
            stop.set()
            for t in [*senders, reader]:
                t.join(120)
                assert not t.is_alive(), f"{t.name} still running"
                assert t.error is None, f"{t.name}: {t.error!r}"
            mqtt_ids = set(senders[2].acked)
            wait_until(
                lambda: mqtt_ids <= set(stored_ids(db, DEVICE_OF["mqtt"])),
                "every broker-acknowledged MQTT report stored",
                120,
                lambda: progress(senders),
            )
            rss, fds = proc_sample(pid)
            samples.append({"t": round(time.monotonic() - started, 1), "rss_kib": rss, "fds": fds})
            assert daemon.stop(30) == 0
            verdict = verify(db, senders, hook)
            quarantined = db_rows(db, "SELECT count(*) FROM quarantine")[0][0]
    finally:
        stop.set()
        if daemon is not None:
            daemon.kill()
        broker.stop()

    warm = [s for s in samples if s["t"] >= min(120.0, SECONDS / 5)]
    half = len(warm) // 2
    first, second = warm[:half], warm[half:]
    figures: dict[str, Any] = {
        "seconds": SECONDS,
        "rate_per_channel": RATE,
        "acked": {s.channel: len(s.acked) for s in senders},
        "stored": verdict.stored,
        "lost": len(verdict.lost),
        "duplicates_stored": verdict.duplicates,
        "incidents": verdict.incidents,
        "quarantined": quarantined,
        "api_reads": reader.reads,
        "api_p50_ms": round(statistics.median(reader.latencies) * 1000, 1),
        "api_max_ms": round(reader.slowest * 1000, 1),
        "rss_kib_first_half_max": max(s["rss_kib"] for s in first),
        "rss_kib_second_half_max": max(s["rss_kib"] for s in second),
        "rss_kib_start": warm[0]["rss_kib"],
        "rss_kib_end": samples[-1]["rss_kib"],
        "fds_start": warm[0]["fds"],
        "fds_end": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "samples": samples,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(figures, indent=1) + "\n")
    assert verdict.lost == [], verdict.lost[:10]
    assert verdict.duplicates == 0
    assert verdict.incidents == verdict.fingerprints
    limit = figures["rss_kib_first_half_max"] * 1.10 + 16 * 1024
    assert figures["rss_kib_second_half_max"] <= limit, figures
    assert figures["fds_end"] <= figures["fds_start"] + 8, figures
