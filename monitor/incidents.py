"""Incident state changes, as functions run inside the store's transaction.

Every function here takes the write connection and a `Context` (the config
snapshot and "now"), changes rows, and returns what happened so the caller
can update metrics and the event feed after the commit.  They are the only
code that moves an incident between states (SPEC 4's table), and they write
notice *intents* into `notices` in the same transaction as the decision that
owes them (an outbox): the notifier sends them afterwards, so a crash can
repeat a send but never lose or re-key one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitor.fees import after_hours_estimate
from monitor.hours import Schedule, schedule_for
from monitor.model import SEVERITY_RANK, Config, Contract, IncidentState
from monitor.notify.keys import idempotency_key

RAISED_STATES = (IncidentState.OPEN, IncidentState.NOTIFIED)
ACTIVE_STATES = ("deferred", "open", "notified")


@dataclass(slots=True)
class Context:
    config: Config
    now: datetime
    changes: list[tuple[int, int]] = field(default_factory=list)  # (event seq, incident)
    raised: list[tuple[str, str]] = field(default_factory=list)  # (plan, severity)
    notices: int = 0
    sla_breaches: int = 0
    steps: list[str] = field(default_factory=list)
    folded: bool = False  # the alarm folded into an unresolved incident
    earliest_due: float | None = None  # earliest next_step_at / respond_by set here

    @property
    def ts(self) -> float:
        return self.now.timestamp()

    def schedule(self, contract: Contract) -> Schedule:
        return schedule_for(self.config, contract)


class TransitionError(Exception):
    """An incident cannot move as asked (HTTP 409)."""


class NotFound(Exception):
    pass


def record_change(conn: sqlite3.Connection, ctx: Context, incident: int, contract: str) -> None:
    cur = conn.execute(
        "INSERT INTO events (incident, contract, at) VALUES (?, ?, ?)",
        (incident, contract, ctx.ts),
    )
    assert cur.lastrowid is not None
    ctx.changes.append((cur.lastrowid, incident))


def _row(conn: sqlite3.Connection, incident: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM incidents WHERE id = ?", (incident,)
    ).fetchone()
    if row is None:
        raise NotFound(incident)
    return row


def _update(conn: sqlite3.Connection, ctx: Context, row: sqlite3.Row, **values: object) -> None:
    values["updated_at"] = ctx.ts
    for key in ("next_step_at", "respond_by"):
        due = values.get(key)
        if isinstance(due, float) and (ctx.earliest_due is None or due < ctx.earliest_due):
            ctx.earliest_due = due
    cols = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE incidents SET {cols} WHERE id = ?", (*values.values(), row["id"]))
    record_change(conn, ctx, row["id"], row["contract"])


# ---------------------------------------------------------------------------
# Notices (intents)
# ---------------------------------------------------------------------------


def _queue_notice(
    conn: sqlite3.Connection,
    ctx: Context,
    row: sqlite3.Row,
    contract: Contract,
    index: int,
    kind: str,
    round_: int,
    severity: str,
    fee: int | None,
    wall_now: float,
) -> None:
    contact = contract.contacts[index]
    key = idempotency_key(row["id"], round_, kind, severity, contact.name)
    targets: list[tuple[str, str]] = []
    if contact.email and ctx.config.notify is not None:
        targets.append(("email", contact.email))
    if contact.webhook:
        targets.append(("webhook", contact.webhook))
    for transport, target in targets:
        cur = conn.execute(
            "INSERT OR IGNORE INTO notices (incident, round, kind, severity, contact, transport,"
            " target, key, status, created_at, next_try, fee_estimate)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (
                row["id"],
                round_,
                kind,
                severity,
                contact.name,
                transport,
                target,
                key,
                ctx.ts,
                wall_now,
                fee,
            ),
        )
        ctx.notices += cur.rowcount


def _set_pending(conn: sqlite3.Connection, incident: int, status: str, why: str) -> None:
    conn.execute(
        "UPDATE notices SET status = ?, last_error = ? WHERE incident = ? AND status = 'pending'",
        (status, why, incident),
    )


def _expire_pending(conn: sqlite3.Connection, incident: int, why: str) -> None:
    """A contact still unreached when the next step comes counts as not reached."""
    _set_pending(conn, incident, "expired", why)


def _cancel_pending(conn: sqlite3.Connection, incident: int, why: str) -> None:
    _set_pending(conn, incident, "cancelled", why)


def _after_notify_step(
    sched: Schedule, now: datetime, contract: Contract, index: int
) -> tuple[str, float | None]:
    """What the scheduler owes after contact `index` was notified at `now`.

    In a window: escalate to the next contact after `ack_timeout` of service
    time, unless the window closes first (then a reminder round at the next
    window start).  Outside a window (an after-hours notice): a reminder round
    at the next window start.
    """
    window = sched.window_at(now)
    if window is None:
        nxt = sched.next_start(now)
        return ("reminder", nxt.timestamp() if nxt else None)
    deadline = sched.add_service_time(now, contract.ack_timeout)
    if deadline < window.end:
        step = "escalate" if index + 1 < len(contract.contacts) else "exhausted"
        return (step, deadline.timestamp())
    nxt = sched.next_start(now)
    return ("reminder", nxt.timestamp() if nxt else None)


def _notify(
    conn: sqlite3.Connection,
    ctx: Context,
    row: sqlite3.Row,
    contract: Contract,
    index: int,
    kind: str,
    round_: int,
    wall_now: float,
    **extra: object,
) -> None:
    """Notify contact `index` of the round and plan the next step."""
    sched = ctx.schedule(contract)
    severity = str(extra.get("severity", row["severity"]))
    fee = row["fee_estimate"] if kind == "after-hours" else None
    if index < len(contract.contacts):
        _queue_notice(conn, ctx, row, contract, index, kind, round_, severity, fee, wall_now)
    step, at = _after_notify_step(sched, ctx.now, contract, index)
    _update(
        conn,
        ctx,
        row,
        round=round_,
        contact_index=index,
        next_step=step,
        next_step_at=at,
        **extra,
    )


# ---------------------------------------------------------------------------
# Creating and folding
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentOutcome:
    incident: int | None
    folded: bool = False


def raise_incident(
    conn: sqlite3.Connection,
    ctx: Context,
    row: sqlite3.Row,
    contract: Contract,
    wall_now: float,
    *,
    after_hours: bool = False,
) -> None:
    """deferred/new → open, round 1 from the first contact."""
    sched = ctx.schedule(contract)
    plan = ctx.config.plans[contract.plan]
    respond_by = sched.respond_by(ctx.now)
    kind = "after-hours" if after_hours else "raised"
    ctx.raised.append((plan.name, row["severity"]))
    _notify(
        conn,
        ctx,
        row,
        contract,
        0,
        kind,
        1,
        wall_now,
        state=IncidentState.OPEN.value,
        raised_at=ctx.ts,
        respond_by=respond_by.timestamp() if respond_by else None,
        after_hours=1 if after_hours else 0,
    )


def on_alarm(
    conn: sqlite3.Connection,
    ctx: Context,
    contract: Contract,
    serial: str,
    component: str,
    code: str,
    severity: str,
    message: str,
    wall_now: float,
) -> IncidentOutcome:
    """Dedup, fold or open an incident for a covered alarm (SPEC 4.3, 4.4)."""
    if severity == "clear":
        rows = conn.execute(
            "SELECT * FROM incidents WHERE device = ? AND component = ? AND state != 'resolved'",
            (serial, component),
        ).fetchall()
        for row in rows:
            _update(conn, ctx, row, recovered_at=ctx.ts, last_seen=ctx.ts)
        return IncidentOutcome(rows[0]["id"] if rows else None)

    fingerprint = f"{serial}/{component}/{code}"
    row = conn.execute(
        "SELECT * FROM incidents WHERE fingerprint = ? AND state != 'resolved'", (fingerprint,)
    ).fetchone()
    if row is not None:
        _fold(conn, ctx, row, contract, severity, wall_now)
        return IncidentOutcome(row["id"], folded=True)

    plan = ctx.config.plans[contract.plan]
    sched = ctx.schedule(contract)
    cur = conn.execute(
        "INSERT INTO incidents (contract, plan, device, component, code, fingerprint, severity,"
        " state, title, count, first_seen, last_seen, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'deferred', ?, 1, ?, ?, ?)",
        (
            contract.id,
            plan.name,
            serial,
            component,
            code,
            fingerprint,
            severity,
            message[:1024],
            ctx.ts,
            ctx.ts,
            ctx.ts,
        ),
    )
    assert cur.lastrowid is not None
    row = _row(conn, cur.lastrowid)
    if sched.in_hours(ctx.now):
        raise_incident(conn, ctx, row, contract, wall_now)
    elif contract.after_hours == "notify-critical" and severity == "critical":
        fee = after_hours_estimate(ctx.config.tariff, contract.timezone, ctx.now)
        conn.execute("UPDATE incidents SET fee_estimate = ? WHERE id = ?", (fee, row["id"]))
        raise_incident(conn, ctx, _row(conn, row["id"]), contract, wall_now, after_hours=True)
    else:
        due = sched.next_start(ctx.now)
        due_ts = due.timestamp() if due else None
        _update(conn, ctx, row, due_at=due_ts, next_step="raise", next_step_at=due_ts)
    return IncidentOutcome(row["id"])


def _fold(
    conn: sqlite3.Connection,
    ctx: Context,
    row: sqlite3.Row,
    contract: Contract,
    severity: str,
    wall_now: float,
) -> None:
    rose = SEVERITY_RANK[severity] < SEVERITY_RANK[row["severity"]]
    new_severity = severity if rose else row["severity"]
    _update(
        conn,
        ctx,
        row,
        count=row["count"] + 1,
        last_seen=ctx.ts,
        severity=new_severity,
        recovered_at=None,
    )
    if not rose:
        return
    state = row["state"]
    if state in RAISED_STATES:
        # Tell everyone already notified in this round, if we may notify now.
        sched = ctx.schedule(contract)
        may = sched.in_hours(ctx.now) or (
            contract.after_hours == "notify-critical" and severity == "critical"
        )
        if may:
            row = _row(conn, row["id"])
            for index in range(min(row["contact_index"] + 1, len(contract.contacts))):
                _queue_notice(
                    conn,
                    ctx,
                    row,
                    contract,
                    index,
                    "escalated",
                    row["round"],
                    severity,
                    None,
                    wall_now,
                )
    elif (
        state == IncidentState.DEFERRED
        and contract.after_hours == "notify-critical"
        and severity == "critical"
    ):
        fee = after_hours_estimate(ctx.config.tariff, contract.timezone, ctx.now)
        conn.execute("UPDATE incidents SET fee_estimate = ? WHERE id = ?", (fee, row["id"]))
        raise_incident(conn, ctx, _row(conn, row["id"]), contract, wall_now, after_hours=True)


# ---------------------------------------------------------------------------
# Scheduler steps
# ---------------------------------------------------------------------------


def due_steps(conn: sqlite3.Connection, now: float, limit: int = 500) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM incidents WHERE next_step_at IS NOT NULL AND next_step_at <= ? "
        "ORDER BY next_step_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [r[0] for r in rows]


def next_due(conn: sqlite3.Connection) -> float | None:
    a = conn.execute(
        "SELECT min(next_step_at) FROM incidents WHERE next_step_at IS NOT NULL"
    ).fetchone()[0]
    b = conn.execute(
        "SELECT min(respond_by) FROM incidents WHERE sla_counted = 0 AND respond_by IS NOT NULL"
        " AND state IN ('open', 'notified')"
    ).fetchone()[0]
    candidates = [x for x in (a, b) if x is not None]
    return min(candidates) if candidates else None


def take_step(conn: sqlite3.Connection, ctx: Context, incident: int, wall_now: float) -> None:
    """Take the one step owed now (only that one, even after a long gap)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        # Several instances' schedulers race for the same due step: the row
        # lock is the claim; a row another instance holds is its step.
        claimed = conn.execute(
            "SELECT id FROM incidents WHERE id = ? FOR UPDATE SKIP LOCKED", (incident,)
        ).fetchone()
        if claimed is None:
            return
    row = _row(conn, incident)
    at = row["next_step_at"]
    if at is None or at > ctx.ts or row["state"] not in ACTIVE_STATES:
        return
    contract = ctx.config.contracts.get(row["contract"])
    if contract is None:  # removed from the config: nothing left to notify
        _update(conn, ctx, row, next_step=None, next_step_at=None)
        return
    sched = ctx.schedule(contract)
    step = row["next_step"]
    ctx.steps.append(step)
    open_now = sched.in_hours(ctx.now)
    if step == "raise":
        if row["state"] != IncidentState.DEFERRED:
            _update(conn, ctx, row, next_step=None, next_step_at=None)
        elif open_now:
            raise_incident(conn, ctx, row, contract, wall_now)
        else:
            nxt = sched.next_start(ctx.now)
            ts = nxt.timestamp() if nxt else None
            _update(conn, ctx, row, due_at=ts, next_step_at=ts)
        return
    if step == "escalate" and open_now:
        _expire_pending(conn, incident, "not reached before ack_timeout")
        # The next contact of the same round gets the round's own kind.
        kind = "reminder" if row["round"] > 1 else "raised"
        _notify(conn, ctx, row, contract, row["contact_index"] + 1, kind, row["round"], wall_now)
        return
    if step == "reminder" and open_now:
        _expire_pending(conn, incident, "not reached before the window closed")
        _notify(conn, ctx, row, contract, 0, "reminder", row["round"] + 1, wall_now)
        return
    # exhausted, or a step that finds the window closed: next round at the
    # next window start.  A continuous plan (24x7) has no next start: the
    # next round follows after another ack_timeout.
    nxt = sched.next_start(ctx.now)
    if nxt is None:
        nxt = ctx.now + max(contract.ack_timeout, timedelta(minutes=1))
    _update(conn, ctx, row, next_step="reminder", next_step_at=nxt.timestamp())


