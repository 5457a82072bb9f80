"""Webhook transport against a real aiohttp receiver on a free port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor.notify.errors import TransportError
from monitor.notify.keys import idempotency_key
from monitor.notify.render import NoticeContent, webhook_payload
from monitor.notify.webhook import classify_status, send_webhook


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint that records every request and answers `status`."""

    url: str = ""
    status: int = 200
    reply: str = "ok"
    hang: bool = False  # hold the answer until the test ends (timeouts)
    seen: list[Seen] = field(default_factory=list)
    processed_keys: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        if self.hang:
            await self.release.wait()
        if 300 <= self.status < 400:
            return web.Response(status=self.status, headers={"Location": "/moved"})
        # What a receiver is expected to do (docs/notices.md): act once per key.
        key = request.headers.get("Idempotency-Key", "")
        if 200 <= self.status < 300 and key not in self.processed_keys:
            self.processed_keys.append(key)
        return web.Response(status=self.status, text=self.reply)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hooks/oncall"
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def a_notice(**over: Any) -> NoticeContent:
    inc = {
        "id": 42,
        "contract": "C-0001",
        "device": "JPN0012345",
        "component": "PSU",
        "code": "PSU0003",
        "severity": "critical",
        "state": "open",
        "title": "電源ユニット2の障害",
    }
    fields: dict[str, Any] = {
        "kind": "raised",
        "incident": inc,
        "contract_id": "C-0001",
        "customer": "Example Corp",
        "contact": "Oncall",
        "attempt": 1,
        "round": 1,
        "fee_estimate": None,
        "plan": "express-24x7",
    }
    fields.update(over)
    return NoticeContent(**fields)


KEY = idempotency_key(42, 1, "raised", "critical", "Oncall")


async def test_posts_json_with_the_idempotency_key(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    payload = webhook_payload(a_notice())
    await send_webhook(session, receiver.url, payload, KEY)

    [seen] = receiver.seen
    assert seen.method == "POST" and seen.path == "/hooks/oncall"
    assert seen.headers["Idempotency-Key"] == KEY
    assert seen.headers["Content-Type"] == "application/json"
    assert json.loads(seen.body) == payload
    # UTF-8 on the wire, not \u escapes: receivers' logs stay readable.
    assert "電源ユニット2の障害".encode() in seen.body


async def test_a_resend_carries_the_same_key_and_is_dropped_by_the_receiver(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    await send_webhook(session, receiver.url, webhook_payload(a_notice(attempt=1)), KEY)
    await send_webhook(session, receiver.url, webhook_payload(a_notice(attempt=2)), KEY)
    assert [s.headers["Idempotency-Key"] for s in receiver.seen] == [KEY, KEY]
    assert [json.loads(s.body)["attempt"] for s in receiver.seen] == [1, 2]
    assert receiver.processed_keys == [KEY]


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_success(
    receiver: Receiver, session: aiohttp.ClientSession, status: int
) -> None:
    receiver.status = status
    await send_webhook(session, receiver.url, {"kind": "raised"}, KEY)
    assert len(receiver.seen) == 1


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (401, True),
        (403, True),
        (404, True),
        (410, True),
        (422, True),
        (408, False),
        (429, False),
        (500, False),
        (502, False),
        (503, False),
        (504, False),
    ],
)
async def test_failures_are_classified(
    receiver: Receiver, session: aiohttp.ClientSession, status: int, permanent: bool
) -> None:
    receiver.status = status
    receiver.reply = "reason from the receiver"
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, receiver.url, {"kind": "raised"}, KEY)
    assert caught.value.permanent is permanent
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert "reason from the receiver" in str(caught.value)


async def test_redirects_are_not_followed(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    receiver.status = 302
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, receiver.url, {"kind": "raised"}, KEY)
    assert caught.value.permanent and caught.value.status == 302
    assert [s.path for s in receiver.seen] == ["/hooks/oncall"]


async def test_connection_refused_is_temporary(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, f"http://127.0.0.1:{port}/hook", {"kind": "raised"}, KEY)
    assert caught.value.permanent is False
    assert caught.value.status is None


async def test_timeout_is_temporary(receiver: Receiver, session: aiohttp.ClientSession) -> None:
    receiver.hang = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, receiver.url, {"kind": "raised"}, KEY, timeout=0.3)
    assert caught.value.permanent is False
    assert "0.3s" in str(caught.value)
    assert loop.time() - started < 5


@pytest.mark.parametrize("url", ["not a url", "ftp://hooks.example/x", "http://"])
async def test_unusable_url_is_permanent(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, url, {"kind": "raised"}, KEY)
    assert caught.value.permanent is True


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, None), (299, None), (100, True), (301, True), (499, True), (429, False), (599, False)],
)
def test_classify_status(status: int, expected: bool | None) -> None:
    assert classify_status(status) is expected


async def test_errors_do_not_leak_the_secret_path(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    receiver.status = 404
    url = receiver.url.replace("/hooks/oncall", "/services/T000/B000/s3cr3t-token")
    with pytest.raises(TransportError) as caught:
        await send_webhook(session, url, {"kind": "raised"}, KEY)
    assert "s3cr3t" not in str(caught.value)
    assert url.split("/services")[0] in str(caught.value)
