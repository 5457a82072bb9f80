"""The silent-agent decisions (monitor.heartbeats), as tables; no I/O."""

from __future__ import annotations

import pytest

from monitor import heartbeats as hb
from monitor.heartbeats import Agent, deadline, on_heartbeat, on_status, on_tick
from monitor.model import Device

T0 = 1_795_000_000.0  # some daemon-clock instant
S = "JPN0012345"


def test_first_heartbeat_starts_watching() -> None:
    agent, change = on_heartbeat(None, S, T0, 60)
    assert change is None
    assert agent == Agent(S, last_seen=T0, interval=60)
    assert deadline(agent, allowance_start=T0 - 1000) == T0 + 180


@pytest.mark.parametrize(
    ("allowance", "now", "silent_at"),
    [
        (T0 - 1, T0 + 179.9, None),  # not yet
        (T0 - 1, T0 + 180, T0 + 180),  # exactly three intervals
        (T0 - 1, T0 + 5000, T0 + 180),  # a clock jump: silent since the deadline
        (T0 + 100, T0 + 250, None),  # the link came back at +100: fresh allowance
        (T0 + 100, T0 + 280, T0 + 280),
    ],
)
def test_overdue_after_three_intervals(
    allowance: float, now: float, silent_at: float | None
) -> None:
    agent = Agent(S, last_seen=T0, interval=60, status="online")
    after, change = on_tick(agent, now, allowance)
    if silent_at is None:
        assert change is None and after is agent
        return
    assert change is not None
    assert (change.kind, change.at, change.format) == ("silent", silent_at, "heartbeat")
    assert after.silent_since == silent_at and after.status == "online"
    assert "3 intervals of 60 s" in change.message
    # Silent agents are not watched again until they come back.
    assert deadline(after, allowance) is None
    assert on_tick(after, now + 10_000, allowance) == (after, None)


def test_heartbeat_after_silence_is_back() -> None:
    silent = Agent(S, last_seen=T0, interval=60, silent_since=T0 + 180)
    after, change = on_heartbeat(silent, S, T0 + 500, 30)
    assert change is not None and (change.kind, change.at) == ("back", T0 + 500)
    assert after == Agent(S, last_seen=T0 + 500, interval=30)


def test_status_changes_only_count_once() -> None:
    agent, change = on_status(None, S, T0, online=True)
    assert change is None and agent.status == "online" and agent.last_seen == T0

    off, change = on_status(agent, S, T0 + 5, online=False)
    assert change is not None and (change.kind, change.at, change.format) == (
        "silent",
        T0 + 5,
        "status",
    )
    assert off.silent_since == T0 + 5

    # The retained `offline` replayed on a resubscribe: same as stored, nothing.
    again, change = on_status(off, S, T0 + 50, online=False)
    assert again is off and change is None

    on, change = on_status(off, S, T0 + 60, online=True)
    assert change is not None and change.kind == "back" and change.format == "status"
    assert on.silent_since is None and on.last_seen == T0 + 60
    same, change = on_status(on, S, T0 + 70, online=True)
    assert same is on and change is None


def test_retained_offline_of_unknown_agent_raises() -> None:
    # Nothing stored (a fresh database): the replayed will is news.
    agent, change = on_status(None, S, T0, online=False)
    assert change is not None and change.kind == "silent" and agent.silent


def test_offline_while_already_silent_is_no_second_alarm() -> None:
    silent = Agent(S, last_seen=T0, interval=60, status="online", silent_since=T0 + 180)
    after, change = on_status(silent, S, T0 + 400, online=False)
    assert change is None
    assert after.status == "offline" and after.silent_since == T0 + 180


def test_heartbeat_clears_offline_silence_but_keeps_status() -> None:
    off = Agent(S, status="offline", silent_since=T0)
    after, change = on_heartbeat(off, S, T0 + 10, 60)
    assert change is not None and change.kind == "back"
    assert after.status == "offline" and not after.silent
    # ...so the retained `offline` replayed later is still no change.
    assert on_status(after, S, T0 + 20, online=False) == (after, None)


def test_no_interval_no_deadline() -> None:
    agent = Agent(S, last_seen=T0, status="online")
    assert deadline(agent, T0) is None
    assert on_tick(agent, T0 + 10**9, T0) == (agent, None)


def test_reports_are_stable_and_shaped_like_spec() -> None:
    device = Device(S, "N8100-2801", "db01", "C-0001")
    at = 1_795_000_000.5
    silent = hb.report_for(S, "silent", at, "Agent silent", device)
    assert silent.id == "agent-silent:JPN0012345:2026-11-18T11:06:40.500+00:00"
    assert (silent.component, silent.code, silent.severity) == ("agent", "AGENT-SILENT", "major")
    assert (silent.model, silent.host) == ("N8100-2801", "db01")
    assert silent.occurred is not None and silent.occurred.timestamp() == at
    back = hb.report_for(S, "back", at + 60, "Agent back", None)
    assert back.id.startswith("agent-back:JPN0012345:")
    assert (back.component, back.code, back.severity) == ("agent", "AGENT-SILENT", "clear")
    # Same inputs, same id: a re-send after a crash is an exact duplicate.
    assert hb.report_for(S, "silent", at, "x", None).id == silent.id


# -- `[mqtt] offline_grace`: flap damping for status `offline` -------------------------

G = 60.0  # the grace, seconds
ONLINE = Agent(S, last_seen=T0, interval=600, status="online")  # heartbeat due at T0 + 1800


