"""The JSON API of SPEC 6.2, 3.4 and 6.4."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from monitor import incidents
from monitor.cli_hours import hours_json
from monitor.clock import SimulatedClock
from monitor.formats.alarm_json import Invalid, decode_alarm
from monitor.formats.redfish import parse_redfish
from monitor.hours import schedule_for
from monitor.http.auth import ACT, ADMIN, PUSH, READ, Principal, not_found, principal
from monitor.model import AlarmReport, Config, Received, Rejected
from monitor.pipeline import Accepted, Refused
from monitor.runtime import Runtime
from monitor.store import StorageUnavailable
from monitor.timefmt import parse_rfc3339
from monitor.views import (
    alarm_json,
    incident_detail,
    incident_json,
    list_alarms,
    list_incidents,
    notice_json,
    quarantine_json,
)

MAX_BODY = 1024 * 1024
RT = web.AppKey("runtime", Runtime)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
    )


def _error(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status)


def _rt(request: web.Request) -> Runtime:
    return request.app[RT]


def _who(request: web.Request, roles: tuple[str, ...]) -> Principal:
    return principal(request, _rt(request).config.current, roles)


def _int_arg(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be an integer"}),
            content_type="application/json",
        ) from None


def _limit(request: web.Request) -> int:
    value = _int_arg(request, "limit", 50) or 50
    return max(1, min(1000, value))


def _page(items: list[dict[str, Any]], key: str, limit: int) -> dict[str, Any]:
    nxt = str(items[-1][key]) if len(items) == limit and items else None
    return {"items": items, "next": nxt}


# -- incidents -----------------------------------------------------------------


async def get_incidents(request: web.Request) -> web.Response:
    who = _who(request, READ)
    rt = _rt(request)
    limit = _limit(request)
    after = _int_arg(request, "after", None)
    q = request.query
    rows = await rt.store.read(
        lambda conn: list_incidents(
            conn,
            state=q.get("state") or None,
            contract=q.get("contract") or None,
            device=q.get("device") or None,
            allowed=who.allowed,
            limit=limit,
            after=after,
        )
    )
    zone = rt.zone
    return _json(_page([incident_json(r, zone) for r in rows], "id", limit))


async def _visible_incident(request: web.Request, who: Principal) -> int:
    try:
        incident = int(request.match_info["id"])
    except ValueError:
        raise not_found("incident") from None
    rt = _rt(request)
    row = await rt.store.read(
        lambda conn: conn.execute(
            "SELECT contract FROM incidents WHERE id = ?", (incident,)
        ).fetchone()
    )
    who.require(row[0] if row else None, "incident", exists=row is not None)
    return incident


async def get_incident(request: web.Request) -> web.Response:
    who = _who(request, READ)
    incident = await _visible_incident(request, who)
    rt = _rt(request)
    found = await rt.store.read(lambda conn: incident_detail(conn, incident))
    if found is None:
        raise not_found("incident")
    row, alarms, notices = found
    zone = rt.zone
    out = incident_json(row, zone)
    out["alarms"] = alarms
    out["notices"] = [notice_json(n, attempts, zone) for n, attempts in notices]
    return _json(out)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text='{"error": "body is not JSON"}', content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text='{"error": "body must be a JSON object"}', content_type="application/json"
        )
    return data


async def _incident_now(rt: Runtime, incident: int) -> dict[str, Any]:
    row = await rt.store.read(
        lambda conn: conn.execute("SELECT * FROM incidents WHERE id = ?", (incident,)).fetchone()
    )
    return incident_json(row, rt.zone)


async def post_ack(request: web.Request) -> web.Response:
    who = _who(request, ACT)
    incident = await _visible_incident(request, who)
    body = await _body(request)
    by = str(body.get("by") or who.role)
    rt = _rt(request)
    try:
        await rt.pipeline.acknowledge(incident, by)
    except incidents.TransitionError as exc:
        return _error(409, str(exc))
    except StorageUnavailable:
        return _error(503, "storage unavailable")
    return _json(await _incident_now(rt, incident))


async def post_resolve(request: web.Request) -> web.Response:
    who = _who(request, ACT)
    incident = await _visible_incident(request, who)
    body = await _body(request)
    by = str(body.get("by") or who.role)
    rt = _rt(request)
    try:
        await rt.pipeline.resolve(incident, by)
    except incidents.TransitionError as exc:
        return _error(409, str(exc))
    except StorageUnavailable:
        return _error(503, "storage unavailable")
    return _json(await _incident_now(rt, incident))


# -- alarms ------------------------------------------------------------------------


async def get_alarms(request: web.Request) -> web.Response:
    who = _who(request, READ)
    rt = _rt(request)
    limit = _limit(request)
    after = _int_arg(request, "after", None)
    q = request.query
    rows = await rt.store.read(
        lambda conn: list_alarms(
            conn,
            device=q.get("device") or None,
            coverage=q.get("coverage") or None,
            allowed=who.allowed,
            limit=limit,
            after=after,
        )
    )
    zone = rt.zone
    return _json(_page([alarm_json(r, zone) for r in rows], "seq", limit))


async def get_alarm(request: web.Request) -> web.Response:
    who = _who(request, READ)
    rt = _rt(request)
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise not_found("alarm") from None
    row = await rt.store.read(
        lambda conn: conn.execute(
            "SELECT seq, report_id, channel, format, device, severity, component, code, message,"
            " occurred, received_at, stored_at, coverage, contract, incident FROM alarms"
            " WHERE seq = ?",
            (seq,),
        ).fetchone()
    )
    who.require(row["contract"] if row else None, "alarm", exists=row is not None)
    return _json(alarm_json(row, rt.zone))


def _answer(result: Accepted | Refused) -> dict[str, Any]:
    if isinstance(result, Refused):
        return {"error": result.reason}
    return {"seq": result.seq, "id": result.id, "duplicate": result.duplicate}


def _push_refusal(who: Principal, config: Config, serial: str) -> tuple[str, str] | None:
    """Why `who` may not push for `serial` (reason, detail for the sender), or None.

    `not-authorized`: a token bound to contracts (`[[api.tokens]] contracts`
    on an agent token) pushing for a serial that is not a configured device
    of those contracts. An unknown serial and another contract's device get
    the same answer, so a bound token cannot probe which serials exist.
    """
    device = config.devices.get(serial)
    if not who.may_report(device):
        return "not-authorized", f"this token may not report for device {serial[:64]!r}"
    return None


def _redfish_vouched(who: Principal, config: Config, serial: str) -> bool:
    """Whether unsigned Redfish events count as the device's own.

    Redfish events carry no `sig`, and a device with a `secret` must sign
    (SPEC 3.1): for it, only a token bound to its contract (or an admin's,
    the centre's own) vouches for the push; from any other agent token each
    event is refused `bad-signature` like an unsigned alarm."""
    device = config.devices.get(serial)
    if device is None or not device.secret:
        return True
    return who.role != "agent" or who.bound


async def _refuse_push(
    rt: Runtime, who: Principal, raw: bytes, peer: str, refusal: tuple[str, str]
) -> web.Response:
    """Quarantine a push the token may not make; answer 403 with the reason."""
    reason, detail = refusal
    bound = ",".join(sorted(who.reports_for)) if who.reports_for is not None else "-"
    await rt.pipeline.reject(
        Rejected("http", reason, raw, peer), f"{detail} (role {who.role}, bound to {bound})"
    )
    return _json({"error": reason, "detail": detail[:300]}, 403)


async def post_alarm(request: web.Request) -> web.Response:
    who = _who(request, PUSH)
    rt = _rt(request)
    received = rt.clock.now()
    raw = await request.read()
    peer = request.remote or ""
    report = decode_alarm(raw)
    if isinstance(report, Invalid):
        await rt.pipeline.reject(Rejected("http", report.reason, raw, peer), report.detail)
        return _json({"error": report.reason, "detail": report.detail[:300]}, 400)
    refusal = _push_refusal(who, rt.config.current, report.serial)
    if refusal is not None:
        return await _refuse_push(rt, who, raw, peer, refusal)
    try:
        result = await rt.pipeline.accept(Received(report, "http", "json", raw, peer), received)
    except StorageUnavailable:
        return _error(503, "storage unavailable")
    if isinstance(result, Refused):
        return _json({"error": result.reason}, 400)
    return _json(_answer(result), 202)


async def post_redfish(request: web.Request) -> web.Response:
    who = _who(request, PUSH)
    rt = _rt(request)
    received = rt.clock.now()
    serial = request.match_info["serial"]
    raw = await request.read()
    peer = request.remote or ""
    # Every event of the payload is for the path's serial (parse_redfish
    # gives each the caller's serial), so one check covers them all.
    refusal = _push_refusal(who, rt.config.current, serial)
    if refusal is not None:
        return await _refuse_push(rt, who, raw, peer, refusal)
    vouched = _redfish_vouched(who, rt.config.current, serial)
    items: list[dict[str, Any]] = []
    for n, item in enumerate(parse_redfish(raw, serial)):
        # The payload's bytes go with its first record only: kept once per
        # event, one 1 MiB push of small events cost hundreds of MiB.
        kept = raw if n == 0 else b""
        if not isinstance(item, AlarmReport):
            await rt.pipeline.reject(Rejected("http", item.reason, kept, peer), item.detail)
            items.append({"error": item.reason})
            continue
        try:
            result = await rt.pipeline.accept(
                Received(item, "http", "redfish", kept, peer, signed_ok=vouched), received
            )
        except StorageUnavailable:
            return _error(503, "storage unavailable")
        items.append(_answer(result))
    return _json({"items": items}, 202)


# -- contracts, quarantine, clock ------------------------------------------------------


async def get_contracts(request: web.Request) -> web.Response:
    who = _who(request, READ)
    rt = _rt(request)
    config = rt.config.current
    now = rt.clock.now()
    items = []
    for contract in config.contracts.values():
        if not who.sees(contract.id):
            continue
        plan = config.plans[contract.plan]
        sched = schedule_for(config, contract)
        nxt = sched.next_start(now)
        items.append(
            {
                "id": contract.id,
                "customer": contract.customer,
                "plan": contract.plan,
                "hours": f"{plan.hours.start // 60:02d}:{plan.hours.start % 60:02d}-"
                f"{plan.hours.end // 60:02d}:{plan.hours.end % 60:02d}",
                "timezone": contract.timezone,
                "start": contract.start.isoformat(),
                "years": contract.years,
                "registered": contract.registered,
                "after_hours": contract.after_hours,
                "in_hours": sched.in_hours(now),
                "next_start": nxt.isoformat() if nxt else None,
                "devices": sorted(
                    d.serial for d in config.devices.values() if d.contract == contract.id
                ),
            }
        )
    return _json({"items": items, "next": None})


async def get_contract_hours(request: web.Request) -> web.Response:
    who = _who(request, READ)
    rt = _rt(request)
    config = rt.config.current
    contract = config.contracts.get(request.match_info["id"])
    who.require(contract.id if contract else None, "contract", exists=contract is not None)
    assert contract is not None  # require() raised otherwise
    at: datetime = rt.clock.now()
    if request.query.get("at"):
        try:
            at = parse_rfc3339(request.query["at"])
        except ValueError:
            return _error(400, "at must be RFC 3339 with an offset")
    n = max(0, min(100, _int_arg(request, "next", 5) or 0))
    return _json(hours_json(schedule_for(config, contract), at, n))


async def get_whoami(request: web.Request) -> web.Response:
    """The caller's role and scope, and the daemon clock's now: the dashboard
    shows the role, offers only what the role may do (no probing requests
    that would fail) and runs countdowns on the daemon's clock, which may be
    simulated."""
    who = _who(request, (*READ, "agent"))
    rt = _rt(request)
    return _json({**who.describe(), "now": rt.clock.now().isoformat()})


async def get_quarantine(request: web.Request) -> web.Response:
    _who(request, ADMIN)
    rt = _rt(request)
    limit = _limit(request)
    after = _int_arg(request, "after", None)

    def query(conn: Any) -> list[Any]:
        args: tuple[int, ...]
        if after is None:
            sql, args = "SELECT * FROM quarantine ORDER BY seq DESC LIMIT ?", (limit,)
        else:
            sql, args = (
                "SELECT * FROM quarantine WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (after, limit),
            )
        return list(conn.execute(sql, args).fetchall())

    rows = await rt.store.read(query)
    zone = rt.zone
    return _json(_page([quarantine_json(r, zone) for r in rows], "seq", limit))


async def post_clock(request: web.Request) -> web.Response:
    rt = _rt(request)
    clock = rt.clock
    if not isinstance(clock, SimulatedClock):
        return _error(404, "the clock is not simulated")
    _who(request, ADMIN)
    body = await _body(request)
    try:
        if "set" in body:
            now = clock.set(parse_rfc3339(str(body["set"])))
        elif "advance" in body:
            now = clock.advance(float(body["advance"]))
        else:
            return _error(400, 'give {"set": TIME} or {"advance": seconds}')
    except (ValueError, TypeError) as exc:
        return _error(400, str(exc))
    return _json({"now": now.isoformat()})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/incidents", get_incidents)
    r.add_get("/api/v1/incidents/{id}", get_incident)
    r.add_post("/api/v1/incidents/{id}/ack", post_ack)
    r.add_post("/api/v1/incidents/{id}/resolve", post_resolve)
    r.add_get("/api/v1/alarms", get_alarms)
    r.add_post("/api/v1/alarms", post_alarm)
    r.add_get("/api/v1/alarms/{seq}", get_alarm)
    r.add_post("/api/v1/redfish/{serial}", post_redfish)
    r.add_get("/api/v1/contracts", get_contracts)
    r.add_get("/api/v1/contracts/{id}/hours", get_contract_hours)
    r.add_get("/api/v1/quarantine", get_quarantine)
    r.add_get("/api/v1/whoami", get_whoami)
    r.add_post("/api/v1/clock", post_clock)
