"""Chaos: every channel under load at once, the daemon SIGKILLed at random
moments, mosquitto restarted mid-stream (gracefully, `persistence true`).

One sender per channel (HTTP push, SMTP, MQTT through a private mosquitto,
a dial-up DTE on a pty) keeps sending reports with fresh ids, each one again
until it is acknowledged, the way an agent's spool does.  Meanwhile the test
kills the daemon with SIGKILL several times (random moments, seeded) and
restarts the broker.  At the end:

- every acknowledged report is stored (reports lost = 0), each exactly once;
- one incident per fingerprint (no incident duplicated);
- every notice (incident, round, kind, contact) reached the webhook under
  one Idempotency-Key only (a notice resent after a crash keeps its key),
  and every notice the database calls delivered was received.

`test_chaos_short` (unmarked, ~20-30 s) runs in the fast suite; the long one
is `@pytest.mark.slow` (`make chaos`).  The figures of each run go to
test-artifacts/chaos-<name>.json (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess
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
    progress,
    stored_ids,
    verify,
    wait_until,
)
from tests.test_serial_pty import PtyLine, ptys

__all__ = ["ptys"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def run_chaos(
    tmp_path: Path,
    ptys: list[PtyLine],
    *,
    name: str,
    kills: int,
    broker_restarts: int,
    gap: tuple[float, float],
    seed: int,
    mqtt_rate: float,
) -> dict[str, Any]:
    rng = random.Random(seed)
    line = PtyLine.open()
    ptys.append(line)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    stop = threading.Event()
    senders: list[Sender] = []
    daemon: DaemonProcess | None = None
    events: list[str] = []
    started = time.monotonic()
    try:
        with hook_server(delay=0.2) as hook:
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
            wait_until(lambda: ready(daemon.url), "every listener up", 60)
            http_port = int(daemon.url.rsplit(":", 1)[1])
            serial = SerialSender(stop, line.port, answer_timeout=3.0, fingerprint_every=60)
            # A new fingerprint every 60 reports keeps incidents being opened
            # and notices being sent all along, so kills land mid-notice too.
            senders = [
                HttpSender(stop, http_port, fingerprint_every=60),
                SmtpSender(stop, smtp_port, fingerprint_every=60),
                MqttSender(stop, broker.host, broker.port, rate=mqtt_rate, fingerprint_every=60),
                serial,
            ]
            for s in senders:
                s.start()
            wait_until(
                lambda: all(len(s.acked) >= 20 for s in senders),
                "every channel flowing",
                60,
                lambda: progress(senders),
            )
            # Kill points, and broker restarts in between some of them.
            restart_after = set(rng.sample(range(kills), min(broker_restarts, kills)))
            stored_at_kill: list[int] = []
            for k in range(kills):
                time.sleep(rng.uniform(*gap))
                acked_before = {s.channel: list(s.acked) for s in senders}
                daemon.kill()
                events.append(f"{time.monotonic() - started:.1f}s SIGKILL daemon")
                # Everything acknowledged before the kill is on disk already
                # (for MQTT: the broker's PUBACK, so not checked here).
                for s in senders:
                    if s.channel == "mqtt":
                        continue
                    have = set(stored_ids(db, DEVICE_OF[s.channel]))
                    missing = [i for i in acked_before[s.channel] if i not in have]
                    assert not missing, (s.channel, missing[:5])
                stored_at_kill.append(int(db_rows(db, "SELECT count(*) FROM alarms")[0][0]))
                time.sleep(rng.uniform(0.0, 0.5))
                daemon.start(timeout=60)
                events.append(f"{time.monotonic() - started:.1f}s daemon started")
                if k in restart_after:
                    time.sleep(rng.uniform(*gap) / 2)
                    broker.restart()  # graceful: SIGTERM writes its store
                    events.append(f"{time.monotonic() - started:.1f}s mosquitto restarted")
            time.sleep(gap[0])
            stop.set()
            for s in senders:
                s.join(180)
                assert not s.is_alive(), f"{s.name} still sending"
                assert s.error is None, f"{s.name}: {s.error!r}"
            # MQTT: what the broker acknowledged reaches the daemon's session.
            mqtt_sender = senders[2]
            want = set(mqtt_sender.acked)
            wait_until(
                lambda: want <= set(stored_ids(db, DEVICE_OF["mqtt"])),
                "every broker-acknowledged MQTT report stored",
                120,
            )
            wait_until(
                lambda: (
                    db_rows(db, "SELECT count(*) FROM notices WHERE status = 'pending'")[0][0] == 0
                ),
                "every notice delivered",
                60,
            )
            time.sleep(0.5)  # a redelivery stored twice would show now
            assert daemon.stop(30) == 0
            verdict = verify(db, senders, hook)
            delivered = {
                r[0] for r in db_rows(db, "SELECT key FROM notices WHERE status = 'delivered'")
            }
            received = {n.key for n in hook.snapshot()}
    finally:
        stop.set()
        if daemon is not None:
            daemon.kill()
        broker.stop()
    figures = {
        "name": name,
        "seconds": round(time.monotonic() - started, 1),
        "kills": kills,
        "broker_restarts": broker_restarts,
        "acked": {s.channel: len(s.acked) for s in senders},
        "tries": {s.channel: s.sent_tries for s in senders},
        "temporary_failures": {s.channel: s.temporary for s in senders},
        "stored": verdict.stored,
        "lost": len(verdict.lost),
        "duplicates_stored": verdict.duplicates,
        "incidents": verdict.incidents,
        "fingerprints": verdict.fingerprints,
        "notices_received": verdict.notices,
        "notice_redeliveries_same_key": verdict.duplicate_deliveries,
        "notices_with_two_keys": len(verdict.conflicting_keys),
        "stored_at_kill": stored_at_kill,
        "events": events,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"chaos-{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    assert verdict.lost == [], verdict.lost[:10]
    assert verdict.duplicates == 0
    assert verdict.acked > 0 and verdict.stored >= verdict.acked
    assert verdict.incidents == verdict.fingerprints, "an incident was duplicated"
    assert verdict.conflicting_keys == [], verdict.conflicting_keys[:5]
    assert delivered <= received, sorted(delivered - received)[:5]
    # The kills really interrupted the stream on the direct channels.
    assert sum(s.failures for s in senders if s.channel != "mqtt") > 0
    return figures


def test_chaos_short(tmp_path: Path, ptys: list[PtyLine]) -> None:
    """Two SIGKILLs and one broker restart under load on all four channels."""
    run_chaos(
        tmp_path,
        ptys,
        name="short",
        kills=2,
        broker_restarts=1,
        gap=(1.0, 2.0),
        seed=int(os.environ.get("CHAOS_SEED", "11")),
        mqtt_rate=150.0,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_long(tmp_path: Path, ptys: list[PtyLine]) -> None:
    """Eight SIGKILLs at random moments and three broker restarts."""
    run_chaos(
        tmp_path,
        ptys,
        name="long",
        kills=int(os.environ.get("CHAOS_KILLS", "8")),
        broker_restarts=3,
        gap=(2.0, 6.0),
        seed=int(os.environ.get("CHAOS_SEED", "2026")),
        mqtt_rate=300.0,
    )
