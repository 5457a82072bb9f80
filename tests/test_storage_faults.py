"""A full database answers temporary failures, loses nothing stored, and
recovers without a restart when space returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.daemon import running, write_config


async def test_full_database_answers_503_then_recovers(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        status, _ = await d.alarm(id="ok-1")
        assert status == 202

        def fill(conn: sqlite3.Connection) -> None:
            # SQLite's own "disk full": no page may be added beyond this.
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await d.rt.store.write(fill)
        big = "x" * 8000
        status, body = await d.alarm(id="full-1", message=big)
        assert status == 503 and body == {"error": "storage unavailable"}
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 503
            assert "store" in (await resp.json())["down"]
        async with d.session.get(d.url + "/healthz") as resp:
            assert resp.status == 200  # alive, just not taking writes

        await d.rt.store.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        status, again = await d.alarm(id="full-1", message=big)
        assert status == 202 and again["duplicate"] is False  # nothing half-stored before
        async with d.session.get(d.url + "/readyz") as resp:
            assert resp.status == 200
        ids = [a["id"] for a in (await d.get("/api/v1/alarms"))["items"]]
        assert ids == ["full-1", "ok-1"]
