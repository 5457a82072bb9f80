"""Stored rows → the JSON shapes of SPEC 6.2, and the read queries behind them."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any

from monitor.timefmt import rfc3339

INCIDENT_TIMES = (
    "first_seen",
    "last_seen",
    "due_at",
    "raised_at",
    "respond_by",
    "recovered_at",
    "acknowledged_at",
    "resolved_at",
)


def incident_json(row: sqlite3.Row, zone: tzinfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "contract": row["contract"],
        "device": row["device"],
        "component": row["component"],
        "code": row["code"],
        "fingerprint": row["fingerprint"],
        "severity": row["severity"],
        "state": row["state"],
        "title": row["title"],
        "count": row["count"],
    }
    for name in INCIDENT_TIMES:
        out[name] = rfc3339(row[name], zone)
    out["acknowledged_by"] = row["acknowledged_by"]
    out["after_hours"] = bool(row["after_hours"])
    out["plan"] = row["plan"]
    out["round"] = row["round"]
    out["fee_estimate"] = row["fee_estimate"]
    return out


def alarm_json(row: sqlite3.Row, zone: tzinfo) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "id": row["report_id"],
        "channel": row["channel"],
        "format": row["format"],
        "device": row["device"],
        "severity": row["severity"],
        "component": row["component"],
        "code": row["code"],
        "message": row["message"],
        "occurred": row["occurred"],
        "received_at": rfc3339(row["received_at"], zone),
        "stored_at": rfc3339(row["stored_at"], zone),
        "coverage": row["coverage"],
        "contract": row["contract"],
        "incident": row["incident"],
    }


def notice_json(row: sqlite3.Row, attempts: list[sqlite3.Row], zone: tzinfo) -> dict[str, Any]:
    return {
        "id": row["id"],
        "round": row["round"],
        "kind": row["kind"],
        "severity": row["severity"],
        "contact": row["contact"],
        "transport": row["transport"],
        "target": row["target"],
        "key": row["key"],
        "status": row["status"],
        "attempts": [
            {
                "attempt": a["attempt"],
                "started_at": rfc3339(a["started_at"], zone),
                "outcome": a["outcome"] or "unknown",
                "error": a["error"],
            }
            for a in attempts
        ],
        "created_at": rfc3339(row["created_at"], zone),
        "delivered_at": rfc3339(row["delivered_at"], zone),
        "last_error": row["last_error"],
    }


def quarantine_json(row: sqlite3.Row, zone: tzinfo) -> dict[str, Any]:
    raw = row["raw"] or b""
    return {
        "seq": row["seq"],
        "channel": row["channel"],
        "reason": row["reason"],
        "detail": row["detail"],
        "peer": row["peer"],
        "received_at": rfc3339(row["received_at"], zone),
        "size": row["size"],
        "raw": base64.b64encode(raw).decode("ascii"),
    }


# -- queries ------------------------------------------------------------------


def _in(column: str, values: Iterable[str]) -> tuple[str, list[Any]]:
    vals = list(values)
    if not vals:
        return "0", []
    return f"{column} IN ({','.join('?' * len(vals))})", vals


def list_incidents(
    conn: sqlite3.Connection,
    *,
    state: str | None,
    contract: str | None,
    device: str | None,
    allowed: frozenset[str] | None,
    limit: int,
    after: int | None,
) -> list[sqlite3.Row]:
    where: list[str] = ["1 = 1"]  # portable: PostgreSQL rejects a bare "1"
    args: list[Any] = []
    if state:
        where.append("state = ?")
        args.append(state)
    if contract:
        where.append("contract = ?")
        args.append(contract)
    if device:
        where.append("device = ?")
        args.append(device)
    if allowed is not None:
        clause, vals = _in("contract", allowed)
        where.append(clause)
        args.extend(vals)
    if after is not None:
        where.append("id < ?")
        args.append(after)
    args.append(limit)
    sql = f"SELECT * FROM incidents WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
    return conn.execute(sql, args).fetchall()


def list_alarms(
    conn: sqlite3.Connection,
    *,
    device: str | None,
    coverage: str | None,
    allowed: frozenset[str] | None,
    limit: int,
    after: int | None,
) -> list[sqlite3.Row]:
    where: list[str] = ["1 = 1"]  # portable: PostgreSQL rejects a bare "1"
    args: list[Any] = []
    if device:
        where.append("device = ?")
        args.append(device)
    if coverage:
        where.append("coverage = ?")
        args.append(coverage)
    if allowed is not None:
        clause, vals = _in("contract", allowed)
        where.append(clause)
        args.extend(vals)
    if after is not None:
        where.append("seq < ?")
        args.append(after)
    args.append(limit)
    cols = (
        "seq, report_id, channel, format, device, severity, component, code, message, "
        "occurred, received_at, stored_at, coverage, contract, incident"
    )
    sql = f"SELECT {cols} FROM alarms WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
    return conn.execute(sql, args).fetchall()


def incident_detail(
    conn: sqlite3.Connection, incident: int
) -> tuple[sqlite3.Row, list[int], list[tuple[sqlite3.Row, list[sqlite3.Row]]]] | None:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident,)).fetchone()
    if row is None:
        return None
    alarms = [
        r[0]
        for r in conn.execute("SELECT seq FROM alarms WHERE incident = ? ORDER BY seq", (incident,))
    ]
    notices = []
    for n in conn.execute("SELECT * FROM notices WHERE incident = ? ORDER BY id", (incident,)):
        attempts = conn.execute(
            "SELECT * FROM notice_attempts WHERE notice = ? ORDER BY attempt", (n["id"],)
        ).fetchall()
        notices.append((n, attempts))
    return row, alarms, notices


def state_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: r[1] for r in conn.execute("SELECT state, count(*) FROM incidents GROUP BY state")
    }
