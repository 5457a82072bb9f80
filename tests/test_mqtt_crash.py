"""Kill -9 in the middle of a QoS 1 stream: nothing lost, nothing twice.

The daemon runs as a subprocess; a publisher streams 3,000 reports while
the daemon is SIGKILLed and started again.  Every report the broker
accepted must end up stored exactly once: the daemon acknowledged only
what it had committed, the broker redelivers the rest to the persistent
session, and the pipeline drops what was committed but not acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import mosquitto as support
from tests.support.daemon import DaemonProcess
from tests.support.mosquitto import Mosquitto, find_mosquitto
from tests.test_mqtt_helpers import SERIAL, Agent, alarm, db_rows, mqtt_config

mosquitto_factory = support.mosquitto_factory

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

N = 3000
TIMEOUT = 60.0


def stored(db: Path) -> int:
    try:
        return int(db_rows(db, "SELECT count(*) FROM alarms")[0][0])
    except Exception:  # not created yet, or mid-migration
        return 0


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("protocol", [5, 3])
def test_sigkill_mid_stream_loses_nothing_stores_nothing_twice(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], protocol: int
) -> None:
    broker = mosquitto_factory()
    cfg = mqtt_config(tmp_path, broker.url, protocol=protocol)
    db = tmp_path / "monitor.db"
    daemon = DaemonProcess(cfg)
    daemon.start()
    agent = Agent(broker, inflight=100)
    try:
        wait_until(lambda: "mqtt connected" in daemon.read_log(), "the daemon's subscription")
        infos = []
        done = threading.Event()

        def publish() -> None:
            # The first half as fast as the broker takes it: the daemon falls
            # behind, so up to its whole in-flight window is being handled
            # when it is killed.  The rest paced, so it is still streaming
            # while the daemon is dead and while it starts again.
            for i in range(N):
                infos.append(agent.send(f"express/alarm/{SERIAL}", alarm(f"kill-{i:04d}")))
                if i >= N // 2 and i % 50 == 49:
                    time.sleep(0.05)
            done.set()

        publisher = threading.Thread(target=publish)
        publisher.start()
        wait_until(lambda: stored(db) >= 500, "the first reports stored")
        daemon.kill()
        at_kill = stored(db)
        streaming = not done.is_set()
        daemon.start()
        publisher.join(TIMEOUT)
        assert done.is_set()
        for info in infos:
            info.wait_for_publish(TIMEOUT)  # the broker has every one
        wait_until(lambda: stored(db) >= N, f"{N} reports stored")
        time.sleep(0.3)  # a redelivery stored twice would show up now
        rows = db_rows(db, "SELECT report_id FROM alarms")
        ids = [r[0] for r in rows]
        assert len(ids) == N, (len(ids), at_kill)
        assert set(ids) == {f"kill-{i:04d}" for i in range(N)}
        assert 0 < at_kill < N and streaming  # the kill really was mid-stream
    finally:
        agent.close()
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
