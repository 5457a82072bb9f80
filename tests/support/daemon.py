"""Run the real daemon in tests: in-process (async context manager) or as a
subprocess (for SIGKILL and signal tests), plus a config writer and a webhook
receiver that records what the notifier posts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.runtime import Runtime
from tests.support.ports import free_port

TOKENS = {
    "admin": "t-admin",
    "staff": "t-staff",
    "agent": "t-agent",
    "customer": "t-customer",
}

BASE = """
[daemon]
timezone = "Asia/Tokyo"
database = "{db}"
clock = "{clock}"
{clock_start}
instance = "test-1"

[http]
listen = "127.0.0.1:{http_port}"

[calendars.jp]
holidays = "JP"
closed = ["12-29", "12-30", "12-31", "01-02", "01-03"]

[plans.express-5x9]
days = "mon-fri"
consecutive = 5
hours = "08:30-17:30"
calendar = "jp"
response = "2h"

[plans.express-24x7]
days = "mon-sun"
hours = "00:00-24:00"
calendar = "none"
response = "4h"

[[tariff]]
hours = "08:30-17:30"
first_hour = 10000
per_15min = 2500
[[tariff]]
hours = "17:30-21:00"
first_hour = 12000
per_15min = 3000
[[tariff]]
hours = "21:00-08:30"
first_hour = 14000
per_15min = 3500

[[contracts]]
id = "C-0001"
customer = "Example Corp / billing"
plan = "express-5x9"
start = 2025-04-01
years = 5
registered = true
ack_timeout = "30m"
contacts = [
  {{ name = "Sato", webhook = "{hook}/sato" }},
  {{ name = "Oncall", webhook = "{hook}/oncall" }},
]

[[contracts]]
id = "C-0002"
customer = "Night Owl KK"
plan = "express-5x9"
start = 2025-04-01
years = 5
registered = true
after_hours = "notify-critical"
ack_timeout = "30m"
contacts = [ {{ name = "Night", webhook = "{hook}/night" }} ]

[[contracts]]
id = "C-0003"
customer = "Lapsed Ltd"
plan = "express-24x7"
start = 2020-01-01
years = 3
registered = true
contacts = [ {{ name = "Nobody", webhook = "{hook}/nobody" }} ]

[[devices]]
serial = "JPN0012345"
model = "N8100-2801"
host = "db01"
contract = "C-0001"

[[devices]]
serial = "JPN0099999"
model = "N8100-2801"
host = "web09"
contract = "C-0002"

[[devices]]
serial = "SGH0000001"
model = "DL380"
host = "old01"
contract = "C-0003"

[[devices]]
serial = "SIGNED0001"
model = "N8100-2801"
host = "sec01"
contract = "C-0001"
secret = "s3cret"

[[api.tokens]]
token = "t-admin"
role = "admin"
[[api.tokens]]
token = "t-staff"
role = "staff"
[[api.tokens]]
token = "t-agent"
role = "agent"
[[api.tokens]]
token = "t-customer"
role = "customer"
contracts = ["C-0002"]
"""


def write_config(
    tmp: Path,
    *,
    hook: str = "http://127.0.0.1:9",
    clock_start: str | None = "2026-11-20T16:30:00+09:00",
    extra: str = "",
    db: Path | None = None,
    http_port: int | None = None,
    name: str = "monitor.toml",
    db_url: str | None = None,
) -> Path:
    """`db_url`: a postgresql:// URL instead of the SQLite file (scale-out tests)."""
    text = BASE.format(
        db=db_url or db or (tmp / "monitor.db"),
        clock="simulated" if clock_start else "system",
        clock_start=f'clock_start = "{clock_start}"' if clock_start else "",
        http_port=http_port or free_port(),
        hook=hook,
    )
    path = tmp / name
    path.write_text(text + extra, encoding="utf-8")
    return path


@dataclass
class RunningDaemon:
    daemon: Daemon
    task: asyncio.Task[None]
    url: str
    session: aiohttp.ClientSession

    @property
    def rt(self) -> Runtime:
        assert self.daemon.runtime is not None
        return self.daemon.runtime

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"}

    async def get(self, path: str, role: str = "admin") -> Any:
        async with self.session.get(self.url + path, headers=self.headers(role)) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            return await resp.json()

    async def post(self, path: str, body: Any, role: str = "admin") -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body, headers=self.headers(role)) as r:
            return r.status, await r.json()

    async def alarm(self, role: str = "agent", **fields: Any) -> tuple[int, Any]:
        body = {
            "v": 1,
            "severity": "major",
            "component": "PSU1",
            "code": "PSU-0003",
            "message": "Power supply 1 failure detected",
            "serial": "JPN0012345",
        }
        body.update(fields)
        return await self.post("/api/v1/alarms", body, role)

    async def set_clock(self, when: str) -> None:
        status, body = await self.post("/api/v1/clock", {"set": when})
        assert status == 200, body
        await self.settle()

    async def settle(self) -> None:
        """Let the scheduler take what is due now (it runs on the clock)."""
        await self.rt.pipeline.run_step(lambda conn, ctx: None)
        for _ in range(3):
            await asyncio.sleep(0.05)
            from monitor.scheduler import Scheduler

            await Scheduler(self.rt.pipeline).run_once()

    async def incident(self, incident: int) -> Any:
        return await self.get(f"/api/v1/incidents/{incident}")

    async def metric(self, name: str) -> float:
        async with self.session.get(self.url + "/metrics") as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.asynccontextmanager
async def running(config_path: Path) -> AsyncIterator[RunningDaemon]:
    config = load_config(config_path)
    stop = asyncio.Event()
    daemon = Daemon(str(config_path), config, stop_event=stop)
    task = asyncio.create_task(daemon.run())
    url = f"http://127.0.0.1:{config.http.port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        try:
            yield RunningDaemon(daemon, task, url, session)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


@dataclass
class Hook:
    """A webhook receiver: records each POST; `behaviour` may delay or fail."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    behaviour: Callable[[dict[str, Any]], int] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def by(self, contact: str) -> list[dict[str, Any]]:
        return [r for r in self.received if r["path"].endswith("/" + contact)]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.1)
        return self.received


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Hook]:
    hook = Hook()

    async def handle(request: web.Request) -> web.Response:
        entry = {
            "path": request.path,
            "key": request.headers.get("Idempotency-Key"),
            "body": await request.json(),
        }
        status = hook.behaviour(entry) if hook.behaviour else 200
        if status < 300:
            hook.received.append(entry)
            hook.arrived.set()
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    hook.url = f"http://127.0.0.1:{port}"
    try:
        yield hook
    finally:
        await runner.cleanup()


# -- subprocess daemon ---------------------------------------------------------------


@dataclass
class DaemonProcess:
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    url: str = ""

    def start(self, timeout: float = 20.0) -> None:
        self.url = f"http://127.0.0.1:{load_config(self.config).http.port}"
        self.log = self.config.parent / "daemon.log"
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "-c", str(self.config)],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"daemon not up: {self.read_log()}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
