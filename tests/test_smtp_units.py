"""The SMTP listener's pure parts: the per-peer token bucket, password
checks, reply-text cleaning."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from aiosmtpd.smtp import SMTP, LoginPassword, Session

from monitor.listeners import smtp
from monitor.listeners.smtp_auth import Authenticator, check_password
from monitor.listeners.smtp_limits import PRUNE_AT, PeerRateLimit
from monitor.model import SmtpUser


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_the_rate_and_refuses_beyond() -> None:
    clock = FakeClock()
    limit = PeerRateLimit(2.0, now=clock)  # burst: one second's worth
    assert [limit.take("a") for _ in range(3)] == [True, True, False]
    assert limit.take("b")  # per peer
    assert limit.retry_after("a") == pytest.approx(0.5)
    clock.t += 0.5
    assert limit.take("a") and not limit.take("a")
    # Sending evenly at the rate is never refused.
    for _ in range(100):
        clock.t += 0.5
        assert limit.take("a")


def test_slow_rates_have_a_burst_of_one() -> None:
    clock = FakeClock()
    limit = PeerRateLimit(1 / 3600, now=clock)
    assert limit.take("a") and not limit.take("a")
    clock.t += 3599
    assert not limit.take("a")
    clock.t += 2
    assert limit.take("a")


def test_full_buckets_are_pruned() -> None:
    clock = FakeClock()
    limit = PeerRateLimit(10.0, now=clock)
    for i in range(PRUNE_AT):
        limit.take(f"10.0.{i // 256}.{i % 256}")
    clock.t += 10  # all refilled
    limit.take("late")
    assert len(limit) <= 2  # only the latest entries survive the prune


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PeerRateLimit(0)


def digest(pw: str) -> str:
    return hashlib.sha256(pw.encode()).hexdigest()


def test_check_password() -> None:
    users = {"agent": digest("pw")}
    assert check_password(users, "agent", b"pw")
    assert not check_password(users, "agent", b"pw ")
    assert not check_password(users, "nobody", b"pw")
    assert not check_password({}, "agent", b"")


def test_authenticator_follows_the_current_users() -> None:
    current: list[tuple[SmtpUser, ...]] = [(SmtpUser("agent", digest("one").upper()),)]
    auth = Authenticator(lambda: current[0])
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = ("127.0.0.1", 1)  # type: ignore[assignment]

    def login(name: str, pw: str) -> bool:
        result = auth(None, session, None, "PLAIN", LoginPassword(name.encode(), pw.encode()))  # type: ignore[arg-type]
        return bool(result.success)

    assert login("agent", "one")  # hex digests compare case-insensitively
    assert not login("agent", "two")
    current[0] = (SmtpUser("agent", digest("two")),)  # a SIGHUP
    assert login("agent", "two") and not login("agent", "one")
    assert not auth(None, session, None, "X", object()).success  # type: ignore[arg-type]


def test_reply_text_is_ascii() -> None:
    assert smtp._ascii("subject '週報'\t") == "subject '??'?"
    assert len(smtp._ascii("x" * 1000)) == 200


def test_peer_formats() -> None:
    session = Session(loop=None)  # type: ignore[arg-type]
    session.peer = ("::1", 25, 0, 0)  # type: ignore[assignment]
    assert smtp._peer(session) == "[::1]:25"
    assert smtp._ip(session) == "::1"
    session.peer = ("127.0.0.1", 2525)  # type: ignore[assignment]
    assert smtp._peer(session) == "127.0.0.1:2525"
    assert smtp._peer(None) == ""


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.c>",
        "<agent@db01.example.jp> SIZE=100 BODY=8BITMIME",
        "<A.B-c+d@X-Y.example>  ",
        "<>",
        "<a..b@c>",
        '<"a b"@c>',
        "<a@[1.2.3.4]>",
        "< a@b >",
        "<a@b",
        "<@x,@y:a@b>",
        "<a@b.>",
        "<a@b.c>SIZE=1",
        "<ユーザー@example.jp>",
        "a@b.c",
        "",
    ],
)
def test_fast_address_parse_agrees_with_aiosmtpd(arg: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        ours = smtp._Session(None, object(), hostname="x", loop=loop)  # type: ignore[arg-type]
        theirs = SMTP(object(), hostname="x", loop=loop)
        assert ours._getaddr(arg) == theirs._getaddr(arg)
    finally:
        loop.close()