def test_offline_with_grace_is_pending_not_silent() -> None:
    off, change = on_status(ONLINE, S, T0 + 5, online=False, grace=G)
    assert change is None
    assert off == Agent(S, last_seen=T0, interval=600, status="offline", offline_since=T0 + 5)
    assert not off.silent and off.pending_offline == T0 + 5
    # last_seen is untouched: the heartbeat deadline runs on, the grace ends first.
    assert deadline(off, allowance_start=T0 - 1, grace=G) == T0 + 65
    # The retained `offline` replayed (a resubscribe, another instance): nothing,
    # and the grace still counts from the first arrival.
    assert on_status(off, S, T0 + 30, online=False, grace=G) == (off, None)


@pytest.mark.parametrize("back", ["online", "heartbeat"])
def test_online_or_heartbeat_within_grace_cancels_silently(back: str) -> None:
    off, _ = on_status(ONLINE, S, T0 + 5, online=False, grace=G)
    if back == "online":
        after, change = on_status(off, S, T0 + 15, online=True, grace=G)
        assert after.status == "online" and after.last_seen == T0 + 15
    else:
        after, change = on_heartbeat(off, S, T0 + 15, 600)
        # The status stays (as without grace): a replayed `offline` is no change.
        assert after.status == "offline"
        assert on_status(after, S, T0 + 20, online=False, grace=G) == (after, None)
    assert change is None  # nothing was announced, nothing to clear
    assert after.offline_since is None and after.pending_offline is None and not after.silent
    assert deadline(after, T0 - 1, G) == T0 + 15 + 1800
    assert on_tick(after, T0 + 5 + G, T0 - 1, G) == (after, None)


@pytest.mark.parametrize(
    ("allowance", "now", "silent"),
    [
        (T0 - 1, T0 + 64.9, False),  # not yet
        (T0 - 1, T0 + 65, True),  # the grace is over
        (T0 - 1, T0 + 1000, True),  # a clock jump: silent since the arrival all the same
        (T0 + 50, T0 + 100, False),  # our link came up at +50: not before +110
        (T0 + 50, T0 + 110, True),
    ],
)
def test_offline_still_there_after_grace_is_silent_since_arrival(
    allowance: float, now: float, silent: bool
) -> None:
    off, _ = on_status(ONLINE, S, T0 + 5, online=False, grace=G)
    assert deadline(off, allowance, G) == max(T0 + 5, allowance) + G
    after, change = on_tick(off, now, allowance, G)
    if not silent:
        assert (after, change) == (off, None)
        return
    assert change is not None
    assert (change.kind, change.at, change.format) == ("silent", T0 + 5, "status")
    assert "not back within 60 s" in change.message
    assert after.silent_since == T0 + 5 and after.offline_since is None
    assert after.status == "offline"
    assert hb.report_id(S, change.kind, change.at) == hb.report_id(S, "silent", T0 + 5)
    # Silent: decided once, no deadline until it comes back; `online` clears.
    assert deadline(after, allowance, G) is None
    assert on_tick(after, now + 10_000, allowance, G) == (after, None)
    back, clear = on_status(after, S, now + 1, online=True, grace=G)
    assert clear is not None and (clear.kind, clear.at) == ("back", now + 1)
    assert not back.silent


def test_heartbeat_deadline_before_end_of_grace_decides_as_usual() -> None:
    agent = Agent(S, last_seen=T0, interval=10, status="online")  # heartbeat due T0 + 30
    off, _ = on_status(agent, S, T0 + 5, online=False, grace=G)
    assert deadline(off, T0 - 1, G) == T0 + 30
    after, change = on_tick(off, T0 + 100, T0 - 1, G)  # both passed: the earlier decides
    assert change is not None and (change.at, change.format) == (T0 + 30, "heartbeat")
    assert after.silent_since == T0 + 30 and after.offline_since is None


def test_offline_of_unknown_agent_with_grace_waits_too() -> None:
    agent, change = on_status(None, S, T0, online=False, grace=G)
    assert change is None and agent == Agent(S, status="offline", offline_since=T0)
    assert deadline(agent, T0 - 1, G) == T0 + G
    after, change = on_tick(agent, T0 + G, T0 - 1, G)
    assert change is not None and change.at == T0 and after.silent


def test_offline_while_silent_with_grace_is_no_pending() -> None:
    silent = Agent(S, last_seen=T0, interval=60, status="online", silent_since=T0 + 180)
    after, change = on_status(silent, S, T0 + 400, online=False, grace=G)
    assert change is None and after.silent_since == T0 + 180 and after.offline_since is None


def test_grace_zero_is_at_once_as_without() -> None:
    off, change = on_status(ONLINE, S, T0 + 5, online=False, grace=0.0)
    assert change is not None and (change.kind, change.at) == ("silent", T0 + 5)
    assert off.silent_since == T0 + 5 and off.offline_since is None
    assert (off, change) == on_status(ONLINE, S, T0 + 5, online=False)
    assert deadline(ONLINE, T0, 0.0) == deadline(ONLINE, T0) == T0 + 1800


def test_pending_offline_left_by_a_larger_grace_is_decided_with_the_current_one() -> None:
    # Stored under offline_grace = "60s", the daemon restarted with "0s".
    pending = Agent(S, status="offline", offline_since=T0)
    assert deadline(pending, T0 + 10, 0.0) == T0 + 10
    after, change = on_tick(pending, T0 + 10, T0 + 10, 0.0)
    assert change is not None and change.at == T0 and after.silent_since == T0


def test_stale_offline_since_under_status_online_is_ignored() -> None:
    # A row an older daemon (without this column) changed to `online`.
    stale = Agent(S, status="online", offline_since=T0)
    assert stale.pending_offline is None and deadline(stale, T0, G) is None
    assert on_tick(stale, T0 + 10**6, T0, G) == (stale, None)
