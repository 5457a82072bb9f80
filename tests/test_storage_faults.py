"""Storage faults: a full disk or a locked database answers temporary
failures on every channel (SMTP 451, HTTP 503, serial NAK busy, MQTT no
PUBACK then redelivery), never a crash; nothing is half-stored; and the
daemon recovers without a restart when the store takes writes again."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.dte import DialupClient, DteOptions, SendResult
from monitor.store import StorageUnavailable, Store
from tests.support import mosquitto as support
from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.test_chaos_helpers import (
    ACCEPT,
    DEVICES,
    NUMBER,
    MqttSender,
    alarm_json,
    channels_config,
    express_mail,
    hook_server,
    report,
)
from tests.test_serial_pty import PtyLine, ptys

__all__ = ["ptys"]  # the fixture, re-exported for pytest

mosquitto_factory = support.mosquitto_factory
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


async def test_full_database_answers_503_then_recovers(tmp_path: Path) -> None:
    # Out of service hours: the incident is deferred, so no notice is being
    # recorded meanwhile (a small write that still fits would report the
    # store healthy again before /readyz is asked).
    cfg = write_config(tmp_path, clock_start="2026-11-20T20:00:00+09:00")
    async with running(cfg) as d:
        status, _ = await d.alarm(id="ok-1")
        assert status == 202

        def fill(conn: sqlite3.Connection) -> None:
            # SQLite's own "disk full": no page may be added beyond this.
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await d.rt.store.write(fill)
        big = "x" * 8000
        status, body = await d.alarm(id="full-1", message=big)
        assert status == 503 and body == {"error": "storage unavailable"}
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 503
            assert "store" in (await resp.json())["down"]
        async with d.session.get(d.url + "/healthz") as resp:
            assert resp.status == 200  # alive, just not taking writes

        await d.rt.store.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        status, again = await d.alarm(id="full-1", message=big)
        assert status == 202 and again["duplicate"] is False  # nothing half-stored before
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 200
        ids = [a["id"] for a in (await d.get("/api/v1/alarms"))["items"]]
        assert ids == ["full-1", "ok-1"]


# -- the writer thread never dies ------------------------------------------------------


async def test_writer_survives_a_storage_error_in_its_retry_pass(tmp_path: Path) -> None:
    """A batch with a failing job is run again with one savepoint per job; if
    the disk is full in that second pass too (SQLite then rolls the whole
    transaction back), the batch fails with StorageUnavailable and the writer
    goes on.  (It used to die there, and every later write waited forever.)"""
    store = Store(str(tmp_path / "w.db"))
    store.open()
    try:
        await store.write(lambda c: c.execute("CREATE TABLE blob (b BLOB)"))

        def fill(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await store.write(fill)
        gate = threading.Event()
        # Hold the writer so that the next two jobs land in one batch.
        blocker = asyncio.ensure_future(store.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.2)

        def bug(conn: sqlite3.Connection) -> None:
            raise ValueError("a bug in one job")

        def big(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO blob VALUES (?)", (b"x" * 200_000,))

        jobs = [asyncio.ensure_future(store.write(bug)), asyncio.ensure_future(store.write(big))]
        await asyncio.sleep(0.2)
        gate.set()
        assert await asyncio.wait_for(blocker, 10) is True
        results = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 10)
        assert all(isinstance(r, StorageUnavailable | ValueError) for r in results), results
        assert isinstance(results[1], StorageUnavailable), results
        # The writer is alive: small writes go on, big ones once space returns.
        assert await asyncio.wait_for(store.write(lambda c: 42), 10) == 42
        await store.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        await asyncio.wait_for(store.write(big), 10)
        assert store.up
    finally:
        store.close()


# -- every channel ---------------------------------------------------------------------

BIG = "x" * 7000  # needs new pages: refused by a database that may not grow


def four_channel_config(
    tmp_path: Path, hook: str, broker: Mosquitto, line: PtyLine
) -> tuple[Path, int]:
    smtp_port = free_port()
    cfg = channels_config(
        tmp_path,
        hook=hook,
        smtp_port=smtp_port,
        broker_url=broker.url,
        serial_path=line.path,
        clock_start="2026-11-20T10:00:00+09:00",
    )
    return cfg, smtp_port


def smtp_once(port: int, report_id: str, message: str = BIG) -> tuple[int, str]:
    r = report(report_id, "smtp", message=message)
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("agent.example.jp")
        assert s.mail(f"agent@{r.host}.example.jp")[0] == 250
        assert s.rcpt(ACCEPT)[0] == 250
        code, text = s.data(express_mail(r))
        return code, text.decode()


def serial_once(port: Any, report_id: str, message: str = BIG) -> SendResult:
    options = DteOptions(
        command_timeout=5.0,
        connect_timeout=5.0,
        answer_timeout=30.0,  # the store waits up to its busy_timeout (5 s) first
        tries=1,
        guard_time=0.3,
    )
    client = DialupClient(port, options)
    client.initialize()
    client.dial(NUMBER)
    try:
        return client.send(report_id, alarm_json(report(report_id, "serial", message=message)))
    finally:
        client.hangup()


async def http_once(d: RunningDaemon, report_id: str, message: str = BIG) -> tuple[int, Any]:
    body = json.loads(alarm_json(report(report_id, "http", message=message)))
    return await d.post("/api/v1/alarms", body, role="agent")


async def stored(d: RunningDaemon, serial: str) -> list[str]:
    def q(conn: sqlite3.Connection) -> list[str]:
        sql = "SELECT report_id FROM alarms WHERE device = ? ORDER BY seq"
        return [r[0] for r in conn.execute(sql, (serial,))]

    return await d.rt.store.read(q)


async def wait_for(check: Callable[[], Awaitable[object]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def readyz(d: RunningDaemon) -> tuple[int, Any]:
    async with d.session.get(d.url + "/readyz") as resp:
        return resp.status, await resp.json()


def mqtt_connects(broker: Mosquitto) -> int:
    return broker.log_text().count(" as monitor-rely")


async def all_four_refused_then_recovered(
    d: RunningDaemon,
    broker: Mosquitto,
    line: PtyLine,
    smtp_port: int,
    tag: str,
    *,
    fault_on: Callable[[], Awaitable[None]],
    fault_off: Callable[[], Awaitable[None]],
) -> None:
    await wait_for(lambda: _is_ready(d), "every listener up")
    status, _ = await http_once(d, f"{tag}-before", message="small")
    assert status == 202
    await fault_on()
    connects = mqtt_connects(broker)
    agent = MqttSender(threading.Event(), broker.host, broker.port)
    agent.open()
    try:
        # MQTT: the broker takes it (its PUBACK to the agent); the daemon does not.
        assert await asyncio.to_thread(agent.try_send, report(f"{tag}-mqtt", "mqtt", message=BIG))
        # The other three at once: each gets its temporary failure.
        http, smtp, serial = await asyncio.gather(
            http_once(d, f"{tag}-http"),
            asyncio.to_thread(smtp_once, smtp_port, f"{tag}-smtp"),
            asyncio.to_thread(serial_once, line.port, f"{tag}-serial"),
        )
        assert http == (503, {"error": "storage unavailable"}), http
        assert smtp[0] == 451 and smtp[1].startswith("4.3.0"), smtp
        assert (serial.outcome, serial.reason) == ("failed", "busy"), serial
        # Not acknowledged: the daemon reconnects to have it redelivered.
        await wait_for(lambda: _true(mqtt_connects(broker) > connects), "an MQTT reconnect", 60)
        assert await stored(d, DEVICES["mqtt"]) == []
        status, body = await readyz(d)
        assert status == 503 and "store" in body["down"], body
        async with d.session.get(d.url + "/healthz") as resp:
            assert resp.status == 200  # alive, only not taking writes
        async with d.session.get(d.url + "/api/v1/incidents", headers=d.headers()) as resp:
            assert resp.status == 200  # reads go on

        await fault_off()
        # The senders' retries go in; the MQTT report by redelivery.
        status, body = await http_once(d, f"{tag}-http")
        assert status == 202 and body["duplicate"] is False  # nothing half-stored
        code, text = await asyncio.to_thread(smtp_once, smtp_port, f"{tag}-smtp")
        assert code == 250 and "stored as alarm" in text, (code, text)
        result = await asyncio.to_thread(serial_once, line.port, f"{tag}-serial")
        assert result.ok, result

        async def mqtt_in() -> bool:
            return await stored(d, DEVICES["mqtt"]) == [f"{tag}-mqtt"]

        await wait_for(mqtt_in, "the MQTT report redelivered and stored", 120)
    finally:
        agent.close()
    assert await stored(d, DEVICES["http"]) == [f"{tag}-before", f"{tag}-http"]
    for channel in ("smtp", "serial"):
        assert await stored(d, DEVICES[channel]) == [f"{tag}-{channel}"], channel
    await wait_for(lambda: _is_ready(d), "ready again")


async def _is_ready(d: RunningDaemon) -> bool:
    return (await readyz(d))[0] == 200


async def _true(value: bool) -> bool:
    return value


@needs_mosquitto
async def test_full_database_on_every_channel(
    tmp_path: Path, ptys: list[PtyLine], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    line = PtyLine.open()
    ptys.append(line)
    with hook_server() as hook:
        cfg, smtp_port = four_channel_config(tmp_path, hook.url, broker, line)
        async with running(cfg) as d:

            async def full() -> None:
                def fill(conn: sqlite3.Connection) -> None:
                    pages = conn.execute("PRAGMA page_count").fetchone()[0]
                    conn.execute(f"PRAGMA max_page_count = {pages}")

                await d.rt.store.write(fill)

            async def space() -> None:
                await d.rt.store.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))

            await all_four_refused_then_recovered(
                d, broker, line, smtp_port, "full", fault_on=full, fault_off=space
            )


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()          # hold the lock until the test closes our stdin
conn.execute("ROLLBACK")
"""


