"""SPEC 4 end to end over HTTP push, on the simulated clock, with a real
webhook receiver.  Dates: Friday 20 Nov 2026; Monday 23 Nov is a Japanese
holiday (勤労感謝の日), so the next service day is Tuesday 24 Nov."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.daemon import running, webhook_receiver, write_config


async def test_friday_afternoon_to_tuesday(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start="2026-11-20T16:30:00+09:00")
        async with running(cfg) as d:
            # Friday 16:30 major alarm → raised at once, first contact notified.
            status, first = await d.alarm(id="r-1")
            assert status == 202 and first["duplicate"] is False
            alarm = await d.get(f"/api/v1/alarms/{first['seq']}")
            inc_id = alarm["incident"]
            inc = await d.incident(inc_id)
            assert inc["state"] in ("open", "notified")
            assert inc["respond_by"].startswith("2026-11-24T09:30:00")
            await hook.wait_for(1)
            assert [r["body"]["contact"] for r in hook.received] == ["Sato"]
            assert hook.received[0]["body"]["kind"] == "raised"
            assert hook.received[0]["body"]["round"] == 1
            assert hook.received[0]["key"]

            # The exact re-send is a duplicate: acknowledged, not stored twice.
            status, again = await d.alarm(id="r-1")
            assert status == 202 and again == {**first, "duplicate": True}

            # A second occurrence folds into the incident.
            status, second = await d.alarm(id="r-2")
            assert status == 202 and second["duplicate"] is False
            inc = await d.incident(inc_id)
            assert inc["count"] == 2 and inc["severity"] == "major"
            assert inc["state"] == "notified"

            # A critical occurrence raises the severity and tells Sato again.
            status, _ = await d.alarm(id="r-3", severity="critical")
            inc = await d.incident(inc_id)
            assert inc["count"] == 3 and inc["severity"] == "critical"
            await hook.wait_for(2)
            assert hook.received[1]["body"]["kind"] == "escalated"
            assert hook.received[1]["body"]["contact"] == "Sato"
            assert hook.received[1]["key"] != hook.received[0]["key"]

            # 30 minutes (of service time) later, the second contact.
            await d.set_clock("2026-11-20T17:00:30+09:00")
            await hook.wait_for(3)
            assert hook.received[2]["body"]["contact"] == "Oncall"
            assert hook.received[2]["body"]["round"] == 1

            # Staff acknowledge: no more notices for it.
            status, acked = await d.post(
                f"/api/v1/incidents/{inc_id}/ack", {"by": "sato"}, role="staff"
            )
            assert status == 200 and acked["state"] == "acknowledged"
            assert acked["acknowledged_by"] == "sato"
            status, again = await d.post(f"/api/v1/incidents/{inc_id}/ack", {"by": "x"})
            assert status == 200 and again["acknowledged_by"] == "sato"

            # Friday 17:32: a new fault is deferred to Tuesday 08:30.
            await d.set_clock("2026-11-20T17:32:00+09:00")
            status, late = await d.alarm(
                id="r-9", component="FAN2", code="FAN-0001", message="Fan 2 stopped"
            )
            late_inc = (await d.get(f"/api/v1/alarms/{late['seq']}"))["incident"]
            inc = await d.incident(late_inc)
            assert inc["state"] == "deferred"
            assert inc["due_at"].startswith("2026-11-24T08:30:00")
            assert inc["raised_at"] is None

            # Nothing happens over the weekend and the holiday.
            await d.set_clock("2026-11-23T12:00:00+09:00")
            assert (await d.incident(late_inc))["state"] == "deferred"
            sent_before = len(hook.received)

            # Tuesday 08:30: raised, first contact notified.
            await d.set_clock("2026-11-24T08:30:01+09:00")
            await hook.wait_for(sent_before + 1)
            inc = await d.incident(late_inc)
            assert inc["state"] in ("open", "notified")
            assert inc["raised_at"].startswith("2026-11-24T08:30:01")
            assert inc["respond_by"].startswith("2026-11-24T10:30:01")
            assert hook.received[-1]["body"]["incident"]["id"] == late_inc

            # Nobody acknowledges: Oncall at 09:00, then the list is exhausted
            # at 09:30 and the reminder round waits for the next window.
            await d.set_clock("2026-11-24T09:00:02+09:00")
            await hook.wait_for(sent_before + 2)
            assert hook.received[-1]["body"]["contact"] == "Oncall"
            await d.set_clock("2026-11-24T09:30:03+09:00")
            assert (await d.incident(late_inc))["state"] == "notified"

            # SLA: respond_by 10:30:01 passes unacknowledged → one breach.
            assert await d.metric("monitor_sla_breaches_total") == 0
            await d.set_clock("2026-11-24T10:31:00+09:00")
            assert await d.metric("monitor_sla_breaches_total") == 1
            await d.set_clock("2026-11-24T11:31:00+09:00")
            assert await d.metric("monitor_sla_breaches_total") == 1

            # Next window (Wednesday 08:30): reminder round from the first contact.
            count = len(hook.received)
            await d.set_clock("2026-11-25T08:30:05+09:00")
            await hook.wait_for(count + 1)
            last = hook.received[-1]["body"]
            assert last["kind"] == "reminder" and last["round"] == 2
            assert last["contact"] == "Sato"

            detail = await d.incident(late_inc)
            assert {n["kind"] for n in detail["notices"]} == {"raised", "reminder"}
            assert all(n["attempts"] for n in detail["notices"])
            assert await d.metric("monitor_incidents_raised_total") == 2
            assert await d.metric("monitor_alarms_duplicate_total") >= 3


async def test_window_closes_before_ack_timeout_reminds_next_window(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start="2026-11-20T17:15:00+09:00")
        async with running(cfg) as d:
            _, first = await d.alarm(id="late-1")
            inc_id = (await d.get(f"/api/v1/alarms/{first['seq']}"))["incident"]
            await hook.wait_for(1)
            # 17:45 would be Oncall's turn, but the window closed at 17:30.
            await d.set_clock("2026-11-20T17:50:00+09:00")
            await asyncio.sleep(0.2)
            assert len(hook.received) == 1
            await d.set_clock("2026-11-24T08:30:00+09:00")
            await hook.wait_for(2)
            reminder = hook.received[1]["body"]
            assert reminder["kind"] == "reminder" and reminder["contact"] == "Sato"
            assert reminder["incident"]["id"] == inc_id


async def test_notify_critical_after_hours_with_fee(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start="2026-11-20T22:10:00+09:00")
        async with running(cfg) as d:
            # major at night: deferred even on a notify-critical contract
            _, a = await d.alarm(id="n-1", serial="JPN0099999", code="DISK-1")
            inc_a = await d.incident((await d.get(f"/api/v1/alarms/{a['seq']}"))["incident"])
            assert inc_a["state"] == "deferred"
            # critical at night: raised at once, flagged, with the night fee
            _, b = await d.alarm(id="n-2", serial="JPN0099999", severity="critical")
            inc_b = await d.incident((await d.get(f"/api/v1/alarms/{b['seq']}"))["incident"])
            assert inc_b["after_hours"] is True
            assert inc_b["state"] in ("open", "notified")
            await hook.wait_for(1)
            body = hook.received[0]["body"]
            assert body["kind"] == "after-hours" and body["fee_estimate"] == 14000


async def test_coverage_clear_and_resolve(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        _, unknown = await d.alarm(id="u-1", serial="NOPE0000")
        assert (await d.get(f"/api/v1/alarms/{unknown['seq']}"))["coverage"] == "unknown-device"
        _, expired = await d.alarm(id="e-1", serial="SGH0000001")
        row = await d.get(f"/api/v1/alarms/{expired['seq']}")
        assert row["coverage"] == "expired" and row["incident"] is None
        assert await d.metric("monitor_alarms_uncovered_total") == 2

        _, a = await d.alarm(id="c-1")
        inc_id = (await d.get(f"/api/v1/alarms/{a['seq']}"))["incident"]
        await d.alarm(id="c-2", severity="clear")
        inc = await d.incident(inc_id)
        assert inc["recovered_at"] is not None
        await d.alarm(id="c-3")
        assert (await d.incident(inc_id))["recovered_at"] is None

        status, resolved = await d.post(f"/api/v1/incidents/{inc_id}/resolve", {}, role="staff")
        assert status == 200 and resolved["state"] == "resolved"
        status, _ = await d.post(f"/api/v1/incidents/{inc_id}/resolve", {})
        assert status == 409
        status, _ = await d.post(f"/api/v1/incidents/{inc_id}/ack", {})
        assert status == 409
        # the same fingerprint after resolve opens a new incident
        _, n = await d.alarm(id="c-4")
        new_id = (await d.get(f"/api/v1/alarms/{n['seq']}"))["incident"]
        assert new_id != inc_id


async def test_acknowledged_while_deferred_is_not_notified(tmp_path: Path) -> None:
    async with webhook_receiver() as hook:
        cfg = write_config(tmp_path, hook=hook.url, clock_start="2026-11-21T10:00:00+09:00")
        async with running(cfg) as d:
            _, a = await d.alarm(id="w-1")
            inc_id = (await d.get(f"/api/v1/alarms/{a['seq']}"))["incident"]
            assert (await d.incident(inc_id))["state"] == "deferred"
            status, _ = await d.post(f"/api/v1/incidents/{inc_id}/ack", {"by": "early"})
            assert status == 200
            await d.set_clock("2026-11-24T09:00:00+09:00")
            await asyncio.sleep(0.3)
            assert hook.received == []
            assert (await d.incident(inc_id))["state"] == "acknowledged"


async def test_rejections_are_quarantined(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        async with d.session.post(
            d.url + "/api/v1/alarms", data=b"{not json", headers=d.headers("agent")
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid"
        status, body = await d.post("/api/v1/alarms", {"v": 1, "id": "x"}, role="agent")
        assert status == 400 and body["error"] == "invalid"
        status, body = await d.alarm(id="s-1", serial="SIGNED0001", sig="00" * 32)
        assert status == 400 and body["error"] == "bad-signature"
        q = await d.get("/api/v1/quarantine")
        assert [i["reason"] for i in q["items"]] == ["bad-signature", "invalid", "invalid"]
        assert q["items"][2]["raw"]  # base64 of the bytes as sent
        assert await d.metric("monitor_alarms_rejected_total") == 3
        # a correctly signed report from the same device is accepted
        from monitor.formats.alarm_json import sign
        from monitor.model import AlarmReport

        rep = AlarmReport(
            id="s-2",
            serial="SIGNED0001",
            severity="major",
            code="PSU-0003",
            message="Power supply 1 failure detected",
            component="PSU1",
        )
        status, body = await d.alarm(id="s-2", serial="SIGNED0001", sig=sign(rep, "s3cret"))
        assert status == 202, body


async def test_redfish_push(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        payload = {
            "@odata.type": "#Event.v1_7_0.Event",
            "Id": "1",
            "Events": [
                {
                    "EventId": "ev-1",
                    "EventTimestamp": "2026-11-20T10:00:00+09:00",
                    "MessageId": "iLOEvents.2.3.PowerSupplyFailed",
                    "MessageSeverity": "Critical",
                    "Message": "Power supply 2 failed",
                    "OriginOfCondition": {
                        "@odata.id": "/redfish/v1/Chassis/1/Power#/PowerSupplies/2"
                    },
                },
                {"EventId": "ev-2", "MessageId": "x", "MessageSeverity": "Bogus"},
            ],
        }
        status, body = await d.post("/api/v1/redfish/JPN0012345", payload, role="agent")
        assert status == 202
        assert body["items"][0]["duplicate"] is False and "seq" in body["items"][0]
        assert "error" in body["items"][1]
        row = await d.get(f"/api/v1/alarms/{body['items'][0]['seq']}")
        assert row["code"] == "PowerSupplyFailed" and row["severity"] == "critical"
        assert row["format"] == "redfish"
