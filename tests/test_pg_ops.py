"""Operations on the PostgreSQL store, as an operator meets them.

- `monitor db status` (the real CLI, in its own process) against a private
  PostgreSQL: no schema yet, an older schema, the current one, a newer one,
  and a server that cannot be reached — never a password in the output.
- `monitor backup` runs `pg_dump -Fc` while a daemon writes; the dump is
  restored with `pg_restore --clean --if-exists` into a fresh database,
  which then holds the same rows and serves them to a daemon started on it.
- Retention with two instances on one database: passes started at the same
  moment are done by one instance (counted once), the other skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from monitor.cli import main
from monitor.retention import PASS_AT, PASS_BY, RetentionJob, instance_id
from monitor.store import pgops
from monitor.store.pgadapter import Connection
from monitor.store.postgres import migrate, migrations
from tests.support.daemon import RunningDaemon, running, write_config
from tests.support.ports import free_port
from tests.support.postgres import PgServer, pg_server, pg_url  # noqa: F401

SECRET = "n0t-For-Your-Eyes"
NEWEST = max(v for v, _, _ in migrations())
NAMES = [name for _, name, _ in migrations()]
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def with_password(url: str) -> str:
    """The URL with a password in it (the test cluster trusts; it is ignored)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql.encode()).fetchall())