@needs_mosquitto
async def test_database_locked_by_another_process_on_every_channel(
    tmp_path: Path, ptys: list[PtyLine], mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """Another process holds the write lock past busy_timeout (5 s), as a
    careless `sqlite3 monitor.db` shell or a backup tool might."""
    broker = mosquitto_factory()
    line = PtyLine.open()
    ptys.append(line)
    db = tmp_path / "monitor.db"
    locker: subprocess.Popen[str] | None = None
    with hook_server() as hook:
        cfg, smtp_port = four_channel_config(tmp_path, hook.url, broker, line)
        async with running(cfg) as d:

            async def lock() -> None:
                nonlocal locker
                locker = subprocess.Popen(
                    [sys.executable, "-c", LOCKER, str(db)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert locker.stdout is not None
                line_ = await asyncio.to_thread(locker.stdout.readline)
                assert line_.strip() == "locked"

            async def unlock() -> None:
                assert locker is not None and locker.stdin is not None
                locker.stdin.close()
                await asyncio.to_thread(locker.wait, 30)

            try:
                await all_four_refused_then_recovered(
                    d, broker, line, smtp_port, "locked", fault_on=lock, fault_off=unlock
                )
            finally:
                if locker is not None:
                    if locker.poll() is None:
                        locker.kill()
                        locker.wait(10)
                    for pipe in (locker.stdin, locker.stdout):
                        if pipe is not None:
                            pipe.close()


# -- a real disk full (ENOSPC) on a small tmpfs ------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "8m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_disk(ballast: Path) -> int:
    """Write until the filesystem says ENOSPC; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as f:
        while True:
            try:
                n = f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
                continue
            written += n or 0
    os.sync()
    return written


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_real_disk_full_then_space_returns(tmp_path: Path) -> None:
    """The database on an 8 MiB tmpfs filled to the last byte: the write of
    the WAL fails with ENOSPC; HTTP 503 and SMTP 451; the daemon lives; after
    the ballast is deleted the same reports go in, without a restart."""
    with small_tmpfs(tmp_path / "disk") as disk, hook_server() as hook:
        smtp_port = free_port()
        cfg = channels_config(
            tmp_path,
            hook=hook.url,
            smtp_port=smtp_port,
            clock_start="2026-11-20T10:00:00+09:00",
        )
        text = cfg.read_text().replace(str(tmp_path / "monitor.db"), str(disk / "monitor.db"))
        cfg.write_text(text)
        async with running(cfg) as d:
            status, _ = await http_once(d, "enospc-before", message="small")
            assert status == 202
            ballast = disk / "ballast"
            await asyncio.to_thread(fill_disk, ballast)
            refused = 0
            # Several, so the WAL must grow past what it already holds.
            for i in range(20):
                status, _ = await http_once(d, f"enospc-http-{i}")
                if status == 503:
                    refused += 1
                    break
                assert status == 202
            assert refused, "the disk never filled up"
            code, text_ = await asyncio.to_thread(smtp_once, smtp_port, "enospc-smtp")
            assert code == 451, (code, text_)
            assert (await readyz(d))[0] == 503
            ballast.unlink()
            status, body = await http_once(d, f"enospc-http-{i}")
            assert status == 202 and body["duplicate"] is False
            code, text_ = await asyncio.to_thread(smtp_once, smtp_port, "enospc-smtp")
            assert code == 250, (code, text_)
            await wait_for(lambda: _is_ready(d), "ready again")
            ids = await stored(d, DEVICES["http"])
            assert ids[0] == "enospc-before" and ids[-1] == f"enospc-http-{i}"
            assert len(ids) == len(set(ids))
