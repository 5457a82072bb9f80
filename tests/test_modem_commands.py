"""Command mode of the emulated modem (SPEC 3.5): table tests of lines and results."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitor.model import SerialConfig
from monitor.modem import (
    Action,
    CallEnded,
    CallStarted,
    ModemEngine,
    ModemSettings,
    Write,
    normalize_number,
)

NUMBER = "0120223042"
IDENT = "test modem 1.0"
OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
BUSY, NO_CARRIER = b"\r\nBUSY\r\n", b"\r\nNO CARRIER\r\n"
CONNECT = b"\r\nCONNECT 9600\r\n"


def engine(numbers: tuple[str, ...] = (NUMBER,)) -> ModemEngine:
    return ModemEngine(ModemSettings(numbers=numbers, identity=IDENT))


def written(actions: list[Action], kinds: tuple[str, ...] = ("result", "info")) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Write) and a.kind in kinds)


def run(modem: ModemEngine, *lines: bytes, now: float = 0.0) -> bytes:
    """Feed lines; return what the modem wrote for the last one (echo excluded)."""
    out = b""
    for line in lines:
        out = written(modem.feed(line, now))
    return out


# (setup lines, input, expected result/info bytes).  Echo is checked separately.
TABLE: list[tuple[tuple[bytes, ...], bytes, bytes]] = [
    ((), b"AT\r", OK),
    ((), b"at\r", OK),
    ((), b"aT\r", OK),
    ((), b"At\r", OK),
    ((), b"ATZ\r", OK),
    ((), b"ATZ0\r", OK),
    ((), b"AT&F\r", OK),
    ((), b"AT&F0\r", OK),
    ((), b"ATE0\r", OK),
    ((), b"ATE1\r", OK),
    ((), b"ATE2\r", ERROR),
    ((), b"ATV1\r", OK),
    ((), b"ATV0\r", b"0\r"),
    ((b"ATV0\r",), b"AT\r", b"0\r"),
    ((b"ATV0\r",), b"ATFOO\r", b"4\r"),
    ((b"ATV0\r",), b"ATV1\r", OK),
    ((), b"ATQ1\r", b""),
    ((b"ATQ1\r",), b"AT\r", b""),
    ((b"ATQ1\r",), b"ATBOGUS\r", b""),
    ((b"ATQ1\r",), b"ATQ0\r", OK),
    ((b"ATQ1\r",), b"ATI\r", b"\r\n" + IDENT.encode() + b"\r\n"),
    ((), b"ATQ2\r", ERROR),
    ((), b"ATI\r", b"\r\n" + IDENT.encode() + b"\r\n" + OK),
    ((), b"ATI0\r", b"\r\n" + IDENT.encode() + b"\r\n" + OK),
    ((b"ATV0\r",), b"ATI\r", IDENT.encode() + b"\r\n0\r"),
    ((), b"ATS7=30\r", OK),
    ((b"ATS7=30\r",), b"ATS7?\r", b"\r\n030\r\n" + OK),
    ((), b"ATS12?\r", b"\r\n050\r\n" + OK),
    ((), b"ATS2?S3?S4?S5?\r", b"\r\n043\r\n\r\n013\r\n\r\n010\r\n\r\n008\r\n" + OK),
    ((), b"ATS0?\r", b"\r\n000\r\n" + OK),
    ((), b"ATS255=255\r", OK),
    ((), b"ATS256=1\r", ERROR),
    ((), b"ATS7=256\r", ERROR),
    ((), b"ATS7=\r", OK),  # a missing number is 0
    ((b"ATS7=\r",), b"ATS7?\r", b"\r\n000\r\n" + OK),
    ((), b"ATS\r", ERROR),
    ((), b"ATS7\r", ERROR),
    ((), b"ATS=5\r", ERROR),
    ((b"ATV0\r",), b"ATS12?\r", b"050\r\n0\r"),
    ((), b"ATX0\r", OK),
    ((), b"ATX4\r", OK),
    ((), b"ATX5\r", ERROR),
    ((), b"ATH\r", OK),
    ((), b"ATH0\r", OK),
    ((), b"ATH1\r", OK),
    ((), b"ATH2\r", ERROR),
    ((), b"ATO\r", NO_CARRIER),
    ((), b"ATO0\r", NO_CARRIER),
    ((), b"ATA\r", ERROR),
    ((), b"AT&C1&D2\r", OK),
    ((), b"AT&K3&W\r", OK),
    ((), b"ATL1M0B0N1W2\r", OK),
    ((), b"ATLMBNW\r", OK),
    ((), b"AT&X\r", ERROR),
    ((), b"AT&\r", ERROR),
    ((), b"ATE0V1Q0\r", OK),
    ((), b"ATE0V0Q0\r", b"0\r"),  # V0 of the same line already applies
    ((), b"ATV0FOO\r", b"4\r"),  # commands before the error keep their effect
    ((), b"AT E 0 V 1\r", OK),  # spaces are ignored
    ((), b"A T\r", b""),  # ...but not inside the prefix: no command at all
    ((), b"ATX\x08\r", OK),  # S5 backspace erases X
    ((), b"ATFOO\x08\x08\x08\r", OK),
    ((), b"AT\x08\x08\r", OK),  # the AT prefix itself is not erased
    ((), b"AT\x01\x7fX4\r", OK),  # control characters are ignored
    ((), b"\xc1\xd4\r", OK),  # only the low 7 bits count ("AT" with parity)
    ((), b"hello\r", b""),  # no AT prefix: ignored
    ((), b"xyzAT\r", OK),  # garbage before the prefix is skipped
    ((), b"AAT\r", OK),
    ((), b"A/", OK),  # nothing to repeat yet: an empty line
    ((b"ATI\r",), b"A/", b"\r\n" + IDENT.encode() + b"\r\n" + OK),
    ((b"ATS7?\r",), b"a/", b"\r\n050\r\n" + OK),
    ((), b"AT" + b"L" * 300 + b"\r", ERROR),
    ((b"AT" + b"L" * 300 + b"\r",), b"AT\r", OK),
    ((), b"AT" + b"L" * 256 + b"\r", OK),  # the bound is 256, inclusive
    # S3/S4 changes apply to the result of the same line (V.250).
    ((), b"ATS3=10\r", b"\n\nOK\n\n"),
    ((b"ATS3=10\r",), b"AT\n", b"\n\nOK\n\n"),
    ((b"ATS3=10\r",), b"AT\r", b""),  # CR is no longer the terminator
    ((), b"ATS4=13\r", b"\r\rOK\r\r"),
    ((b"ATS5=127\r",), b"ATX\x7f\r", OK),
    ((b"ATV0\r", b"ATV1S7=1\r"), b"AT&F\r", OK),
    ((b"ATV0E0\r",), b"ATZ\r", OK),  # Z restores verbose before answering
    ((b"ATV0\r",), b"ATZV0\r", OK),  # Z ignores the rest of the line
]


@pytest.mark.parametrize(("setup", "line", "expected"), TABLE)
def test_command_table(setup: tuple[bytes, ...], line: bytes, expected: bytes) -> None:
    modem = engine()
    run(modem, *setup)
    assert run(modem, line) == expected
    assert modem.state == "command"


def test_echo_is_on_by_default_and_precedes_the_result() -> None:
    modem = engine()
    actions = modem.feed(b"AT\rAT\x08X\r", 0.0)
    assert [(a.kind, a.data) for a in actions if isinstance(a, Write)] == [
        ("echo", b"AT\r"),
        ("result", OK),
        ("echo", b"AT\x08X\r"),
        ("result", OK),
    ]


def test_echo_off_takes_effect_after_its_own_line() -> None:
    modem = engine()
    first = modem.feed(b"ATE0\r", 0.0)
    assert written(first, ("echo",)) == b"ATE0\r"
    assert written(modem.feed(b"AT\r", 0.0), ("echo",)) == b""
    assert written(modem.feed(b"ATE1\r", 0.0), ("echo",)) == b""
    assert written(modem.feed(b"AT\r", 0.0), ("echo",)) == b"AT\r"


def test_echo_of_a_line_split_over_chunks() -> None:
    modem = engine()
    echoes = [written(modem.feed(bytes([b]), 0.0), ("echo",)) for b in b"ATI\r"]
    assert echoes == [b"A", b"T", b"I", b"\r"]


def test_line_spread_over_many_chunks_runs_once() -> None:
    modem = engine()
    modem.feed(b"ATE0\r", 0.0)
    outs = [run(modem, bytes([b])) for b in b"ATS12?\r"]
    assert outs == [b""] * 6 + [b"\r\n050\r\n" + OK]


def test_reset_restores_registers() -> None:
    modem = engine()
    run(modem, b"ATS12=10S7=3\r")
    assert (modem.register(12), modem.register(7)) == (10, 3)
    run(modem, b"ATZ\r")
    assert (modem.register(12), modem.register(7)) == (50, 50)
    run(modem, b"ATS12=10\r", b"AT&F\r")
    assert modem.register(12) == 50


# ------------------------------------------------------------------ dialling


@pytest.mark.parametrize(
    "dial",
    [
        b"ATDT0120223042\r",
        b"ATD0120223042\r",
        b"ATDP0120223042\r",
        b"atdt0120223042\r",
        b"ATDT(0120) 223-042\r",
        b"ATD T 0120,223W042!@\r",
        b"AT&C1&D2DT0120223042\r",
    ],
)
def test_dial_configured_number_connects(dial: bytes) -> None:
    modem = engine()
    actions = modem.feed(dial, 5.0)
    assert written(actions) == CONNECT
    assert CallStarted(NUMBER) in actions
    assert modem.state == "data"
    assert modem.number == NUMBER


@pytest.mark.parametrize(
    ("setup", "dial", "expected"),
    [
        ((), b"ATDT999\r", BUSY),
        ((b"ATV0\r",), b"ATDT999\r", b"7\r"),
        ((), b"ATDT0120223042;\r", OK),  # `;`: stay in command mode
        ((), b"ATDT0120223042;E0\r", OK),  # ...and go on with the line
        ((), b"ATDT\r", NO_CARRIER),  # nobody to call
        ((), b"ATDTXYZ\r", ERROR),  # not a dial digit
        ((), b"ATDL\r", ERROR),
    ],
)
def test_dial_without_a_call(setup: tuple[bytes, ...], dial: bytes, expected: bytes) -> None:
    modem = engine()
    run(modem, *setup)
    actions = modem.feed(dial, 0.0)
    assert written(actions) == expected
    assert not any(isinstance(a, CallStarted) for a in actions)
    assert modem.state == "command"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ((), CONNECT),
        ((b"ATX0\r",), b"\r\nCONNECT\r\n"),
        ((b"ATX1\r",), CONNECT),
        ((b"ATV0\r",), b"12\r"),  # Hayes extended code of CONNECT 9600
        ((b"ATV0X0\r",), b"1\r"),
        ((b"ATQ1\r",), b""),
    ],
)
def test_connect_result_forms(setup: tuple[bytes, ...], expected: bytes) -> None:
    modem = engine()
    run(modem, *setup)
    assert run(modem, b"ATDT0120223042\r") == expected
    assert modem.state == "data"


def test_connect_reports_the_line_baud() -> None:
    modem = ModemEngine(ModemSettings(baud=2400))
    assert run(modem, b"ATD1\r") == b"\r\nCONNECT 2400\r\n"
    modem = ModemEngine(ModemSettings(baud=31337))
    assert run(modem, b"ATV0D1\r") == b"1\r"  # no extended code for this rate


def test_empty_number_list_accepts_any_number() -> None:
    modem = engine(numbers=())
    actions = modem.feed(b"ATDT555\r", 0.0)
    assert CallStarted("555") in actions
    assert written(actions) == CONNECT


def test_configured_numbers_are_normalised() -> None:
    modem = engine(numbers=("0120-223-042",))
    assert run(modem, b"ATDT0120223042\r") == CONNECT
    assert normalize_number("(0120) 223-042") == NUMBER


def test_a_slash_redials() -> None:
    modem = engine()
    assert run(modem, b"ATDT999\r") == BUSY
    assert run(modem, b"A/") == BUSY


def test_bytes_after_connect_are_data() -> None:
    modem = engine()
    actions = modem.feed(b"ATDT0120223042\rAT\r", 0.0)
    assert written(actions) == CONNECT  # the AT after CONNECT is not a command
    assert written(actions, ("echo",)) == b"ATDT0120223042\r"


def test_dial_while_online_is_an_error() -> None:
    modem = engine()
    run(modem, b"ATE0DT0120223042\r", now=0.0)
    run(modem, b"+++", now=2.0)
    assert modem.tick(3.0) == [Write(OK)]
    assert run(modem, b"ATDT0120223042\r", now=3.5) == ERROR
    assert modem.state == "online-command"


def test_reset_during_a_call_hangs_up() -> None:
    modem = engine()
    run(modem, b"ATE0DT0120223042\r", now=0.0)
    run(modem, b"+++", now=2.0)
    modem.tick(3.0)
    actions = modem.feed(b"ATZ\r", 3.5)
    assert CallEnded("reset") in actions
    assert written(actions) == OK
    assert modem.state == "command"


def test_settings_from_config() -> None:
    config = SerialConfig(
        port="loop://", baud=2400, numbers=("0120-223-042",), idle_timeout=timedelta(seconds=30)
    )
    settings = ModemSettings.from_config(config, identity="x")
    assert settings == ModemSettings(2400, ("0120-223-042",), 30.0, "x")
    assert run(ModemEngine(settings), b"ATD0120223042\r") == b"\r\nCONNECT 2400\r\n"


def test_identity_is_printable_ascii() -> None:
    modem = ModemEngine(ModemSettings(identity="モデム\r\nOK"))
    assert run(modem, b"ATI\r") == b"\r\n?????OK\r\n" + OK
