"""The agent's spool: order, removal only when taken, rejected reports,
collector memory committed with its reports, and surviving kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from monitor_agent.collectors import CollectorSpec
from monitor_agent.conditions import Finding
from monitor_agent.reports import Identity, decode, encode, make_report
from monitor_agent.runner import FAILURES_BEFORE_REPORT, CollectorRunner
from monitor_agent.spool import Spool, SpoolError

from monitor.formats.alarm_json import decode_alarm, signing_text, verify_sig
from monitor.model import AlarmReport

ROOT = Path(__file__).resolve().parent.parent


def body(n: int) -> tuple[str, bytes]:
    report = AlarmReport(
        id=f"r{n}", serial="JPN0012345", severity="major", code="X", message=f"report {n}"
    )
    return report.id, encode(report)


def test_order_delivery_and_rejection(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    assert spool.add([body(1), body(2), body(3)]) == 3
    assert spool.add([body(2)]) == 0  # the same report is spooled once
    items = spool.pending()
    assert [i.id for i in items] == ["r1", "r2", "r3"]
    spool.failed(items[0].seq, "mqtt: no PUBACK")
    assert spool.pending()[0].tries == 1
    spool.reject(items[1].seq, "smtp", "550 5.6.0 not a report")
    spool.delivered(items[0].seq)
    assert [i.id for i in spool.pending()] == ["r3"]
    [rejected] = spool.rejected()
    assert (rejected.id, rejected.channel, rejected.reason) == (
        "r2",
        "smtp",
        "550 5.6.0 not a report",
    )
    assert decode(rejected.body).message == "report 2"
    assert spool.pending(after=items[2].seq) == []
    spool.close()
    # A new report after a restart still goes behind the waiting ones.
    spool = Spool(str(tmp_path / "spool.db"))
    spool.add([body(4)])
    assert [i.id for i in spool.pending()] == ["r3", "r4"]
    assert spool.count() == 2 and spool.contains("r4") and not spool.contains("r1")
    spool.close()


def test_state_is_committed_with_the_reports(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    spool.add([body(1)], {"collector:ipmi": {"last_id": "1a4"}})
    with pytest.raises(ZeroDivisionError):
        spool._write(lambda db: (db.execute("DELETE FROM reports"), 1 / 0))
    assert spool.count() == 1
    spool.close()
    spool = Spool(str(tmp_path / "spool.db"))
    assert spool.get_state("collector:ipmi") == {"last_id": "1a4"}
    assert spool.get_state("nothing") is None
    spool.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    spool.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(SpoolError, match="newer"):
        Spool(str(path))
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError):
        Spool(str(tmp_path / "junk.db"))


def test_survives_sigkill(tmp_path: Path) -> None:
    """A report is durable the moment `add` returns: the process that added it
    dies by SIGKILL right after, and the report is there."""
    path = tmp_path / "spool.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from monitor_agent.spool import Spool
        spool = Spool({str(path)!r})
        for n in range(50):
            spool.add([(f"r{{n}}", b"{{}}")], {{"collector:x": {{"n": n}}}})
        print("added", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == "added\n"
    spool = Spool(str(path))
    assert [i.id for i in spool.pending()] == [f"r{n}" for n in range(50)]
    assert spool.get_state("collector:x") == {"n": 49}
    spool.close()


# -- reports ------------------------------------------------------------------------------------


def test_reports_signed_and_encoded() -> None:
    when = datetime(2026, 11, 20, 17, 45, 12, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Asia/Tokyo")
    )
    finding = Finding(
        "sel:SIGNED0001:1a4:20261120T174512",
        "PS2 Status",
        "SEL-POWER-SUPPLY-AC-LOST",
        "critical",
        "AC lost",
        when,
    )
    report = make_report(Identity("SIGNED0001", "N8100-2801", "sec01", "s3cret"), finding)
    assert report.occurred_raw == "2026-11-21T02:45:12+09:00"
    assert verify_sig(report, "s3cret") and not verify_sig(report, "other")
    wire = decode_alarm(encode(report))
    assert isinstance(wire, AlarmReport)
    assert signing_text(wire) == signing_text(report) and wire.sig == report.sig
    unsigned = make_report(Identity("X1"), Finding("i", "", "C", "info", "m" * 9000))
    assert unsigned.sig == "" and len(unsigned.message) == 8192


# -- the runner: memory and reports in one transaction; failing collectors --------------------


def runner(
    tmp_path: Path,
    command: tuple[str, ...] | None,
    path: str | None,
    spool: Spool,
    timeout: float = 30,
) -> CollectorRunner:
    spec = CollectorSpec(
        "sel",
        "ipmi",
        command,
        path,
        timedelta(seconds=1),
        timedelta(seconds=timeout),
        "info",
        {"timezone": "UTC"},
    )
    return CollectorRunner(
        spec,
        spool,
        Identity("JPN0012345", "M", "h"),
        clock=lambda: datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
    )


SEL = " 1a4 | 08/21/2025 | 04:11:52 | Power Supply PS2 Status | Power Supply AC lost | Asserted\n"


async def test_runner_spools_new_records(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    sel = tmp_path / "sel.txt"
    sel.write_text(SEL)
    r = runner(tmp_path, None, str(sel), spool)
    assert await r.run_once() == []  # baseline
    assert await r.run_once() == []
    sel.write_text(SEL + SEL.replace("1a4", "1a5").replace("AC lost", "Failure detected"))
    [found] = await r.run_once()
    assert found.id == "sel:JPN0012345:1a5:20250821T041152"
    [item] = spool.pending()
    report = decode(item.body)
    assert (report.id, report.severity, report.component, report.model, report.host) == (
        found.id,
        "critical",
        "PS2 Status",
        "M",
        "h",
    )
    assert report.occurred_raw == "2025-08-21T04:11:52+00:00"
    assert spool.get_state("collector:sel")["last_id"] == "1a5"
    # A new runner on the same spool (an agent restart) remembers.
    again = runner(tmp_path, None, str(sel), spool)
    assert await again.run_once() == []
    spool.close()


async def test_runner_commands_and_failures(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    sel = tmp_path / "sel.txt"
    sel.write_text(SEL)
    ok = runner(tmp_path, ("cat", str(sel)), None, spool)
    assert await ok.run_once() == []
    broken = runner(tmp_path, ("no-such-ipmitool-binary", "sel", "elist"), None, spool)
    for _ in range(FAILURES_BEFORE_REPORT - 1):
        assert await broken.run_once() == []
    [report] = await broken.run_once()
    assert (report.severity, report.component, report.code) == (
        "warning",
        "agent/sel",
        "COLLECTOR-FAILED",
    )
    assert "no-such-ipmitool-binary" in report.message
    assert await broken.run_once() == []  # once
    # Working again: the clear; the SEL memory survived the failures.
    [clear] = await ok.run_once()
    assert (clear.severity, clear.component) == ("clear", "agent/sel")
    assert spool.get_state("collector:sel")["last_id"] == "1a4"
    spool.close()


async def test_runner_kills_a_hung_command(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.db"))
    slow = runner(tmp_path, ("sleep", "30"), None, spool, timeout=0.2)
    assert await slow.run_once() == []
    assert spool.get_state("health:sel")["failures"] == 1
    spool.close()
