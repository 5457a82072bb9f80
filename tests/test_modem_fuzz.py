"""Property tests: line noise never breaks the modem (SPEC 3.5, DESIGN rule 5)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.frames import MAX_PAYLOAD, encode_frame
from monitor.modem import (
    MAX_IN_FLIGHT,
    MAX_LEGACY,
    MAX_LINE,
    Action,
    CallEnded,
    CallStarted,
    FrameReceived,
    FrameRejected,
    LegacyText,
    ModemEngine,
    ModemSettings,
    Write,
)

IDENT = b"fuzz modem"
IDS = ["r-1", "b2f0c6e1", "製造-9"]
REPORT = b'{"v":1,"id":"r-1","serial":"S","severity":"info","code":"C","message":"m"}'

_RESULT = rb"(?:OK|CONNECT(?: \d+)?|RING|NO CARRIER|ERROR|NO DIALTONE|BUSY|NO ANSWER)"
# S3/S4 may be changed by the fuzzer, so the framing characters are captured.
VERBOSE = re.compile(rb"(.)(.)" + _RESULT + rb"\1\2\Z", re.S)
NUMERIC = re.compile(rb"\d{1,2}.\Z", re.S)
INFO = re.compile(rb"(?:..)?(?:" + re.escape(IDENT) + rb"|\d{3})..\Z", re.S)
ACK = re.compile(rb"\x06[^\x00-\x1f\x7f]*\r\Z")
NAK = re.compile(rb"\x15(?:crc|too-long|invalid|bad-signature|busy)\r\Z")

# Pieces that steer random input into the interesting corners.
COMMAND_TOKENS = [
    b"AT", b"at", b"ATDT", b"ATD", b"0120223042", b"999", b"\r", b"\n", b";", b"A/",
    b"E0", b"E1", b"V0", b"V1", b"Q1", b"Q0", b"X0", b"I", b"S12=0", b"S12=5", b"S3=10",
    b"S4=0", b"S5=43", b"S2=200", b"S7?", b"H", b"O", b"Z", b"&F", b"&C1", b" ", b"\x08",
]  # fmt: skip
GOOD = encode_frame(REPORT)
DATA_TOKENS = [
    GOOD,
    GOOD,
    GOOD[:9],
    GOOD[9:],
    GOOD[:-3] + b"00\r",  # bad CRC
    GOOD[:-2] + b"\n",  # malformed trailer
    encode_frame(b"123456789"),
    b"\x02" + b"y" * 5000,
    b"\x02",
    b"\x03",
    b"\x04",
    b"29B1",
    b"+",
    b"+++",
    b"+++",
    b"legacy text ",
    b"\xff\xfe\x80",
    b"ATO\r",
    b"ATH\r",
    b"ATE0DT0120223042\r",
    b"ATS12=0\r",
]

chunks = st.one_of(
    st.lists(st.sampled_from(COMMAND_TOKENS + DATA_TOKENS), max_size=8).map(b"".join),
    st.lists(st.sampled_from(DATA_TOKENS), min_size=1, max_size=3).map(b"".join),
    st.binary(max_size=64),
)
steps = st.one_of(
    st.floats(min_value=0, max_value=2, allow_nan=False),
    st.sampled_from([0.0, 0.0, 0.01, 1.0, 1.5, 1.5, 61.0]),
)
ops = st.one_of(
    st.tuples(st.just("feed"), chunks, steps),
    st.tuples(st.just("feed"), chunks, steps),
    st.tuples(st.just("tick"), st.just(b""), steps),
    st.tuples(st.just("answer"), st.sampled_from([b"ack", b"nak"]), steps),
    st.tuples(st.just("dtr"), st.just(b""), steps),
    st.tuples(st.just("hangup"), st.just(b""), steps),
)

MEMORY_BOUND = 2 * MAX_LINE + MAX_LEGACY + MAX_PAYLOAD + 16 + MAX_IN_FLIGHT * 64


@dataclass
class Checker:
    """Checks every action the engine emits against the protocol."""

    in_call: bool = False
    tokens: list[int] = field(default_factory=list)

    def check(self, actions: list[Action], fed: bytes) -> None:
        for action in actions:
            if isinstance(action, Write):
                self.check_write(action, fed)
            elif isinstance(action, CallStarted):
                assert not self.in_call
                self.in_call = True
            elif isinstance(action, CallEnded):
                assert self.in_call
                self.in_call = False
                self.tokens.clear()
            elif isinstance(action, FrameReceived):
                assert self.in_call
                assert len(action.payload) <= MAX_PAYLOAD
                self.tokens.append(action.token)
            elif isinstance(action, FrameRejected):
                assert action.reason in ("crc", "too-long", "truncated", "overrun")
                assert len(action.raw) <= MAX_PAYLOAD + 7
            elif isinstance(action, LegacyText):
                assert 0 < len(action.text) <= MAX_LEGACY and action.text.strip()

    @staticmethod
    def check_write(write: Write, fed: bytes) -> None:
        data = write.data
        assert data
        if write.kind == "echo":
            assert data in fed  # an echo only ever repeats what was typed
        elif write.kind == "result":
            assert VERBOSE.match(data) or NUMERIC.match(data), data
        elif write.kind == "info":
            assert INFO.match(data), data
        else:
            assert ACK.match(data) or NAK.match(data), data


def run_ops(modem: ModemEngine, script: list[tuple[str, bytes, float]], checker: Checker) -> None:
    now = 1000.0
    answered = 0
    for op, arg, dt in script:
        now += dt
        fed = b""
        if op == "feed":
            fed = arg
            actions = modem.feed(arg, now)
        elif op == "tick":
            actions = modem.tick(now)
        elif op == "dtr":
            actions = modem.dtr_dropped(now)
        elif op == "hangup":
            actions = modem.hangup(now)
        elif checker.tokens:
            # Answer out of order too: the engine must still write in order.
            token = checker.tokens.pop(answered % len(checker.tokens))
            answered += 1
            if arg == b"ack":
                actions = modem.report_result(token, IDS[answered % len(IDS)], None, now)
            else:
                actions = modem.report_result(token, None, "busy", now)
        else:
            actions = modem.report_result(99_999, "stale", None, now)  # unknown: ignored
        checker.check(actions, fed)
        assert modem.buffered_bytes <= MEMORY_BOUND
        # Whatever was due at `now` has run, so the next deadline is not in the past.
        deadline = modem.next_deadline()
        assert deadline is None or deadline >= now
        assert (modem.state != "command") == checker.in_call


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_never_raises_and_every_write_is_well_formed(
    script: list[tuple[str, bytes, float]],
) -> None:
    modem = ModemEngine(ModemSettings(numbers=("0120223042",), identity=IDENT.decode()))
    run_ops(modem, script, Checker())


@settings(max_examples=150, deadline=None)
@given(st.lists(ops, max_size=30))
def test_noise_during_a_call(script: list[tuple[str, bytes, float]]) -> None:
    # Start inside a call so data mode gets most of the noise.
    modem = ModemEngine(ModemSettings(identity=IDENT.decode(), idle_timeout=30.0))
    modem.feed(b"ATE0DT1\r", 1000.0)
    run_ops(modem, script, Checker(in_call=True))


def random_script(rng: random.Random, n: int) -> list[tuple[str, bytes, float]]:
    """A long seeded walk: reaches states hypothesis' short scripts rarely do."""
    script: list[tuple[str, bytes, float]] = []
    for _ in range(n):
        if rng.random() < 0.7:
            dt = rng.choice([0.0, 0.0, 0.01, 0.3, 1.0, 1.5, 61.0])
        else:
            dt = rng.uniform(0, 3)
        r = rng.random()
        if r < 0.75:
            if rng.random() < 0.2:
                chunk = rng.randbytes(rng.randint(0, 64))
            else:
                tokens = COMMAND_TOKENS + DATA_TOKENS
                chunk = b"".join(rng.choice(tokens) for _ in range(rng.randint(1, 6)))
            script.append(("feed", chunk, dt))
        elif r < 0.87:
            script.append(("answer", rng.choice([b"ack", b"nak"]), dt))
        elif r < 0.96:
            script.append(("tick", b"", dt))
        else:
            script.append((rng.choice(["dtr", "hangup"]), b"", dt))
    return script


