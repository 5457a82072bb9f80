"""Helpers shared by the test_agent_* modules (no tests here): an agent
config writer, an MQTT watcher, an SMTP sink and an emulated modem on a pty.

Waits poll with generous timeouts and never assert on how long something
took: the machines are shared and slow at times.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import email
import email.policy
import fcntl
import json
import os
import select
import termios
import threading
import time
import tty
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from monitor_agent.agent import Agent
from monitor_agent.config import AgentConfig, load_agent_config

from monitor.dte import DteOptions
from monitor.formats.express import parse_express
from monitor.model import AlarmReport
from monitor.modem import FrameReceived, ModemEngine, ModemSettings, Write

SERIAL = "JPN0012345"
NUMBER = "0120223042"
TIMEOUT = 30.0
T = TypeVar("T")

# Short DTE timers: a quick suite, still generous for a loaded machine.
FAST_DTE = DteOptions(
    command_timeout=3.0, connect_timeout=3.0, answer_timeout=2.0, busy_delay=0.05, guard_time=0.3
)


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = TIMEOUT) -> T:
    """Poll `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


def agent_toml(
    tmp: Path,
    *,
    serial_no: str = SERIAL,
    secret: str = "",
    heartbeat: str = "60s",
    mqtt_url: str | None = None,
    smtp: str | None = None,
    smtp_after: str = "1s",
    serial_port: str | None = None,
    serial_after: str = "1s",
    collectors: str = "",
    name: str = "agent.toml",
) -> Path:
    lines = [
        "[agent]",
        f'serial = "{serial_no}"',
        'model = "N8100-2801"',
        'host = "db01"',
        f'secret = "{secret}"',
        'spool = "spool.db"',
        f'heartbeat = "{heartbeat}"',
    ]
    if mqtt_url:
        lines += ["[mqtt]", f'url = "{mqtt_url}"', 'topic_prefix = "express"', 'keepalive = "5s"']
    if smtp:
        lines += [
            "[smtp]",
            f'server = "{smtp}"',
            'to = "alarms@monitor.example"',
            'from = "agent@db01.example.jp"',
            f'after = "{smtp_after}"',
            'timeout = "10s"',
        ]
    if serial_port:
        lines += [
            "[serial]",
            f'port = "{serial_port}"',
            "baud = 9600",
            f'number = "{NUMBER}"',
            f'after = "{serial_after}"',
        ]
    path = tmp / name
    path.write_text("\n".join(lines) + "\n" + collectors, encoding="utf-8")
    return path


def sel_collector(path: Path, interval: str = "1s") -> str:
    return (
        f'\n[collectors.ipmi]\npath = "{path}"\ninterval = "{interval}"\ntimezone = "Asia/Tokyo"\n'
    )


def sel_line(
    n: int,
    text: str = "Failure detected",
    sensor: str = "Power Supply PS1 Status",
    direction: str = "Asserted",
) -> str:
    when = f"11/20/2026 | 10:{n // 60 % 60:02d}:{n % 60:02d}"
    return f"{n:4x} | {when} | {sensor} | {text} | {direction}\n"


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig, **kwargs: Any) -> AsyncIterator[Agent]:
    """The agent in-process on the test's loop, stopped cleanly at the end."""
    agent = Agent(config, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        agent.spool.close()


def load(path: Path) -> AgentConfig:
    return load_agent_config(path)


# -- MQTT ---------------------------------------------------------------------------------


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttWatcher:
    """Subscribes to `express/#` (QoS 1, persistent session: nothing published
    while it reconnects after a broker restart is missed)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.seen: list[Seen] = []
        self.ready = asyncio.Event()
        self._id = f"watcher-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self._id, clean_session=False
                ) as client:
                    await client.subscribe("express/#", qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.seen.append(
                            Seen(str(message.topic), bytes(payload), bool(message.retain))
                        )
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> MqttWatcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def on(self, kind: str, serial: str = SERIAL) -> list[Seen]:
        return [s for s in self.seen if s.topic == f"express/{kind}/{serial}"]

    def alarm_ids(self, serial: str = SERIAL) -> list[str]:
        return [s.json()["id"] for s in self.on("alarm", serial)]


# -- SMTP ---------------------------------------------------------------------------------


@dataclass
class Mail:
    sender: str
    rcpt: list[str]
    raw: bytes

    def report(self) -> AlarmReport:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        body = msg.get_content()
        result = parse_express(str(msg["Subject"]), body.splitlines(), "no-id")
        assert isinstance(result, AlarmReport), result
        return result


@dataclass
class MailHandler:
    """Records mails; `reply(report_id)` may return another DATA reply."""

    reply: Callable[[str], str | None] = lambda report_id: None
    mails: list[Mail] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        mail = Mail(
            str(envelope.mail_from), list(envelope.rcpt_tos), envelope.original_content or b""
        )
        report_id = mail.report().id
        answer = self.reply(report_id)
        if answer is not None:
            self.refused.append(report_id)
            return answer
        self.mails.append(mail)
        return "250 OK stored"

    def ids(self) -> list[str]:
        return [m.report().id for m in self.mails]


@contextlib.asynccontextmanager
async def smtp_sink(handler: MailHandler | None = None) -> AsyncIterator[tuple[MailHandler, int]]:
    handler = handler or MailHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(handler, hostname="sink.test"), "127.0.0.1", 0
    )
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield handler, port
    finally:
        server.close()
        await server.wait_closed()


# -- an emulated modem on a pty (the daemon's side, without the daemon) ---------------------

Verdict = Callable[[int, dict[str, Any]], tuple[str, str | None]]


def always_ack(n: int, alarm: dict[str, Any]) -> tuple[str, str | None]:
    return ("ack", None)


class PtyModem:
    """`monitor.modem.ModemEngine` on the master side of a pty, pumped by a
    thread; the agent opens `path` (the slave) like /dev/ttyS0.  `verdict`
    decides each frame: ("ack", None) or ("nak", reason)."""

    def __init__(self, verdict: Verdict = always_ack) -> None:
        self.verdict = verdict
        self.engine = ModemEngine(ModemSettings(numbers=(NUMBER,)))
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.frames: list[dict[str, Any]] = []
        self.acked: list[str] = []
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="pty-modem", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            os.close(fd)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.master, self._stop_r], [], [], 0.05)
            if self._stop_r in ready:
                return
            now = time.monotonic()
            actions = self.engine.tick(now)
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    data = b""  # EIO while no one has the slave open
                actions += self.engine.feed(data, now)
            self._handle(actions, now)

    def _handle(self, actions: list[Any], now: float) -> None:
        for action in actions:
            if isinstance(action, Write):
                os.write(self.master, action.data)
            elif isinstance(action, FrameReceived):
                alarm = json.loads(action.payload)
                n = len(self.frames)
                self.frames.append(alarm)
                verdict, reason = self.verdict(n, alarm)
                if verdict == "ack":
                    self.acked.append(alarm["id"])
                    self._handle(
                        self.engine.report_result(action.token, alarm["id"], None, now), now
                    )
                elif verdict == "nak":
                    self._handle(self.engine.report_result(action.token, None, reason, now), now)


class MasterPort:
    """A pyserial-like port on a pty master (the DTE's end when the daemon
    holds the slave)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.timeout: float | None = 0.05

    @property
    def in_waiting(self) -> int:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        except OSError:
            return 0
        return buf[0]

    def read(self, size: int = 1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, max(1, size))
        except OSError:
            time.sleep(self.timeout or 0.01)
            return b""

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def close(self) -> None:
        pass  # the test owns the fd
