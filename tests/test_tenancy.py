"""Tenancy and roles over every API endpoint (SPEC 6.2, issue 10).

A customer token (t-customer sees only C-0002) must never yield another
contract's incident, alarm, contract or event, and must not be able to tell
"another contract's" from "does not exist": single items answer the same
404 body as a missing one. Roles: admin everything; staff read all and
ack/resolve; agent push only; customer read its contracts.

Friday 20 Nov 2026 10:00 JST: both 5x9 contracts are in service hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.http.server import make_app
from tests.support.daemon import TOKENS, RunningDaemon, running, write_config

FRIDAY = "2026-11-20T10:00:00+09:00"
OWN_SERIAL = "JPN0099999"  # C-0002, the customer's
OTHER_SERIAL = "JPN0012345"  # C-0001, not the customer's

# Who may call what: the role table of SPEC 6.2 (+ whoami for every token).
READ = {"admin", "staff", "customer"}
ACT = {"admin", "staff"}
PUSH = {"admin", "agent"}
ADMIN = {"admin"}
ANY = {"admin", "staff", "agent", "customer"}

# Every API route the daemon serves, with the roles allowed. A new endpoint
# fails `test_every_api_route_is_covered` until it is added here, and with it
# to the role and tenancy checks below.
ROUTES: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/v1/incidents"): READ,
    ("GET", "/api/v1/incidents/{id}"): READ,
    ("POST", "/api/v1/incidents/{id}/ack"): ACT,
    ("POST", "/api/v1/incidents/{id}/resolve"): ACT,
    ("GET", "/api/v1/alarms"): READ,
    ("POST", "/api/v1/alarms"): PUSH,
    ("GET", "/api/v1/alarms/{seq}"): READ,
    ("POST", "/api/v1/redfish/{serial}"): PUSH,
    ("GET", "/api/v1/contracts"): READ,
    ("GET", "/api/v1/contracts/{id}/hours"): READ,
    ("GET", "/api/v1/quarantine"): ADMIN,
    ("GET", "/api/v1/whoami"): ANY,
    ("POST", "/api/v1/clock"): ADMIN,
    ("GET", "/api/v1/events"): READ,
}


def auth(role: str | None) -> dict[str, str]:
    if role is None:
        return {}
    token = TOKENS.get(role, "not-a-token")
    return {"Authorization": f"Bearer {token}"}


async def call(
    d: RunningDaemon,
    method: str,
    path: str,
    role: str | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    kwargs: dict[str, Any] = {"headers": {**auth(role), **(headers or {})}}
    if body is not None:
        kwargs["data"] = json.dumps(body).encode()
        kwargs["headers"]["Content-Type"] = "application/json"
    async with d.session.request(method, d.url + path, **kwargs) as resp:
        if resp.content_type == "text/event-stream":
            return resp.status, b""  # the stream is open: that is the answer
        return resp.status, await resp.read()


async def seed(d: RunningDaemon) -> dict[str, int]:
    """One incident and alarm per side, an unknown-device alarm, a quarantined
    report; returns their ids."""
    out: dict[str, int] = {}
    for name, serial in (("own", OWN_SERIAL), ("other", OTHER_SERIAL)):
        status, body = await d.alarm(id=f"{name}-1", serial=serial, code=f"{name.upper()}-1")
        assert status == 202, body
        out[f"{name}_alarm"] = body["seq"]
        out[f"{name}_incident"] = (await d.get(f"/api/v1/alarms/{body['seq']}"))["incident"]
    status, body = await d.alarm(id="nobody-1", serial="NOSUCH0001")
    assert status == 202, body
    out["unknown_alarm"] = body["seq"]
    async with d.session.post(
        d.url + "/api/v1/alarms", data=b"{not json", headers=d.headers("agent")
    ) as resp:
        assert resp.status == 400
    return out


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running(write_config(tmp_path, clock_start=FRIDAY)) as d:
        yield d


async def test_every_api_route_is_covered(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        app = make_app(d.rt)
        served = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/api/")
            and route.method != "HEAD"
        }
    assert served == set(ROUTES), "add new endpoints to ROUTES and to the tenancy checks"


async def test_roles_per_endpoint(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        ids = await seed(d)
        own_inc, own_alarm = ids["own_incident"], ids["own_alarm"]
        # Requests that succeed for an allowed role without changing what the
        # next role sees (ack is idempotent; resolve goes last, on its own incident).
        status, spare = await d.alarm(id="spare-1", serial=OWN_SERIAL, code="SPARE-1")
        spare_inc = (await d.get(f"/api/v1/alarms/{spare['seq']}"))["incident"]
        alarm = {
            "v": 1,
            "id": "push-1",
            "severity": "minor",
            "component": "FAN1",
            "code": "F-1",
            "message": "fan",
            "serial": OWN_SERIAL,
        }
        requests: dict[tuple[str, str], tuple[str, Any]] = {
            ("GET", "/api/v1/incidents"): ("/api/v1/incidents", None),
            ("GET", "/api/v1/incidents/{id}"): (f"/api/v1/incidents/{own_inc}", None),
            ("POST", "/api/v1/incidents/{id}/ack"): (
                f"/api/v1/incidents/{own_inc}/ack",
                {"by": "t"},
            ),
            ("POST", "/api/v1/incidents/{id}/resolve"): (
                f"/api/v1/incidents/{spare_inc}/resolve",
                {"by": "t"},
            ),
            ("GET", "/api/v1/alarms"): ("/api/v1/alarms", None),
            ("POST", "/api/v1/alarms"): ("/api/v1/alarms", alarm),
            ("GET", "/api/v1/alarms/{seq}"): (f"/api/v1/alarms/{own_alarm}", None),
            ("POST", "/api/v1/redfish/{serial}"): (f"/api/v1/redfish/{OWN_SERIAL}", {"Events": []}),
            ("GET", "/api/v1/contracts"): ("/api/v1/contracts", None),
            ("GET", "/api/v1/contracts/{id}/hours"): ("/api/v1/contracts/C-0002/hours", None),
            ("GET", "/api/v1/quarantine"): ("/api/v1/quarantine", None),
            ("GET", "/api/v1/whoami"): ("/api/v1/whoami", None),
            ("POST", "/api/v1/clock"): ("/api/v1/clock", {"advance": 0}),
            ("GET", "/api/v1/events"): ("/api/v1/events", None),
        }
        assert set(requests) == set(ROUTES)
        seen: dict[tuple[str, str, str | None], int] = {}
        for (method, route), allowed in ROUTES.items():
            path, body = requests[(method, route)]
            for role in ("agent", "customer", "staff", "admin", None, "bogus"):
                status, _ = await call(d, method, path, role, body)
                seen[(method, route, role)] = status
                if role is None or role == "bogus":
                    assert status == 401, (method, route, role, status)
                elif role in allowed:
                    # Resolving twice is a conflict, which still means "allowed".
                    done = route.endswith("/resolve") and role == "admin"
                    ok = (200, 202, 409) if done else (200, 202)
                    assert status in ok, (method, route, role, status)
                else:
                    assert status == 403, (method, route, role, status)
        assert len(seen) == len(ROUTES) * 6


async def test_customer_never_sees_another_contract(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        ids = await seed(d)
        other_inc, other_alarm = ids["other_incident"], ids["other_alarm"]
        own_inc = ids["own_incident"]

        # Lists: only C-0002, whatever the filters say.
        for query in (
            "",
            "?contract=C-0001",
            f"?device={OTHER_SERIAL}",
            "?state=notified",
            "?state=open",
            f"?after={other_inc + 10}",
            "?limit=1000",
        ):
            items = (await d.get(f"/api/v1/incidents{query}", role="customer"))["items"]
            assert {i["contract"] for i in items} <= {"C-0002"}, query
            assert other_inc not in {i["id"] for i in items}
        assert [i["id"] for i in (await d.get("/api/v1/incidents", "customer"))["items"]] == [
            own_inc
        ]
        for query in (
            "",
            f"?device={OTHER_SERIAL}",
            "?coverage=unknown-device",
            "?coverage=covered",
            "?limit=1000",
        ):
            items = (await d.get(f"/api/v1/alarms{query}", role="customer"))["items"]
            assert {a["contract"] for a in items} <= {"C-0002"}, query
            assert {a["device"] for a in items} <= {OWN_SERIAL}, query
        # Paging with a cursor never reaches another contract's rows either.
        page = await d.get("/api/v1/incidents?limit=1", role="customer")
        while page["next"]:
            page = await d.get(f"/api/v1/incidents?limit=1&after={page['next']}", "customer")
            assert {i["contract"] for i in page["items"]} <= {"C-0002"}

        # Single items: exactly what a missing one answers.
        pairs = [
            (f"/api/v1/incidents/{other_inc}", "/api/v1/incidents/999999"),
            (f"/api/v1/alarms/{other_alarm}", "/api/v1/alarms/999999"),
            (f"/api/v1/alarms/{ids['unknown_alarm']}", "/api/v1/alarms/999998"),
            ("/api/v1/contracts/C-0001/hours", "/api/v1/contracts/C-9999/hours"),
            (
                "/api/v1/contracts/C-0003/hours?at=2026-11-20T10:00:00%2B09:00&next=3",
                "/api/v1/contracts/C-9999/hours?at=2026-11-20T10:00:00%2B09:00&next=3",
            ),
            ("/api/v1/contracts/C-0001/hours?at=bad", "/api/v1/contracts/C-9999/hours?at=bad"),
        ]
        for hidden, missing in pairs:
            got = await call(d, "GET", hidden, "customer")
            assert got[0] == 404, (hidden, got)
            assert got == await call(d, "GET", missing, "customer"), hidden
        # ...and the same for staff only where the item really is missing.
        assert (await call(d, "GET", f"/api/v1/incidents/{other_inc}", "staff"))[0] == 200
        assert (await call(d, "GET", "/api/v1/contracts/C-0001/hours", "staff"))[0] == 200

        # Acting: 403 by role alone, the same for anyone's or no incident.
        for target in (other_inc, own_inc, 999999):
            for verb in ("ack", "resolve"):
                got = await call(
                    d, "POST", f"/api/v1/incidents/{target}/{verb}", "customer", {"by": "x"}
                )
                assert got == (403, b'{"error": "role customer may not do this"}'), got
        assert (await d.incident(other_inc))["state"] != "acknowledged"

        # Contracts and whoami: only its own.
        contracts = (await d.get("/api/v1/contracts", "customer"))["items"]
        assert [c["id"] for c in contracts] == ["C-0002"]
        assert contracts[0]["devices"] == [OWN_SERIAL]
        me = await d.get("/api/v1/whoami", "customer")
        assert me["role"] == "customer" and me["contracts"] == ["C-0002"]
        assert me["may"]["ack"] is False and me["may"]["read"] is True
        assert me["now"].startswith("2026-11-20T10:0")
        staff = await d.get("/api/v1/whoami", "staff")
        assert staff["contracts"] is None and staff["may"]["ack"] is True
        assert {c["id"] for c in (await d.get("/api/v1/contracts", "staff"))["items"]} == {
            "C-0001",
            "C-0002",
            "C-0003",
        }

        # The single-incident view's alarms and notices are its own.
        detail = await d.get(f"/api/v1/incidents/{own_inc}", "customer")
        assert detail["alarms"] == [ids["own_alarm"]]
        for seq in detail["alarms"]:
            assert (await d.get(f"/api/v1/alarms/{seq}", "customer"))["contract"] == "C-0002"

        # The URL token is for the event stream only (browsers cannot set
        # headers there); anywhere else it is not a credential.
        for path in (
            "/api/v1/incidents",
            f"/api/v1/incidents/{own_inc}",
            "/api/v1/contracts",
            "/api/v1/whoami",
        ):
            status, _ = await call(d, "GET", f"{path}?access_token=t-admin", None)
            assert status == 401, path


class Stream:
    """Reads one SSE response into (id, event, data) tuples."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        ident = kind = ""
        async for raw in self.resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                self.events.append((ident, kind, json.loads(line[6:])))
                ident = kind = ""
                self.arrived.set()

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(predicate(e) for e in self.events):
                self.arrived.clear()
                await self.arrived.wait()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def stream(
    d: RunningDaemon, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    async with d.session.get(d.url + url, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        s = Stream(resp)
        try:
            yield s
        finally:
            await s.close()


def contracts_of(s: Stream) -> set[str]:
    return {data["contract"] for _, kind, data in s.events if kind == "incident"}


async def test_event_stream_is_filtered_live_and_on_replay(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        customer = "/api/v1/events?access_token=t-customer"
        async with (
            stream(d, customer) as cust,
            stream(d, "/api/v1/events", d.headers("staff")) as staff,
        ):
            await asyncio.sleep(0.05)  # both subscribed before anything happens
            ids = await seed(d)
            other, own = ids["other_incident"], ids["own_incident"]
            # Changes to the other contract's incident: ack, a repeat, resolve.
            status, _ = await d.post(f"/api/v1/incidents/{other}/ack", {"by": "s"}, "staff")
            assert status == 200
            await d.alarm(id="other-2", serial=OTHER_SERIAL, code="OTHER-1")
            status, _ = await d.post(f"/api/v1/incidents/{other}/resolve", {"by": "s"}, "staff")
            assert status == 200
            # Then a marker on the customer's own: events arrive in order, so
            # once it is there every earlier one has been decided on.
            status, _ = await d.post(f"/api/v1/incidents/{own}/ack", {"by": "s"}, "staff")
            assert status == 200
            await cust.until(lambda e: e[2].get("state") == "acknowledged")
            await staff.until(
                lambda e: e[2].get("id") == own and e[2].get("state") == "acknowledged"
            )
            assert contracts_of(cust) == {"C-0002"}
            assert {e[2]["id"] for e in cust.events} == {own}
            assert contracts_of(staff) == {"C-0001", "C-0002"}
            # The staff stream proves the other contract's changes were published.
            assert any(e[2]["id"] == other and e[2]["state"] == "resolved" for e in staff.events)
            last_staff_id = max(int(e[0]) for e in staff.events)

        # Replay from the start (header and query forms): still filtered.
        for url, headers in (
            (customer, {"Last-Event-ID": "0"}),
            (customer + "&last_event_id=0", {}),
            ("/api/v1/events", {**d.headers("customer"), "Last-Event-ID": "0"}),
        ):
            async with stream(d, url, headers) as replay:
                await replay.until(lambda e: e[2].get("state") == "acknowledged")
                assert contracts_of(replay) == {"C-0002"}, url
        # The staff replay holds the other contract's events: they were there to leak.
        async with stream(d, "/api/v1/events", {**d.headers("staff"), "Last-Event-ID": "0"}) as r:
            await r.until(lambda e: e[0] == str(last_staff_id))
            assert contracts_of(r) == {"C-0001", "C-0002"}


@pytest.mark.parametrize("role", ["agent", None, "bogus"])
async def test_event_stream_refuses(tmp_path: Path, role: str | None) -> None:
    async with daemon(tmp_path) as d:
        status, _ = await call(d, "GET", "/api/v1/events", role)
        assert status == (403 if role == "agent" else 401)
        if role is not None:
            token = TOKENS.get(role, "bogus")
            status, _ = await call(d, "GET", f"/api/v1/events?access_token={token}", None)
            assert status == (403 if role == "agent" else 401)
