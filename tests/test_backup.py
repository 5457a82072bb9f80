"""`monitor backup`: an online, consistent copy that restores to a working daemon.

The copy is taken by the real CLI, in its own process, while eight clients
push alarms into the running daemon.  It must be one instant of the database
(no torn transaction: every incident's `count` matches its alarms, and the
alarms are exactly the live ones up to some seq), and a daemon started on it
must serve those incidents and keep deduplicating into them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.cli import main
from monitor.store import Store
from monitor.store.sqlite import latest_version
from tests.support.daemon import running, write_config

CLIENTS = 8
CODES = 40  # load alarms spread over this many fingerprints: new incidents and folds


async def until(pred: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # bounded (~100 s), never a speed threshold
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def db_incidents(path: Path) -> dict[int, tuple[str, int, str]]:
    conn = sqlite3.connect(path)
    try:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT id, state, count, fingerprint FROM incidents")
        }
    finally:
        conn.close()


def torn(path: Path) -> list[Any]:
    """Incidents whose count disagrees with their stored alarms: a torn copy."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT i.id, i.count, (SELECT count(*) FROM alarms a WHERE a.incident = i.id) AS n"
            " FROM incidents i WHERE i.count != n"
        ).fetchall()
    finally:
        conn.close()


def alarm_ids(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT seq, report_id FROM alarms").fetchall())
    finally:
        conn.close()


async def test_backup_during_load_restores_the_same_incidents(tmp_path: Path) -> None:
    live_dir, restore_dir = tmp_path / "live", tmp_path / "restore"
    live_dir.mkdir()
    restore_dir.mkdir()
    cfg = write_config(live_dir)  # Friday 16:30 JST: in service hours
    out = tmp_path / "backup.db"
    acked = 0
    async with running(cfg) as d:
        # Incidents in several states before the load.
        for n in range(6):
            st, body = await d.alarm(id=f"seed-{n}", code=f"SEED-{n}")
            assert st == 202, body
        seeded = {i["code"]: i["id"] for i in (await d.get("/api/v1/incidents"))["items"]}
        for code in ("SEED-0", "SEED-1"):
            st, _ = await d.post(f"/api/v1/incidents/{seeded[code]}/ack", {"by": "ops"}, "staff")
            assert st == 200
        st, _ = await d.post(f"/api/v1/incidents/{seeded['SEED-2']}/resolve", {}, "staff")
        assert st == 200

        stop = asyncio.Event()

        async def client(k: int) -> None:
            nonlocal acked
            i = 0
            while not stop.is_set():
                st, body = await d.alarm(
                    id=f"load-{k}-{i}",
                    code=f"L-{(k * 7 + i) % CODES}",
                    severity="critical" if i % 5 == 0 else "major",
                )
                assert st == 202, body
                acked += 1
                i += 1

        clients = [asyncio.create_task(client(k)) for k in range(CLIENTS)]
        try:
            await until(lambda: acked >= 200, "load to start")
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitor.cli",
                "backup",
                "-c",
                str(cfg),
                str(out),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await proc.communicate()
            assert proc.returncode == 0, stderr.decode()
            assert b"backup written to" in stdout
            after_backup = acked
            await until(lambda: acked >= after_backup + 100, "load after the backup")
        finally:
            stop.set()
            await asyncio.gather(*clients)
    live_db = live_dir / "monitor.db"

    # One instant: not the start, not the end, and nothing torn.
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    conn.close()
    assert not list(tmp_path.glob("*.partial"))
    backed, live = alarm_ids(out), alarm_ids(live_db)
    assert 6 < len(backed) < len(live)
    assert backed == {seq: rid for seq, rid in live.items() if seq <= max(backed)}
    assert torn(live_db) == []  # the invariant holds on the live store...
    assert torn(out) == []  # ...and in the copy
    snapshot = db_incidents(out)
    assert len(snapshot) > 6

    # Restore: the copy in place of a database (no -wal/-shm beside it).
    shutil.copy(out, restore_dir / "monitor.db")
    restored_cfg = write_config(restore_dir)
    async with running(restored_cfg) as r:
        async with r.session.get(r.url + "/readyz") as resp:
            assert resp.status == 200
        items = (await r.get("/api/v1/incidents?limit=1000"))["items"]
        served = {i["id"]: (i["state"], i["count"], i["fingerprint"]) for i in items}
        assert served == snapshot
        by_code = {i["code"]: i for i in items}
        assert by_code["SEED-0"]["state"] == "acknowledged"
        assert by_code["SEED-0"]["acknowledged_by"] == "ops"
        assert by_code["SEED-2"]["state"] == "resolved"
        assert by_code["SEED-3"]["state"] in ("open", "notified")
        # Dedup state came along: the same fault folds into the same incident,
        # and a re-sent report id is an exact duplicate.
        st, body = await r.alarm(id="after-restore", code="SEED-3")
        assert st == 202 and not body["duplicate"], body
        st, body = await r.alarm(id="seed-3", code="SEED-3")
        assert st == 202 and body["duplicate"], body
        folded = await r.incident(by_code["SEED-3"]["id"])
        assert folded["count"] == by_code["SEED-3"]["count"] + 1


def test_backup_refuses_what_it_cannot_do_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    db = tmp_path / "monitor.db"
    assert main(["backup", "-c", str(cfg), str(tmp_path / "b.db")]) == 1
    assert "does not exist" in capsys.readouterr().err

    store = Store(str(db))
    store.open()
    store.close()
    assert main(["backup", "-c", str(cfg), str(db)]) == 2  # over the live database
    assert "is the live database" in capsys.readouterr().err
    (tmp_path / "a-dir").mkdir()
    assert main(["backup", "-c", str(cfg), str(tmp_path / "a-dir")]) == 1
    assert "failed" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.partial"))

    # An older backup file is replaced whole.
    target = tmp_path / "b.db"
    target.write_bytes(b"not a database")
    assert main(["backup", "-c", str(cfg), str(target)]) == 0
    assert "backup written to" in capsys.readouterr().out
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    conn.close()
    assert sorted(os.listdir(tmp_path)) == sorted(
        {"a-dir", "b.db", "monitor.toml", "monitor.db"}
        | {n for n in os.listdir(tmp_path) if n.startswith("monitor.db-")}
    )
