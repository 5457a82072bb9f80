"""The daemon as a process: ready, health, metrics, roles, SIGHUP, SIGTERM,
and nothing acknowledged lost to SIGKILL."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess, write_config

SPEC_METRICS = (
    "monitor_alarms_received_total",
    "monitor_alarms_rejected_total",
    "monitor_alarms_duplicate_total",
    "monitor_alarms_uncovered_total",
    "monitor_incidents_raised_total",
    "monitor_incidents",
    "monitor_notices_total",
    "monitor_ingest_seconds",
    "monitor_notice_seconds",
    "monitor_sla_breaches_total",
    "monitor_listener_up",
    "monitor_agents_silent",
)


def http(
    url: str, token: str | None = None, body: Any = None, method: str | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in ctype else raw.decode()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode()


@pytest.fixture
def proc(tmp_path: Path) -> Any:
    cfg = write_config(tmp_path, clock_start=None)
    p = DaemonProcess(cfg)
    p.start()
    yield p
    p.kill()


def test_health_metrics_and_roles(proc: DaemonProcess) -> None:
    url = proc.url
    assert http(url + "/healthz")[0] == 200
    status, body = http(url + "/readyz")
    assert status == 200, body
    status, text = http(url + "/metrics")
    assert status == 200
    for name in SPEC_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    # 401 without a token and with an unknown one; 403 outside the role.
    assert http(url + "/api/v1/incidents")[0] == 401
    assert http(url + "/api/v1/incidents", "nope")[0] == 401
    assert http(url + "/api/v1/incidents", "t-agent")[0] == 403
    assert http(url + "/api/v1/quarantine", "t-staff")[0] == 403
    assert http(url + "/api/v1/alarms", "t-staff", {"v": 1}, "POST")[0] == 403
    assert http(url + "/api/v1/incidents", "t-staff")[0] == 200
    # the clock endpoint exists only with a simulated clock
    assert http(url + "/api/v1/clock", "t-admin", {"advance": 5}, "POST")[0] == 404


def test_sighup_with_broken_file_keeps_old_config(proc: DaemonProcess) -> None:
    good = proc.config.read_text()
    proc.config.write_text(good + "\n[daemon\n")
    proc.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert http(proc.url + "/healthz")[0] == 200
    assert http(proc.url + "/api/v1/contracts", "t-admin")[0] == 200
    log = proc.read_log()
    assert "reload rejected; old config kept" in log and "syntax" in log
    # a good file is taken: the customer token now sees C-0001 as well
    proc.config.write_text(
        good.replace('contracts = ["C-0002"]', 'contracts = ["C-0001", "C-0002"]')
    )
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ids = [c["id"] for c in http(proc.url + "/api/v1/contracts", "t-customer")[1]["items"]]
        if ids == ["C-0001", "C-0002"]:
            break
        time.sleep(0.1)
    assert ids == ["C-0001", "C-0002"]


def test_sigterm_exits_zero(proc: DaemonProcess) -> None:
    assert proc.stop(timeout=10) == 0
    assert "daemon stopped" in proc.read_log()


def test_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Push alarms from 8 threads, SIGKILL the daemon mid-stream, and find
    every alarm that got its 202 in the database afterwards."""
    cfg = write_config(tmp_path, clock_start=None)
    p = DaemonProcess(cfg)
    p.start()
    url = p.url + "/api/v1/alarms"
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def pusher(n: int) -> None:
        i = 0
        while not stop.is_set():
            rid = f"k-{n}-{i}"
            body = {
                "v": 1,
                "id": rid,
                "serial": "JPN0012345",
                "severity": "major",
                "component": f"C{i % 7}",
                "code": "X-1",
                "message": "m",
            }
            try:
                status, _ = http(url, "t-agent", body, "POST")
            except OSError:
                return
            if status == 202:
                with lock:
                    acked.append(rid)
            i += 1

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.kill()
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= 300
    conn = sqlite3.connect(tmp_path / "monitor.db")
    stored = {r[0] for r in conn.execute("SELECT report_id FROM alarms")}
    conn.close()
    missing = [rid for rid in acked if rid not in stored]
    assert missing == []
    # and the daemon comes back on the same database
    p.start()
    status, body = http(p.url + "/api/v1/alarms?limit=1", "t-admin")
    assert status == 200 and body["items"]
    assert p.stop() == 0


def test_check_config_cli_rejects_with_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = write_config(tmp_path)
    text = cfg.read_text().replace('hours = "08:30-17:30"', 'hours = "08:30-25:00"', 1)
    cfg.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "25:00" in ln)
    res = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check-config", "-c", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert f"{cfg}:{line}: plans.express-5x9.hours:" in res.stderr
    assert "Traceback" not in res.stderr


def test_hours_and_fee_cli(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = write_config(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.cli", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )

    res = cli("hours", "C-0001", "--at", "2026-11-20T17:45:00+09:00", "--next", "2")
    assert res.returncode == 0, res.stderr
    assert "in hours  no" in res.stdout
    assert "2026-11-24T08:30:00+09:00 .. 2026-11-24T17:30:00+09:00" in res.stdout
    res = cli("fee", "--start", "2026-11-20T20:30:00+09:00", "--minutes", "100")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "total 22500"
    res = cli("hours", "C-9")
    assert res.returncode == 2 and "no contract 'C-9'" in res.stderr
    res = cli("fee", "--start", "yesterday", "--minutes", "10")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_systemd_notify_protocol(tmp_path: Path) -> None:
    """READY once serving, WATCHDOG pings, RELOADING/READY on SIGHUP,
    STOPPING on SIGTERM — on a real unix datagram socket like systemd's."""
    import os
    import socket

    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    cfg = write_config(tmp_path, clock_start=None)
    p = DaemonProcess(cfg)
    old = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    os.environ["NOTIFY_SOCKET"] = sock_path
    os.environ["WATCHDOG_USEC"] = "400000"  # ping every 0.2 s
    try:
        p.start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    got: list[str] = []

    def collect(until: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and until not in got:
            with contextlib.suppress(TimeoutError):
                got.extend(sock.recv(4096).decode().splitlines())

    try:
        collect("WATCHDOG=1")
        assert "READY=1" in got and "WATCHDOG=1" in got
        p.signal(signal.SIGHUP)
        collect("RELOADING=1")
        assert "RELOADING=1" in got
        assert p.stop() == 0
        collect("STOPPING=1")
        assert "STOPPING=1" in got
    finally:
        p.kill()
        sock.close()
