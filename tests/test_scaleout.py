"""Scale-out: three daemons (subprocesses) on one PostgreSQL and one mosquitto,
mixed MQTT / SMTP / HTTP load, one instance SIGKILLed mid-load and started
again, then PostgreSQL restarted under all three.  Checks (issue 13):
acknowledged reports lost = 0, duplicate incidents = 0, every notice key
delivered once per receiver after the receiver's dedup by Idempotency-Key,
deferred incidents raised exactly once at the window start while three
schedulers race.

Slow (~60 s): `make test-slow`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import mosquitto as support
from tests.support.daemon import DaemonProcess, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.ports import free_port
from tests.support.postgres import PgServer, pg_server, pg_url  # noqa: F401
from tests.test_mqtt_helpers import Agent, alarm, mqtt_section
from tests.test_smtp_helpers import ACCEPT, Client, express

mosquitto_factory = support.mosquitto_factory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed"),
]

SERIAL = "JPN0012345"  # C-0001: express-5x9, webhook contacts
# Tuesday 24 Nov 2026 (Monday is a holiday): the window opens at 08:30, 25 s
# after the clocks start; reports before it make deferred incidents.
CLOCK_START = "2026-11-24T08:29:35+09:00"
WINDOW = 1795476600.0  # 2026-11-24T08:30:00+09:00
LOAD_SECONDS = 40.0
KILL_AT, RESTART_AT = 12.0, 18.0
PG_RESTART_AT = 27.0
N_FINGERPRINTS = 24


class Receiver:
    """Webhook receiver in a thread: records (key, path) of every POST."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = json.loads(body or b"{}").get("kind", "")
                with lock:
                    got.append((self.headers.get("Idempotency-Key", ""), self.path, kind))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def q(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql.encode()).fetchall())