def sla_due(conn: sqlite3.Connection, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM incidents WHERE sla_counted = 0 AND respond_by IS NOT NULL "
        "AND respond_by <= ? AND state IN ('open', 'notified') LIMIT 1",
        (now,),
    ).fetchone()
    return row is not None


def count_sla_breaches(conn: sqlite3.Connection, ctx: Context) -> None:
    rows = conn.execute(
        "SELECT * FROM incidents WHERE sla_counted = 0 AND respond_by IS NOT NULL "
        "AND respond_by <= ? AND state IN ('open', 'notified')",
        (ctx.ts,),
    ).fetchall()
    for row in rows:
        _update(conn, ctx, row, sla_counted=1)
        ctx.sla_breaches += 1
    if rows:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('sla_breaches', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = counters.value + excluded.value",
            (len(rows),),
        )


# ---------------------------------------------------------------------------
# People: acknowledge, resolve
# ---------------------------------------------------------------------------


def acknowledge(conn: sqlite3.Connection, ctx: Context, incident: int, by: str) -> bool:
    """True when the state changed; False for an already acknowledged one."""
    row = _row(conn, incident)
    state = row["state"]
    if state == IncidentState.ACKNOWLEDGED:
        return False
    if state == IncidentState.RESOLVED:
        raise TransitionError(f"INC-{incident} is resolved")
    _cancel_pending(conn, incident, "acknowledged")
    _update(
        conn,
        ctx,
        row,
        state=IncidentState.ACKNOWLEDGED.value,
        acknowledged_at=ctx.ts,
        acknowledged_by=by[:200],
        next_step=None,
        next_step_at=None,
    )
    return True


def resolve(conn: sqlite3.Connection, ctx: Context, incident: int, by: str) -> None:
    row = _row(conn, incident)
    if row["state"] == IncidentState.RESOLVED:
        raise TransitionError(f"INC-{incident} is already resolved")
    _cancel_pending(conn, incident, "resolved")
    _update(
        conn,
        ctx,
        row,
        state=IncidentState.RESOLVED.value,
        resolved_at=ctx.ts,
        next_step=None,
        next_step_at=None,
    )