@pytest.mark.parametrize("seed", range(16))
def test_random_walk(seed: int) -> None:
    modem = ModemEngine(ModemSettings(numbers=("0120223042",), identity=IDENT.decode()))
    run_ops(modem, random_script(random.Random(seed), 2000), Checker())


@pytest.mark.parametrize("stx_every", [0, 100, 20_000])
def test_memory_stays_bounded_under_a_megabyte_of_noise(stx_every: int) -> None:
    rng = random.Random(stx_every)
    noise = bytearray(rng.randbytes(1 << 20))
    noise = bytearray(noise.translate(None, b"\x02\x03\x04"))  # framing only where planted
    for i in range(0, len(noise), stx_every) if stx_every else ():
        noise[i] = 0x02
    modem = ModemEngine(ModemSettings())
    modem.feed(b"ATS2=200DT1\r", 0.0)  # no escapes: all of it must stay data
    peak = 0
    for i in range(0, len(noise), 4096):
        modem.feed(bytes(noise[i : i + 4096]), 0.001 * i)
        peak = max(peak, modem.buffered_bytes)
    assert modem.state == "data"
    assert peak <= MEMORY_BOUND


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200_000).map(lambda b: b * 2), st.integers(1, 70_000))
def test_memory_stays_bounded_under_a_flood(data: bytes, size: int) -> None:
    modem = ModemEngine(ModemSettings())
    modem.feed(b"ATDT1\r", 0.0)
    for i in range(0, len(data), size):
        modem.feed(data[i : i + size], 0.01 * i)
        assert modem.buffered_bytes <= MEMORY_BOUND


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=400).map(lambda b: bytes(c for c in b if c > 4)), max_size=6),
    st.data(),
)
def test_a_clean_session_decodes_the_same_in_any_chunking(
    payloads: list[bytes], data: st.DataObject
) -> None:
    wire = b"AT&C1&D2\rATE0V1\rATDT0120223042\r"
    wire += b"".join(encode_frame(p) for p in payloads) + b"\x04"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    modem = ModemEngine(ModemSettings(numbers=("0120223042",)))
    received: list[bytes] = []
    ended: list[CallEnded] = []
    now = 0.0
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        now += 0.01  # well inside the guard time: never an escape
        for action in modem.feed(wire[a:b], now):
            if isinstance(action, FrameReceived):
                received.append(action.payload)
                modem.report_result(action.token, "x", None, now)
            elif isinstance(action, CallEnded):
                ended.append(action)
            else:
                assert not isinstance(action, FrameRejected | LegacyText), action
    assert received == payloads
    assert ended == [CallEnded("eot")]
    assert modem.state == "command"