def sql(url: str, text: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(text.encode())


def pg_program(name: str) -> str:
    """Like tests/support/postgres.py finds initdb: PATH, then the versioned folders."""
    found = pgops.find_program(name)
    if found is None:
        pytest.skip(f"{name} not installed")
    return found


# -- db status -------------------------------------------------------------------------


def test_db_status_on_postgresql(tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    url = with_password(pg_url)
    cfg = write_config(tmp_path, db_url=url)
    shown = pgops.redact(url)
    assert SECRET not in shown and "postgres@" in shown

    # An empty database: nothing created, and db status creates nothing either.
    proc = cli("db", "status", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert f"database {shown}: schema not created yet; {len(NAMES)} migrations pending" in (
        proc.stdout
    )
    assert rows(pg_url, "SELECT to_regclass('schema_version')") == [(None,)]

    # The first migration only: the rest pending.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE schema_version (version BIGINT NOT NULL)")
        conn.execute(migrations()[0][2].encode())
        conn.execute(b"INSERT INTO schema_version VALUES (1)")
    proc = cli("db", "status", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"database {shown}: schema version 1 (this software: {NEWEST})",
        f"pending migrations: {', '.join(NAMES[1:])}",
    ]

    # Migrated the way a daemon does at start: up to date.
    conn = Connection.connect(pg_url, autocommit=True)
    try:
        assert migrate(conn) == NAMES[1:]
    finally:
        conn.close()
    proc = cli("db", "status", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert f"schema version {NEWEST} (this software: {NEWEST})" in proc.stdout
    assert "pending migrations: none" in proc.stdout

    # Written by a newer release: exit 1, like SQLite.
    sql(pg_url, f"INSERT INTO schema_version VALUES ({NEWEST + 1})")
    proc = cli("db", "status", "-c", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert f"schema version {NEWEST + 1} (this software: {NEWEST})" in proc.stdout
    assert "schema is NEWER than this software" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_db_status_and_backup_unreachable_name_the_url_without_password(
    tmp_path: Path, where: str
) -> None:
    # A socket folder where no server listens.
    if where == "userinfo":
        url = f"postgresql://ops:{SECRET}@/monitor?host={tmp_path}&port={free_port()}"
    else:
        url = f"postgresql://ops@/monitor?host={tmp_path}&password={SECRET}&port={free_port()}"
    cfg = write_config(tmp_path, db_url=url)
    proc = cli("db", "status", "-c", str(cfg))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot read database {pgops.redact(url)}: ")
    assert "postgresql://ops@/monitor?host=" in lines[0]
    assert SECRET not in proc.stderr
    assert "Traceback" not in proc.stderr

    out = tmp_path / "b.dump"
    pg_program("pg_dump")
    proc = cli("backup", "-c", str(cfg), str(out))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: backup to {out} failed: "), proc.stderr
    assert "pg_dump" in proc.stderr and "exited with status" in proc.stderr
    assert "connection to server" in proc.stderr  # pg_dump's own words passed on
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


# -- backup and restore ----------------------------------------------------------------


async def test_backup_with_pg_dump_restores_with_pg_restore(
    tmp_path: Path,
    pg_server: PgServer,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    pg_restore = pg_program("pg_restore")
    pg_program("pg_dump")
    live, again = tmp_path / "live", tmp_path / "restored"
    live.mkdir()
    again.mkdir()
    cfg = write_config(live, db_url=with_password(pg_url))  # Fri 16:30 JST: in hours
    out = tmp_path / "monitor.dump"
    out.write_bytes(b"an older backup, replaced whole")
    async with running(cfg) as d:
        for n in range(6):
            st, body = await d.alarm(id=f"seed-{n}", code=f"SEED-{n}")
            assert st == 202, body
        st, body = await d.alarm(id="seed-0-again", code="SEED-0")  # folds: count 2
        assert st == 202 and not body["duplicate"], body
        by_code = dict(rows(pg_url, "SELECT code, id FROM incidents"))
        st, _ = await d.post(f"/api/v1/incidents/{by_code['SEED-1']}/ack", {"by": "ops"})
        assert st == 200
        st, _ = await d.post(f"/api/v1/incidents/{by_code['SEED-2']}/resolve", {})
        assert st == 200
        # The real CLI, in its own process, while the daemon runs.
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
        assert stdout.decode() == f"backup written to {out}\n"
        assert SECRET not in stdout.decode() + stderr.decode()
    assert out.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert not list(tmp_path.glob("*.partial"))

    incidents = "SELECT id, state, count, fingerprint, acknowledged_by FROM incidents ORDER BY id"
    alarms = "SELECT seq, device, report_id, incident FROM alarms ORDER BY seq"
    before_incidents, before_alarms = rows(pg_url, incidents), rows(pg_url, alarms)
    assert len(before_incidents) == 6 and len(before_alarms) == 7

    # Into a fresh database; then once more over the restored one (--clean).
    name = pg_server.create_db()
    try:
        target = pg_server.url(name)
        for _ in range(2):
            restore = subprocess.run(
                [pg_restore, "--clean", "--if-exists", "--no-owner", "-d", target, str(out)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert restore.returncode == 0, restore.stderr
        assert rows(target, incidents) == before_incidents
        assert rows(target, alarms) == before_alarms
        assert rows(target, "SELECT max(version) FROM schema_version") == [(NEWEST,)]

        restored_cfg = write_config(again, db_url=with_password(target))
        proc = cli("db", "status", "-c", str(restored_cfg))
        assert proc.returncode == 0, proc.stderr
        assert "pending migrations: none" in proc.stdout

        # A daemon on the copy: same incidents; identity sequences came along
        # (a new alarm gets a new seq), and dedup state too.
        async with running(restored_cfg) as r:
            for ident, state, count, _fp, by in before_incidents:
                served = await r.incident(ident)
                assert (served["state"], served["count"]) == (state, count)
                assert served.get("acknowledged_by") == by
            st, body = await r.alarm(id="after-restore", code="SEED-3")
            assert st == 202 and not body["duplicate"], body
            st, body = await r.alarm(id="seed-4", code="SEED-4")
            assert st == 202 and body["duplicate"], body
        assert rows(target, "SELECT max(seq) FROM alarms")[0][0] > before_alarms[-1][0]
    finally:
        pg_server.drop_db(name)


def test_backup_failures_leave_the_previous_backup(
    tmp_path: Path,
    pg_server: PgServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pg_program("pg_dump")
    url = with_password(pg_server.url("no_such_database"))
    cfg = write_config(tmp_path, db_url=url)
    out = tmp_path / "nightly.dump"
    out.write_bytes(b"yesterday")

    # pg_dump fails: its message passed on, the old backup untouched.
    proc = cli("backup", "-c", str(cfg), str(out))
    assert proc.returncode == 1
    assert 'database "no_such_database" does not exist' in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_bytes() == b"yesterday"
    assert not list(tmp_path.glob("*.partial"))

    # OUT is a folder.
    (tmp_path / "a-dir").mkdir()
    assert main(["backup", "-c", str(cfg), str(tmp_path / "a-dir")]) == 1
    assert "is a directory" in capsys.readouterr().err

    # No pg_dump anywhere (nothing on PATH, no versioned folder).
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pgops, "PG_BIN_GLOB", str(tmp_path / "nowhere" / "*" / "bin"))
    assert main(["backup", "-c", str(cfg), str(out)]) == 1
    err = capsys.readouterr().err
    assert "pg_dump not found" in err and "postgresql-client" in err
    assert out.read_bytes() == b"yesterday"


def test_pg_dump_is_found_on_path_first_then_newest_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def program(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    for version in ("9.6", "13", "15"):
        program(tmp_path / "lib" / version / "bin" / "pg_dump")
    monkeypatch.setattr(pgops, "PG_BIN_GLOB", str(tmp_path / "lib" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert pgops.find_program("pg_dump") == str(tmp_path / "lib" / "15" / "bin" / "pg_dump")
    on_path = program(tmp_path / "path" / "pg_dump")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert pgops.find_program("pg_dump") == str(on_path)


def test_redact_and_scrub() -> None:
    url = "postgresql://mon:p%40ss@db.example:5432/monitor?sslmode=require&password=q"
    assert pgops.redact(url) == "postgresql://mon@db.example:5432/monitor?sslmode=require"
    assert pgops.scrub("auth p@ss p%40ss q!", url) == "auth *** *** ***!"
    assert pgops.redact("postgresql://db/monitor") == "postgresql://db/monitor"
    # a unix socket URL keeps its empty host
    local = "postgresql:///monitor?host=/var/run/postgresql&password=z"
    assert pgops.redact(local) == "postgresql:///monitor?host=/var/run/postgresql"


# -- retention, two instances ------------------------------------------------------------

RETENTION = """
[retention]
alarms = "400d"
quarantine = "30d"
resolved_incidents = "730d"
"""
DAY = 86_400.0


@contextlib.asynccontextmanager
async def two_instances(tmp_path: Path, url: str) -> AsyncIterator[list[RunningDaemon]]:
    async with contextlib.AsyncExitStack() as stack:
        out: list[RunningDaemon] = []
        for i in (1, 2):
            cfg = write_config(tmp_path, db_url=url, extra=RETENTION, name=f"m{i}.toml")
            text = cfg.read_text().replace('instance = "test-1"', f'instance = "test-{i}"')
            cfg.write_text(text)
            out.append(await stack.enter_async_context(running(cfg)))
        yield out


def old_rows(conn: sqlite3.Connection, now: float, tag: str) -> None:
    """12 resolved incidents long gone (1 notice with 2 attempts, 1 event each),
    15 old alarms of no incident, 5 old quarantined inputs; and an old
    acknowledged incident with its alarm, which must stay."""
    ancient = now - 1000 * DAY

    def incident(n: int, state: str, resolved_at: float | None) -> int:
        cur = conn.execute(
            "INSERT INTO incidents (contract, plan, device, component, code, fingerprint,"
            " severity, state, title, count, first_seen, last_seen, resolved_at, updated_at)"
            " VALUES ('C-0001', 'express-5x9', 'DEV1', 'PSU', ?, ?, 'major', ?, 't', 1,"
            " ?, ?, ?, ?)",
            (f"{tag}{n}", f"DEV1/PSU/{tag}{n}", state, ancient, ancient, resolved_at, ancient),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def alarm(n: int, incident: int | None) -> None:
        conn.execute(
            "INSERT INTO alarms (device, report_id, channel, format, severity, component, code,"
            " message, received_at, stored_at, coverage, incident, raw)"
            " VALUES ('DEV1', ?, 'http', 'json', 'major', 'PSU', 'X', 'm', ?, ?, ?, ?, ?)",
            (f"{tag}-r{n}", ancient, ancient, "covered" if incident else "unknown-device",
             incident, b"raw"),
        )  # fmt: skip

    for n in range(12):
        inc = incident(n, "resolved", now - 800 * DAY)
        notice = conn.execute(
            "INSERT INTO notices (incident, round, kind, severity, contact, transport, target,"
            " key, status, attempts, created_at, next_try) VALUES (?, 1, 'raised', 'major',"
            " 'Sato', 'webhook', 'http://x', ?, 'delivered', 2, ?, ?)",
            (inc, f"{tag}-k{n}", ancient, ancient),
        ).lastrowid
        for attempt in (1, 2):
            conn.execute(
                "INSERT INTO notice_attempts (notice, attempt, started_at, outcome)"
                " VALUES (?, ?, ?, 'delivered')",
                (notice, attempt, ancient),
            )
        conn.execute(
            "INSERT INTO events (incident, contract, at) VALUES (?, 'C-0001', ?)", (inc, now)
        )
    for n in range(15):
        alarm(n, None)
    for _ in range(5):
        conn.execute(
            "INSERT INTO quarantine (channel, reason, received_at, size, raw)"
            " VALUES ('smtp', 'unparseable', ?, 3, ?)",
            (ancient, b"qqq"),
        )
    kept = incident(99, "acknowledged", None)
    alarm(99, kept)


EXPECTED = {
    "incidents": 12,
    "notices": 12,
    "notice_attempts": 24,
    "events": 12,
    "alarms": 15,
    "quarantine": 5,
}


async def settled(d: RunningDaemon) -> None:
    """The daemon's own pass at start is over (done or skipped); bounded wait."""
    for _ in range(600):
        runs = await d.metric("monitor_retention_runs_total")
        if runs >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the daemon's retention pass at start never finished")


async def test_retention_pass_runs_on_one_instance_of_two(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    async with two_instances(tmp_path, pg_url) as ds:
        for d in ds:
            await settled(d)
        ids = [instance_id(f"test-{i}") for i in (1, 2)]
        before = [
            {t: await d.metric(f'monitor_retention_pruned_total{{table="{t}"}}') for t in EXPECTED}
            for d in ds
        ]
        winners: list[int] = []
        for round_ in range(3):
            now = ds[0].rt.clock.now().timestamp()
            await ds[0].rt.store.write(lambda c, t=now, r=round_: old_rows(c, t, f"R{r}-"))
            # Forget who ran last: both instances are due at the same moment.
            sql(pg_url, f"DELETE FROM counters WHERE name IN ('{PASS_AT}', '{PASS_BY}')")
            # Small chunks: a pass takes many transactions, so without the
            # claim the two would interleave their chunks.
            jobs = [RetentionJob(d.rt, chunk=7) for d in ds]
            results = await asyncio.gather(*(job.run_once() for job in jobs))
            done = [k for k, got in enumerate(results) if got is not None]
            assert len(done) == 1, results
            winner = done[0]
            winners.append(winner)
            assert results[winner] == EXPECTED
            assert jobs[1 - winner].skipped == 1 and jobs[winner].skipped == 0
            assert rows(pg_url, f"SELECT value FROM counters WHERE name = '{PASS_BY}'") == [
                (ids[winner],)
            ]
            assert rows(pg_url, "SELECT count(*) FROM incidents WHERE state = 'resolved'") == [(0,)]
            assert rows(pg_url, "SELECT count(*) FROM alarms") == [(round_ + 1,)]  # the kept
            assert rows(pg_url, "SELECT count(*) FROM quarantine") == [(0,)]

        # Counted once, by the instance that did the deletes.
        after = [
            {t: await d.metric(f'monitor_retention_pruned_total{{table="{t}"}}') for t in EXPECTED}
            for d in ds
        ]
        for table, n in EXPECTED.items():
            added = [after[k][table] - before[k][table] for k in (0, 1)]
            assert sum(added) == 3 * n, (table, added)
            assert added == [winners.count(k) * n for k in (0, 1)], (table, added)

        # From then on the instance that ran the last pass keeps running them;
        # the other skips while that pass is recent...
        last = winners[-1]
        assert await RetentionJob(ds[last].rt).run_once() == {}
        assert await RetentionJob(ds[1 - last].rt).run_once() is None
        # ...and takes over once the last pass is over an interval old (its
        # runner stopped).  (Two intervals back: the two daemons' simulated
        # clocks started a moment apart, so they differ by that moment.)
        back_ms = 2 * int(RetentionJob(ds[0].rt).interval.total_seconds() * 1000)
        sql(pg_url, f"UPDATE counters SET value = value - {back_ms} WHERE name = '{PASS_AT}'")
        assert await RetentionJob(ds[1 - last].rt).run_once() == {}
        assert rows(pg_url, f"SELECT value FROM counters WHERE name = '{PASS_BY}'") == [
            (ids[1 - last],)
        ]
        assert await RetentionJob(ds[last].rt).run_once() is None
