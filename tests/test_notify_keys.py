"""Idempotency keys and retry back-off: stable, unambiguous, bounded."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.notify.errors import TransportError, backoff
from monitor.notify.keys import idempotency_key

KEY_RE = re.compile(r"^inc-[1-9][0-9]*-[0-9a-f]{32}$")


def test_golden_value() -> None:
    # Pinned on purpose: if this changes, every notice resent after an
    # upgrade looks new to receivers.  Change only with a migration note.
    # = first 32 hex of sha256('[42,1,"raised","critical","Sato"]').
    assert idempotency_key(42, 1, "raised", "critical", "Sato") == (
        "inc-42-7e73edf47cc63e0f37b90fb44cba369f"
    )


def test_format_is_header_and_message_id_safe() -> None:
    key = idempotency_key(7, 3, "reminder", "major", "佐藤 <sato@example.jp>\r\n")
    assert KEY_RE.match(key), key


def test_same_in_another_process_with_another_hash_seed() -> None:
    # The property the whole scheme rests on: a restarted daemon (new
    # process, new str-hash salt) derives the same key.
    code = (
        "from monitor.notify.keys import idempotency_key as k;"
        "print(k(9, 2, 'escalated', 'critical', '佐藤'))"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout.strip())
    assert outputs == {idempotency_key(9, 2, "escalated", "critical", "佐藤")}


@pytest.mark.parametrize(
    "args",
    [
        (43, 1, "raised", "critical", "Sato"),
        (42, 2, "raised", "critical", "Sato"),
        (42, 1, "reminder", "critical", "Sato"),
        (42, 1, "raised", "major", "Sato"),
        (42, 1, "raised", "critical", "Suzuki"),
    ],
)
def test_every_field_matters(args: tuple[int, int, str, str, str]) -> None:
    assert idempotency_key(*args) != idempotency_key(42, 1, "raised", "critical", "Sato")


def test_field_boundaries_do_not_collide() -> None:
    # With a naive "|".join these two would be the same string.
    a = idempotency_key(1, 1, "raised", "critical|x", "y")
    b = idempotency_key(1, 1, "raised", "critical", "x|y")
    assert a != b


@pytest.mark.parametrize("bad", [0, -1, True])
def test_incident_id_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError):
        idempotency_key(bad, 1, "raised", "critical", "Sato")


@given(
    st.integers(min_value=1, max_value=2**53),
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from(["raised", "after-hours", "reminder", "escalated"]),
    st.text(max_size=20),
    st.text(max_size=40),
)
def test_key_always_well_formed(inc: int, rnd: int, kind: str, sev: str, contact: str) -> None:
    key = idempotency_key(inc, rnd, kind, sev, contact)
    assert KEY_RE.match(key)
    assert key.startswith(f"inc-{inc}-")
    assert key == idempotency_key(inc, rnd, kind, sev, contact)


# --- backoff -----------------------------------------------------------------


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff(n, 600.0, rng=random.Random(7)) for n in range(1, 12)]
    again = [backoff(n, 600.0, rng=random.Random(7)) for n in range(1, 12)]
    assert first == again


def test_backoff_ceiling_doubles_then_caps() -> None:
    # Sample the ceiling: with many draws the maximum approaches it.
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (10, 60.0), (50, 60.0)]:
        draws = [backoff(attempt, 60.0, rng=rng) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.95
        # Full jitter: small delays happen too, so clients spread out.
        assert min(draws) < ceiling * 0.05


def test_backoff_base_scales() -> None:
    rng = random.Random(3)
    assert all(backoff(3, 1000.0, base=0.5, rng=rng) <= 2.0 for _ in range(500))


def test_backoff_never_overflows() -> None:
    assert 0.0 <= backoff(100_000, 600.0) <= 600.0


def test_backoff_zero_cap_means_immediate() -> None:
    assert backoff(5, 0.0) == 0.0


@pytest.mark.parametrize(("attempt", "cap", "base"), [(0, 10.0, 1.0), (1, -1.0, 1.0), (1, 1, -1)])
def test_backoff_rejects_nonsense(attempt: int, cap: float, base: float) -> None:
    with pytest.raises(ValueError):
        backoff(attempt, cap, base)


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0, max_value=86_400))
def test_backoff_bounded(attempt: int, cap: float) -> None:
    assert 0.0 <= backoff(attempt, cap) <= cap


def test_transport_error_carries_its_verdict() -> None:
    err = TransportError("nope", True, status=404)
    assert (err.message, err.permanent, err.status, str(err)) == ("nope", True, 404, "nope")
    assert "permanent=True" in repr(err)
    assert TransportError("later", permanent=False).status is None
