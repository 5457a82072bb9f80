"""Schema versions as an operator meets them: `monitor db status`, migrations
applied at start, and a clear refusal to run on a newer schema."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.store.sqlite import latest_version, migrations
from tests.support.daemon import running, write_config


def make_db(path: Path, version: int) -> None:
    """A database at schema `version`: the shipped migrations up to it, or,
    past the newest, what a future release would leave behind."""
    conn = sqlite3.connect(path)
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for v, _name, sql in migrations():
        if current < v <= version:
            conn.executescript(sql)
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_db_status_fresh_old_current_and_newer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    db = tmp_path / "monitor.db"
    newest = latest_version()
    names = [name for _v, name, _sql in migrations()]

    assert main(["db", "status", "-c", str(cfg)]) == 0
    assert f"not created yet; {len(names)} migrations pending" in capsys.readouterr().out

    make_db(db, 1)
    assert main(["db", "status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"schema version 1 (this software: {newest})" in out
    assert f"pending migrations: {', '.join(names[1:])}" in out

    make_db(db, newest)
    assert main(["db", "status", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"schema version {newest} (this software: {newest})" in out
    assert "pending migrations: none" in out

    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={newest + 1}")
    conn.close()
    assert main(["db", "status", "-c", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "schema is NEWER than this software" in out


async def test_pending_migrations_are_applied_at_start(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    db = tmp_path / "monitor.db"
    make_db(db, 1)
    async with running(cfg) as d:
        st, body = await d.alarm(id="after-upgrade")
        assert st == 202, body
        assert (await d.get("/api/v1/incidents"))["items"]
    assert user_version(db) == latest_version()


def test_run_refuses_a_newer_schema_with_exit_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    db = tmp_path / "monitor.db"
    make_db(db, latest_version() + 1)
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"schema version {latest_version() + 1} is newer than this software's" in proc.stderr
    assert "upgrade express-monitor or restore a matching backup" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert user_version(db) == latest_version() + 1  # left as it was
