"""Kill -9 during a stream of mail: every message answered 250 is stored.

The daemon runs as a subprocess; four senders stream express reports over
persistent smtplib sessions, each retrying a message (as an MTA would) until
it gets a 250.  The daemon is SIGKILLed mid-stream and started again.  A
250 goes out only after the commit, so every acknowledged report must be in
the database after the restart; the retries of messages that were committed
but not acknowledged are answered 250 as exact re-sends, not stored twice.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.daemon import DaemonProcess, write_config
from tests.test_smtp_helpers import Client, express, new_port, rows, smtp_extra

SENDERS = 4
PER_SENDER = 400
TIMEOUT = 60.0


def stored(db: Path) -> int:
    try:
        return int(rows(db, "SELECT count(*) FROM alarms")[0][0])
    except Exception:  # not created yet, or mid-migration
        return 0


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Sender(threading.Thread):
    def __init__(self, port: int, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.acked: list[str] = []
        self.failures = 0  # dropped sessions and refused connects (the kill)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        client: Client | None = None
        for i in range(PER_SENDER):
            report_id = f"{self.name}-{i:04d}"
            raw = express(report_id, component=f"C{i % 7}")
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{report_id} never got a 250")
                try:
                    if client is None:
                        client = Client(self.port)
                    code, text = client.send(raw)
                except (smtplib.SMTPException, OSError):
                    self.failures += 1
                    if client is not None:
                        client.smtp.close()
                    client = None
                    time.sleep(0.02)
                    continue
                assert code == 250, (report_id, code, text)
                self.acked.append(report_id)
                break
        if client is not None:
            client.close()


def test_sigkill_mid_stream_keeps_every_250(tmp_path: Path) -> None:
    port = new_port()
    cfg = write_config(tmp_path, extra=smtp_extra(port))
    db = tmp_path / "monitor.db"
    daemon = DaemonProcess(cfg)
    daemon.start()
    senders = [Sender(port, f"s{k}") for k in range(SENDERS)]
    try:
        for s in senders:
            s.start()
        wait_until(lambda: stored(db) >= 300, "the first reports stored")
        daemon.kill()
        at_kill = stored(db)
        acked_at_kill = sum(len(s.acked) for s in senders)
        # Everything acknowledged before the kill is on disk already.
        assert at_kill >= acked_at_kill
        daemon.start()
        for s in senders:
            s.join(TIMEOUT)
            assert not s.is_alive(), f"{s.name} still sending"
            assert s.error is None, s.error
    finally:
        daemon.kill()
    acked = {r for s in senders for r in s.acked}
    assert len(acked) == SENDERS * PER_SENDER
    got = [r[0] for r in rows(db, "SELECT report_id FROM alarms")]
    assert len(got) == len(set(got)), "a report was stored twice"
    assert acked <= set(got), sorted(acked - set(got))[:10]
    assert sum(s.failures for s in senders) > 0, "the kill did not interrupt the stream"
    assert at_kill < len(got), "the kill came after the stream"
