"""Shared pieces of the reliability tests (no tests here): a daemon config
with every channel on, one blocking sender per channel that keeps a report
until it is acknowledged (as an agent's spool does), a webhook receiver that
records every notice with its Idempotency-Key, and the checks that decide
"nothing acknowledged was lost, nothing was stored or notified twice".

Used by tests/test_chaos*.py, test_storage_faults.py, test_floods.py and
test_soak.py.  Everything here is blocking and thread-based, so it works the
same against an in-process daemon (from `asyncio.to_thread`) and against a
subprocess daemon that the test SIGKILLs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import smtplib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from monitor.dte import DialupClient, DteError, DteOptions
from monitor.formats.alarm_json import sign
from monitor.formats.express import build_express_mail
from monitor.model import AlarmReport
from tests.support.daemon import TOKENS, write_config

ACCEPT = "alarms@monitor.example"
NUMBER = "0120223042"
CONTRACT = "C-RELY"
# One device per channel, so every check can be made per channel.
DEVICES = {
    "http": "RELY0001",
    "smtp": "RELY0002",
    "mqtt": "RELY0003",
    "serial": "RELY0004",
}
SIGNED = "RELYSIG01"  # a device with a secret (signature tests)
SECRET = "rely-secret"
COMPONENTS = ("PSU1", "PSU2", "FAN1", "DIMM3")  # folding keeps incidents to these

# A 24x7 contract (always in a window, whatever the system clock says), two
# webhook contacts, a device per channel and a signed one.
CONTRACT_TOML = """
[[contracts]]
id = "C-RELY"
customer = "Reliability KK"
plan = "express-24x7"
start = 2025-04-01
years = 5
registered = true
ack_timeout = "30m"
contacts = [
  {{ name = "First", webhook = "{hook}/first" }},
  {{ name = "Second", webhook = "{hook}/second" }},
]
"""
DEVICE_TOML = """
[[devices]]
serial = "{serial}"
model = "N8100-2801"
host = "{host}"
contract = "C-RELY"
{secret}
"""


def channels_config(
    tmp: Path,
    *,
    hook: str,
    smtp_port: int | None = None,
    broker_url: str | None = None,
    serial_path: str | None = None,
    smtp: dict[str, Any] | None = None,
    mqtt_protocol: int = 5,
    clock_start: str | None = None,
    extra: str = "",
    http_port: int | None = None,
) -> Path:
    """A daemon config: the BASE of tests/support/daemon.py plus C-RELY and the
    channels given (None: that channel is off).  System clock by default."""
    parts = [CONTRACT_TOML.format(hook=hook)]
    for channel, serial in DEVICES.items():
        parts.append(DEVICE_TOML.format(serial=serial, host=f"rely-{channel}", secret=""))
    parts.append(
        DEVICE_TOML.format(serial=SIGNED, host="rely-signed", secret=f'secret = "{SECRET}"')
    )
    if smtp_port is not None:
        lines = ["[smtp]", f'listen = "127.0.0.1:{smtp_port}"', f'accept = ["{ACCEPT}"]']
        for key, value in (smtp or {}).items():
            lines.append(f"{key} = {json.dumps(value)}")
        parts.append("\n".join(lines) + "\n")
    if broker_url is not None:
        parts.append(
            f'[mqtt]\nurl = "{broker_url}"\nclient_id = "monitor-rely"\n'
            f'topic_prefix = "express"\nprotocol = {mqtt_protocol}\n'
        )
    if serial_path is not None:
        parts.append(
            f'[[serial]]\nport = "{serial_path}"\nbaud = 115200\n'
            f'numbers = ["{NUMBER}"]\nidle_timeout = "30s"\n'
        )
    parts.append(extra)
    return write_config(
        tmp,
        hook=hook,
        clock_start=clock_start,
        extra="\n" + "\n".join(parts),
        http_port=http_port,
    )


def report(
    report_id: str,
    channel: str,
    *,
    serial: str | None = None,
    severity: str = "major",
    component: str | None = None,
    message: str = "Power supply failure detected",
    secret: str | None = None,
) -> AlarmReport:
    serial = serial or DEVICES[channel]
    r = AlarmReport(
        id=report_id,
        serial=serial,
        severity=severity,
        code="PSU-0003",
        message=message,
        model="N8100-2801",
        host=f"rely-{channel}",
        component=component if component is not None else "PSU1",
    )
    if secret:
        r = dataclasses.replace(r, sig=sign(r, secret))
    return r


def alarm_json(r: AlarmReport) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "id": r.id,
        "serial": r.serial,
        "severity": r.severity,
        "component": r.component,
        "code": r.code,
        "message": r.message,
    }
    if r.sig:
        body["sig"] = r.sig
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def express_mail(r: AlarmReport) -> bytes:
    return build_express_mail(r, sender=f"agent@{r.host}.example.jp", to=ACCEPT)


# -- the webhook receiver --------------------------------------------------------------


@dataclass
class Notice:
    path: str
    key: str
    body: dict[str, Any]


@dataclass
class HookServer:
    """Records every webhook POST (path, Idempotency-Key, body); answers 200."""

    url: str = ""
    notices: list[Notice] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Notice]:
        with self.lock:
            return list(self.notices)


@contextlib.contextmanager
def hook_server(delay: float = 0.0) -> Iterator[HookServer]:
    """`delay`: seconds before each answer (a slow receiver widens the window in
    which a crash finds a notice sent but its outcome not yet recorded)."""
    hook = HookServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(size)
            try:
                body = json.loads(data)
            except ValueError:
                body = {"unparsed": data.decode("utf-8", "replace")}
            if delay:
                time.sleep(delay)
            with hook.lock:
                hook.notices.append(
                    Notice(self.path, self.headers.get("Idempotency-Key", ""), body)
                )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="hook", daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- senders -------------------------------------------------------------------------


class Sender(threading.Thread):
    """Sends reports with fresh ids until `stop` is set, each one again and
    again until it is acknowledged (an agent's spool); then finishes the one
    in hand.  `rate` (reports/s, 0 = as fast as acks come) paces it.

    `acked` holds the ids acknowledged; `failures` counts every try that got
    a temporary failure or a broken connection (kills, restarts, faults).
    """

    channel = ""

    def __init__(
        self,
        stop: threading.Event,
        *,
        rate: float = 0.0,
        prefix: str = "",
        limit: int | None = None,
        give_up: float = 120.0,
        fingerprint_every: int | None = None,
    ) -> None:
        super().__init__(name=f"sender-{self.channel}", daemon=True)
        self.stop = stop
        self.rate = rate
        self.prefix = prefix or f"{self.channel}-{uuid.uuid4().hex[:6]}"
        self.limit = limit
        self.give_up = give_up
        # None: the four COMPONENTS in turn (a few incidents, much folding);
        # n: a new component (so a new incident) every n reports.
        self.fingerprint_every = fingerprint_every
        self.acked: list[str] = []
        self.sent_tries = 0
        self.failures = 0
        self.temporary: dict[str, int] = {}  # temporary answers by kind (451, 503, busy, …)
        self.error: BaseException | None = None
        self._rng = random.Random(hash(self.prefix))

    # subclasses: open(), close(), try_send(report) -> True (acked) / False (try again)
    def open(self) -> None: ...

    def close(self) -> None: ...

    def try_send(self, r: AlarmReport) -> bool:
        raise NotImplementedError

    def next_report(self, i: int) -> AlarmReport:
        # Mostly `major`, now and then `critical`: folds, and severity rises
        # that send `escalated` notices.
        severity = "critical" if i % 37 == 36 else "major"
        if self.fingerprint_every:
            component = f"F{i // self.fingerprint_every:04d}"
        else:
            component = COMPONENTS[i % len(COMPONENTS)]
        return report(
            f"{self.prefix}-{i:06d}", self.channel, severity=severity, component=component
        )

    def note(self, kind: str) -> None:
        self.failures += 1
        self.temporary[kind] = self.temporary.get(kind, 0) + 1

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                self.close()

    def _run(self) -> None:
        i = 0
        started = time.monotonic()
        while not self.stop.is_set() and (self.limit is None or i < self.limit):
            if self.rate > 0:
                due = started + i / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
            r = self.next_report(i)
            deadline = time.monotonic() + self.give_up
            while True:
                self.sent_tries += 1
                if self.try_send(r):
                    self.acked.append(r.id)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{r.id} never acknowledged ({self.temporary})")
                time.sleep(0.05 + self._rng.random() * 0.1)
            i += 1


class HttpSender(Sender):
    channel = "http"

    def __init__(self, stop: threading.Event, port: int, **kw: Any) -> None:
        super().__init__(stop, **kw)
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def try_send(self, r: AlarmReport) -> bool:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            self.conn.request(
                "POST",
                "/api/v1/alarms",
                body=alarm_json(r),
                headers={
                    "Authorization": f"Bearer {TOKENS['agent']}",
                    "Content-Type": "application/json",
                },
            )
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self.note("connection")
            return False
        if resp.status == 202:
            return True
        if resp.status == 503:
            self.note("503")
            return False
        raise AssertionError(f"HTTP {resp.status} for {r.id}: {body[:200]!r}")


class SmtpSender(Sender):
    channel = "smtp"

    def __init__(self, stop: threading.Event, port: int, **kw: Any) -> None:
        super().__init__(stop, **kw)
        self.port = port
        self.smtp: smtplib.SMTP | None = None

    def close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.close()
            self.smtp = None

    def try_send(self, r: AlarmReport) -> bool:
        try:
            if self.smtp is None:
                self.smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=15)
                self.smtp.ehlo("agent.example.jp")
            code, msg = self.smtp.mail(f"agent@{r.host}.example.jp")
            if code == 250:
                code, msg = self.smtp.rcpt(ACCEPT)
            if code == 250:
                code, msg = self.smtp.data(express_mail(r))
        except (smtplib.SMTPException, OSError):
            self.close()
            self.note("connection")
            return False
        if code == 250:
            return True
        if 400 <= code < 500:
            self.note(str(code))
            if code == 421:
                self.close()
            else:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self.smtp.rset()
            return False
        raise AssertionError(f"SMTP {code} for {r.id}: {msg!r}")


class MqttSender(Sender):
    """QoS 1 through the broker.  Acknowledged = the broker's PUBACK (SPEC 3.2:
    over MQTT, durable ends at the broker); a publish without a PUBACK in
    `ack_timeout` is published again (the agent's spool does the same)."""

    channel = "mqtt"

    def __init__(
        self, stop: threading.Event, host: str, port: int, ack_timeout: float = 10.0, **kw: Any
    ) -> None:
        super().__init__(stop, **kw)
        self.host = host
        self.port = port
        self.ack_timeout = ack_timeout
        self.client: mqtt.Client | None = None

    def open(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"rely-agent-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(0.2, 2)
        connected = threading.Event()
        client.on_connect = lambda *a: connected.set()
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        self.client = client
        if not connected.wait(30):
            raise TimeoutError("MQTT agent: no CONNACK from the broker")

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
                self.client.loop_stop()
            self.client = None

    def run(self) -> None:
        try:
            self.open()
        except BaseException as exc:
            self.error = exc
            return
        super().run()

    def try_send(self, r: AlarmReport) -> bool:
        assert self.client is not None
        info = self.client.publish(f"express/alarm/{r.serial}", alarm_json(r), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # Not connected (the broker restarting): paho keeps it queued and
            # may still send it; this report is tried again anyway.
            self.note(f"rc{info.rc}")
            time.sleep(0.2)
            return False
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(self.ack_timeout)
        try:
            if info.is_published():
                return True
        except (RuntimeError, ValueError):
            pass
        self.note("no-puback")
        return False


class SerialSender(Sender):
    """The DTE side on a pty master: init, dial, frames; any line trouble
    (the daemon killed mid-call, a NAK busy) means: try the report again."""

    channel = "serial"

    def __init__(
        self, stop: threading.Event, port: Any, answer_timeout: float = 15.0, **kw: Any
    ) -> None:
        super().__init__(stop, **kw)
        self.port = port
        self.options = DteOptions(
            command_timeout=3.0,
            connect_timeout=5.0,
            # Above the store's 5 s busy_timeout by default; a chaos run,
            # where a dead daemon answers nothing, gives up sooner.
            answer_timeout=answer_timeout,
            tries=1,
            busy_delay=0.05,
            guard_time=0.3,
        )
        self.client: DialupClient | None = None

    def close(self) -> None:
        if self.client is not None and self.client.connected:
            with contextlib.suppress(DteError, OSError):
                self.client.hangup()
        self.client = None

    def try_send(self, r: AlarmReport) -> bool:
        try:
            if self.client is None or not self.client.connected:
                self.client = DialupClient(self.port, self.options)
                self.client.initialize()
                self.client.dial(NUMBER)
            result = self.client.send(r.id, alarm_json(r))
        except (DteError, OSError):
            self.client = None
            self.note("line")
            return False
        if result.ok:
            return True
        if result.outcome == "failed":
            self.note(result.reason)  # busy or timeout
            if result.reason == "timeout":
                self.client = None  # the daemon may have died mid-call
            return False
        raise AssertionError(f"serial {r.id}: {result}")


# -- checks --------------------------------------------------------------------------


def db_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def stored_ids(db: Path, serial: str) -> list[str]:
    return [r[0] for r in db_rows(db, "SELECT report_id FROM alarms WHERE device = ?", serial)]


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    detail: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            more = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out waiting for {what}{more}")
        time.sleep(0.1)


def progress(senders: list[Sender]) -> dict[str, Any]:
    """Where each sender stands (for timeout messages)."""
    return {
        s.channel: {"acked": len(s.acked), "temporary": s.temporary, "error": repr(s.error)}
        for s in senders
    }


@dataclass
class Verdict:
    acked: int
    stored: int
    lost: list[str]
    duplicates: int
    incidents: int
    fingerprints: int
    notices: int
    conflicting_keys: list[Any]
    duplicate_deliveries: int


def verify(db: Path, senders: list[Sender], hook: HookServer | None = None) -> Verdict:
    """Every acknowledged report stored once; one incident per fingerprint;
    every notice (incident, round, kind, severity, contact) under one key."""
    lost: list[str] = []
    acked = stored = dups = 0
    for s in senders:
        ids = stored_ids(db, DEVICES[s.channel])
        acked += len(s.acked)
        stored += len(ids)
        dups += len(ids) - len(set(ids))
        have = set(ids)
        lost.extend(i for i in s.acked if i not in have)
    serials = tuple(DEVICES[s.channel] for s in senders)
    marks = ",".join("?" * len(serials))
    incidents = db_rows(
        db, f"SELECT fingerprint, state FROM incidents WHERE device IN ({marks})", *serials
    )
    fingerprints = {f for f, _ in incidents}
    conflicting: list[Any] = []
    deliveries = 0
    total = 0
    if hook is not None:
        by_notice: dict[tuple[Any, ...], set[str]] = {}
        seen_keys: dict[str, int] = {}
        for n in hook.snapshot():
            b = n.body
            # One notice: (incident, round, kind, contact); severity rises
            # only once per round (highest kept), so it adds nothing here.
            what = (b.get("incident", {}).get("id"), b.get("round"), b.get("kind"), n.path)
            by_notice.setdefault(what, set()).add(n.key)
            seen_keys[n.key] = seen_keys.get(n.key, 0) + 1
            total += 1
        conflicting = [(k, v) for k, v in by_notice.items() if len(v) > 1]
        deliveries = sum(c - 1 for c in seen_keys.values())
    return Verdict(
        acked=acked,
        stored=stored,
        lost=lost,
        duplicates=dups,
        incidents=len(incidents),
        fingerprints=len(fingerprints),
        notices=total,
        conflicting_keys=conflicting,
        duplicate_deliveries=deliveries,
    )


def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a process, from /proc."""
    rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds
