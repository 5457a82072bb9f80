"""E-mail notices through a real SMTP receiver; the CLI against the running
daemon; the contracts API and the hours endpoint."""

from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.daemon import running, webhook_receiver, write_config
from tests.support.ports import free_port


class Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (
                envelope.rcpt_tos,
                email.message_from_bytes(envelope.content, policy=email.policy.default),
            )
        )
        return "250 OK"


async def test_email_notice_with_subject_and_reply_to(tmp_path: Path) -> None:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        extra = f"""
[notify]
smtp = "127.0.0.1:{port}"
from = "monitor@center.example"

[smtp]
listen = "127.0.0.1:{free_port()}"
accept = ["alarms@monitor.example"]
"""
        cfg = write_config(tmp_path, extra=extra, clock_start="2026-11-20T10:00:00+09:00")
        text = cfg.read_text().replace(
            '{ name = "Sato", webhook', '{ name = "Sato", email = "sato@example.jp", webhook'
        )
        cfg.write_text(text)
        async with webhook_receiver() as hook:
            cfg.write_text(text.replace("http://127.0.0.1:9", hook.url))
            async with running(cfg) as d:
                await d.alarm(id="m-1", severity="critical")
                for _ in range(200):
                    if sink.messages and hook.received:
                        break
                    await asyncio.sleep(0.05)
                # a contact with both transports gets both, with the same key
                assert len(sink.messages) == 1 and len(hook.by("sato")) == 1
                rcpt, msg = sink.messages[0]
                assert rcpt == ["sato@example.jp"]
                assert msg["Subject"] == "[INC-1] critical C-0001 JPN0012345 PSU-0003"
                assert msg["Reply-To"] == "alarms@monitor.example"
                assert msg["X-Idempotency-Key"] == hook.by("sato")[0]["key"]
                body = msg.get_content()
                assert "障害" in body and "INC-1" in body
                inc = await d.incident(1)
                assert {n["transport"] for n in inc["notices"]} == {"email", "webhook"}
                assert all(n["status"] == "delivered" for n in inc["notices"])
    finally:
        controller.stop()


async def test_email_transport_failure_retries_and_is_recorded(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here
    extra = f"""
[notify]
smtp = "127.0.0.1:{dead}"
from = "monitor@center.example"
max_backoff = "1s"
"""
    cfg = write_config(tmp_path, extra=extra, clock_start="2026-11-20T10:00:00+09:00")
    cfg.write_text(
        cfg.read_text().replace(
            '{ name = "Sato", webhook = "http://127.0.0.1:9/sato" }',
            '{ name = "Sato", email = "sato@example.jp" }',
        )
    )
    async with running(cfg) as d:
        await d.alarm(id="f-1")
        for _ in range(200):
            notices = (await d.incident(1))["notices"]
            if notices and len(notices[0]["attempts"]) >= 2:
                break
            await asyncio.sleep(0.05)
        notice = notices[0]
        assert notice["status"] == "pending" and notice["transport"] == "email"
        assert [a["outcome"] for a in notice["attempts"][:2]] == ["retry", "retry"]
        assert "refused" in (notice["last_error"] or "").lower() or notice["last_error"]
        assert (await d.incident(1))["state"] == "open"
        assert await d.metric('monitor_notices_total{outcome="retry",transport="email"}') >= 2


def _cli(cfg: Path, *args: str, token: str = "t-staff") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args, "-c", str(cfg), "--token", token],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_cli_lists_acks_and_resolves_through_the_api(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T10:00:00+09:00")
    async with running(cfg) as d:
        await d.alarm(id="cli-1")
        res = await asyncio.to_thread(_cli, cfg, "incidents")
        assert res.returncode == 0 and "INC-1" in res.stdout and "PSU-0003" in res.stdout
        res = await asyncio.to_thread(_cli, cfg, "ack", "INC-1", "--by", "sato")
        assert res.returncode == 0 and "acknowledged" in res.stdout
        res = await asyncio.to_thread(_cli, cfg, "resolve", "1")
        assert res.returncode == 0 and "resolved" in res.stdout
        res = await asyncio.to_thread(_cli, cfg, "resolve", "1")
        assert res.returncode == 1 and "409" in res.stderr and "Traceback" not in res.stderr
        res = await asyncio.to_thread(_cli, cfg, "ack", "1", token="t-agent")
        assert res.returncode == 1 and "403" in res.stderr
        res = await asyncio.to_thread(_cli, cfg, "incidents", "--json")
        assert res.returncode == 0 and '"state": "resolved"' in res.stdout


async def test_contracts_and_hours_api(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, clock_start="2026-11-20T16:30:00+09:00")
    async with running(cfg) as d:
        items = (await d.get("/api/v1/contracts"))["items"]
        assert [c["id"] for c in items] == ["C-0001", "C-0002", "C-0003"]
        c1 = items[0]
        assert c1["in_hours"] is True and c1["next_start"].startswith("2026-11-24T08:30:00")
        hours = await d.get("/api/v1/contracts/C-0001/hours?at=2026-11-20T17:45:00%2B09:00&next=3")
        assert hours["in_hours"] is False and hours["window"] is None
        assert [w["start"][:16] for w in hours["next"]] == [
            "2026-11-24T08:30",
            "2026-11-25T08:30",
            "2026-11-26T08:30",
        ]
        now = await d.get("/api/v1/contracts/C-0001/hours")  # at defaults to the daemon clock
        assert now["in_hours"] is True and now["window"]["end"].startswith("2026-11-20T17:30")
        # customers see only their own contract; others are 404
        mine = (await d.get("/api/v1/contracts", role="customer"))["items"]
        assert [c["id"] for c in mine] == ["C-0002"]
        async with d.session.get(
            d.url + "/api/v1/contracts/C-0001/hours", headers=d.headers("customer")
        ) as resp:
            assert resp.status == 404