def http(base: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path,
        data=data,
        headers={"Authorization": "Bearer t-admin", "Content-Type": "application/json"},
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_three_instances_sigkill_mid_load(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    pg_server: PgServer,  # noqa: F811
    pg_url: str,  # noqa: F811
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONITOR_NOTICE_LEASE", "5")  # a dead instance's sends resume soon
    broker = mosquitto_factory()
    smtp_ports = [free_port() for _ in range(3)]
    daemons: list[DaemonProcess] = []
    for i in range(3):
        folder = tmp_path / f"i{i}"
        folder.mkdir()
        extra = mqtt_section(broker.url, client_id=f"monitor-{i}", share_group="monitors")
        extra += f'\n[smtp]\nlisten = "127.0.0.1:{smtp_ports[i]}"\naccept = ["{ACCEPT}"]\n'
        cfg = write_config(
            folder, hook=receiver.url, clock_start=CLOCK_START, db_url=pg_url, extra=extra
        )
        cfg.write_text(cfg.read_text().replace('"test-1"', f'"monitor-{i + 1}"'))
        daemons.append(DaemonProcess(cfg))
    for d in daemons:
        d.start(timeout=30)
    for d in daemons:
        wait_until(lambda d=d: "mqtt connected" in d.read_log(), "subscriptions", 30)

    acked: dict[str, set[str]] = {"mqtt": set(), "http": set(), "smtp": set()}
    lock = threading.Lock()
    stop = threading.Event()
    dead: set[int] = set()

    def ack(channel: str, rid: str) -> None:
        with lock:
            acked[channel].add(rid)

    def mqtt_load() -> None:
        agent = Agent(broker, inflight=50)
        infos = []
        i = 0
        while not stop.is_set():
            rid = f"m-{i}"
            payload = alarm(rid, component=f"C{i % N_FINGERPRINTS}")
            infos.append((rid, agent.send(f"express/alarm/{SERIAL}", payload)))
            i += 1
            time.sleep(0.01)
        for rid, info in infos:
            info.wait_for_publish(30)
            if info.is_published():
                ack("mqtt", rid)
        agent.close()

    def http_load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            rid = f"h{worker}-{i}"
            body = {
                "v": 1, "id": rid, "serial": SERIAL, "severity": "major",
                "component": f"C{i % N_FINGERPRINTS}", "code": "PSU-0003", "message": "m",
            }  # fmt: skip
            for k in range(3):  # a load balancer: the next instance when one fails
                d = daemons[(worker + i + k) % 3]
                try:
                    status, _ = http(d.url, "/api/v1/alarms", body)
                except OSError:
                    continue
                if status == 202:
                    ack("http", rid)
                    break
            i += 1

    def smtp_load() -> None:
        i = 0
        while not stop.is_set():
            rid = f"s-{i}"
            raw = express(rid, serial=SERIAL, component=f"C{i % N_FINGERPRINTS}")
            for k in range(3):
                n = (i + k) % 3
                if n in dead:
                    continue
                try:
                    client = Client(smtp_ports[n])
                    try:
                        code, _ = client.send(raw)
                    finally:
                        client.close()
                except OSError:
                    continue
                if code == 250:
                    ack("smtp", rid)
                    break
            i += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=mqtt_load), threading.Thread(target=smtp_load)]
    threads += [threading.Thread(target=http_load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    started = time.monotonic()
    try:
        time.sleep(KILL_AT)
        dead.add(1)
        daemons[1].kill()
        time.sleep(RESTART_AT - KILL_AT)
        _, me = http(daemons[0].url, "/api/v1/whoami")
        daemons[1].start(timeout=30)
        http(daemons[1].url, "/api/v1/clock", {"set": me["now"]})
        dead.discard(1)
        if pg_server.controllable:
            # and PostgreSQL restarts under all three (every channel answers
            # temporary failures meanwhile; nothing acknowledged may be lost)
            time.sleep(max(0.0, PG_RESTART_AT - (time.monotonic() - started)))
            pg_server.restart("fast")
        time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    all_acked = {rid for ids in acked.values() for rid in ids}

    def stored() -> set[str]:
        return {r[0] for r in q(pg_url, "SELECT report_id FROM alarms")}

    try:
        wait_until(lambda: all_acked <= stored(), "every acknowledged report stored")
        # notices: everything pending goes out (the dead instance's leases expire)
        wait_until(
            lambda: q(pg_url, "SELECT count(*) FROM notices WHERE status = 'pending'") == [(0,)],
            "all notices sent",
        )
    except AssertionError:
        for d in daemons:
            print(d.read_log()[-3000:])
        raise
    finally:
        for d in daemons:
            if d.proc and d.proc.poll() is None:
                d.stop(15)

    if pg_server.controllable:  # the restart reached every instance
        assert all("event listener reconnected" in d.read_log() for d in daemons)
    lost = all_acked - stored()
    assert not lost, f"{len(lost)} acknowledged reports lost"
    n_alarms = q(pg_url, "SELECT count(*), count(DISTINCT (device, report_id)) FROM alarms")[0]
    assert n_alarms[0] == n_alarms[1]
    # one incident per fingerprint, and its count is every alarm folded into it
    incidents = q(pg_url, "SELECT fingerprint, count(*) FROM incidents GROUP BY 1")
    assert len(incidents) == N_FINGERPRINTS and all(c == 1 for _, c in incidents), incidents
    counts = q(
        pg_url,
        "SELECT i.id, i.count, (SELECT count(*) FROM alarms a WHERE a.incident = i.id)"
        " FROM incidents i",
    )
    assert all(c == n for _, c, n in counts), counts
    # deferred ones raised once, at (or after) the window start
    raised = q(pg_url, "SELECT raised_at, due_at, state FROM incidents WHERE due_at IS NOT NULL")
    assert raised, "no incident was deferred: the load started too late"
    assert all(r[2] in ("open", "notified") and r[0] >= WINDOW for r in raised), raised
    # notices: each key delivered; repeats only with the same key (receiver dedup)
    delivered = {r[0] for r in q(pg_url, "SELECT key FROM notices WHERE status = 'delivered'")}
    keys = Counter((key, path) for key, path, _ in receiver.got)
    assert delivered == {key for key, _ in keys}
    repeats = sum(n - 1 for n in keys.values())
    assert repeats <= 16, keys  # only sends in flight in the killed instance
    raised_keys = Counter(key for key, _, kind in receiver.got if kind == "raised")
    assert len(raised_keys) == N_FINGERPRINTS
    print(
        f"acked mqtt={len(acked['mqtt'])} http={len(acked['http'])} smtp={len(acked['smtp'])}"
        f" stored={len(stored())} incidents={len(incidents)} deferred={len(raised)}"
        f" notices={len(delivered)} repeated_sends={repeats}"
    )
