"""`monitor retire` (docs/scale-out.md, "Adding and removing instances"):
two daemon processes in one share group on one PostgreSQL and one private
mosquitto.  The stopped instance's persistent session holds its round-robin
share of what agents published meanwhile; retiring it stores every one of
those reports (once), then the broker forgets the session and the remaining
instance gets everything.  A storage failure midway keeps the session."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import mosquitto as support
from tests.support.daemon import DaemonProcess, write_config
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.support.postgres import pg_server, pg_url  # noqa: F401
from tests.test_mqtt_helpers import SERIAL, Agent, alarm, mqtt_section

mosquitto_factory = support.mosquitto_factory

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

TIMEOUT = 60.0
GROUP = "monitors"
SUMMARY = re.compile(
    r"^retired monitor-b: (\d+) reports stored, (\d+) duplicates, session ended$", re.M
)


def q(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql.encode()).fetchall())


def stored(url: str) -> tuple[int, int]:
    """(rows, distinct report ids) of the alarms table."""
    row = q(url, "SELECT count(*), count(DISTINCT (device, report_id)) FROM alarms")[0]
    return int(row[0]), int(row[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


RETIRE = [sys.executable, "-m", "monitor.cli", "retire"]
ACTIVITY = b"SELECT pid FROM pg_stat_activity WHERE datname = current_database()"


def retire(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RETIRE, "-c", str(config), *args], capture_output=True, text=True, timeout=120
    )


def publish(broker: Mosquitto, ids: list[str]) -> None:
    """QoS 1, each acknowledged by the broker (so it is the broker's to keep)."""
    agent = Agent(broker)
    try:
        infos = [
            agent.send(f"express/alarm/{SERIAL}", alarm(rid, component=f"C{n % 4}"))
            for n, rid in enumerate(ids)
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
    finally:
        agent.close()


def session_present(broker: Mosquitto, client_id: str) -> bool:
    """Connect as `client_id` with clean start false: does the broker hold a
    session for it?  (Session expiry 0 on this CONNECT: the look itself
    leaves no session behind.)"""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    got: dict[str, bool] = {}
    connected = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        got["present"] = bool(flags.session_present)
        connected.set()

    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(broker.host, broker.port, 30, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return got["present"]


def instance(tmp: Path, name: str, broker: Mosquitto, db_url: str, **mqtt: Any) -> Path:
    folder = tmp / name
    folder.mkdir()
    extra = mqtt_section(broker.url, client_id=f"monitor-{name}", **mqtt)
    cfg = write_config(folder, db_url=db_url, extra=extra)
    cfg.write_text(cfg.read_text().replace('"test-1"', f'"monitor-{name}"'))
    return cfg


def test_retire_drains_the_stopped_instances_session_then_ends_it(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    pg_url: str,  # noqa: F811
) -> None:
    broker = mosquitto_factory()
    cfg_a = instance(tmp_path, "a", broker, pg_url, share_group=GROUP)
    cfg_b = instance(tmp_path, "b", broker, pg_url, share_group=GROUP)
    a, b = DaemonProcess(cfg_a), DaemonProcess(cfg_b)
    try:
        for d in (a, b):
            d.start(timeout=30)
        for d in (a, b):
            wait_until(lambda d=d: "mqtt connected" in d.read_log(), "subscribed")
        assert b.stop(15) == 0  # SIGTERM: B's session stays, with its subscriptions

        first = [f"r-{n}" for n in range(200)]
        publish(broker, first)
        # A stores its round-robin share; B's share waits in B's session.
        seen: list[int] = []

        def settled() -> bool:
            seen.append(stored(pg_url)[0])
            return len(seen) > 10 and seen[-1] > 0 and seen[-1] == seen[-11]

        wait_until(settled, "A's share stored")
        before = seen[-1]
        assert 0 < before < 200, before

        # A running instance is not retired (it would lose its session to us).
        running = retire(cfg_a)
        assert running.returncode == 2, running
        assert "still running" in running.stderr and "Traceback" not in running.stderr

        # Storage failure midway: retire's writes wait on a lock; its writer's
        # connection is then cut (the database "goes away" under it) and the
        # lock released.  Exit 1; the session keeps what was not acknowledged.
        with psycopg.connect(pg_url) as locker, psycopg.connect(pg_url, autocommit=True) as look:
            locker.execute(b"LOCK TABLE alarms IN ACCESS EXCLUSIVE MODE")
            ours = {r[0] for r in look.execute(ACTIVITY).fetchall()}  # A's and the test's
            proc = subprocess.Popen(
                [*RETIRE, "-c", str(cfg_b), "--idle", "2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            waiting: list[int] = []

            def retire_waits() -> bool:
                rows = look.execute(ACTIVITY + b" AND wait_event_type = 'Lock'").fetchall()
                waiting[:] = [r[0] for r in rows if r[0] not in ours]
                return bool(waiting) or proc.poll() is not None

            wait_until(retire_waits, "retire's writer waiting on the lock")
            for pid in waiting:
                look.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
            locker.rollback()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (out, err)
        assert "storage unavailable" in err, err
        assert "Traceback" not in err, err
        assert "session ended" not in out, out
        assert before <= stored(pg_url)[0] < 200

        done = retire(cfg_b, "--idle", "2")
        assert done.returncode == 0, done
        summary = SUMMARY.search(done.stdout)
        assert summary is not None, done.stdout
        n_stored = int(summary.group(1))
        assert 0 < n_stored <= 200 - before
        wait_until(lambda: stored(pg_url)[1] == 200, "all 200 stored")
        rows, distinct = stored(pg_url)
        assert rows == distinct == 200  # every one exactly once
        assert {r[0] for r in q(pg_url, "SELECT report_id FROM alarms")} == set(first)

        # The broker forgot B's session: nothing is assigned to it any more.
        assert session_present(broker, "monitor-b") is False
        later = [f"s-{n}" for n in range(50)]
        publish(broker, later)
        wait_until(lambda: stored(pg_url)[1] == 250, "the next 50 stored by A")
        assert stored(pg_url) == (250, 250)
        assert a.proc is not None and a.proc.poll() is None
    except AssertionError:
        print(a.read_log()[-4000:])
        raise
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop(15)


def test_retire_refuses_without_a_share_group(tmp_path: Path) -> None:
    alone = write_config(
        tmp_path, extra=mqtt_section("mqtt://127.0.0.1:9", client_id="monitor-1"), name="a.toml"
    )
    none = write_config(tmp_path, name="b.toml")  # no [mqtt] at all
    for cfg in (alone, none):
        done = retire(cfg)
        assert done.returncode == 2, done
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot retire: "), done.stderr
        assert done.stdout == ""
    assert "share_group is empty" in retire(alone).stderr
