"""Serial channel: ModemEngine frames/s for a 300-byte JSON alarm (run: make bench).

A 9600 baud line carries ~960 bytes/s, i.e. about three such frames a second,
so the engine only has to be far from being the bottleneck of one line; the
figure matters for how many lines one daemon process can serve.
"""

from __future__ import annotations

import json

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from monitor.frames import FrameDecoder, encode_frame
from monitor.modem import FrameReceived, ModemEngine, ModemSettings, Write

BATCH = 100


def payload_300() -> bytes:
    alarm = {
        "v": 1,
        "id": "b2f0c6e1-0d7e-4a53-9d43-1c1d7e0a9f10",
        "serial": "JPN0012345",
        "model": "N8100-2801",
        "host": "db01",
        "occurred": "2026-11-20T17:45:12+09:00",
        "severity": "critical",
        "component": "PSU1",
        "code": "PSU-0003",
        "message": "Power supply 1 failure detected on chassis 1, slot A (replace FRU)",
    }
    data = json.dumps(alarm, separators=(",", ":")).encode()
    data = data[:-2] + b" " * (300 - len(data)) + data[-2:]  # JSON allows the padding
    assert len(data) == 300
    return data


FRAME = encode_frame(payload_300())


def connected() -> ModemEngine:
    modem = ModemEngine(ModemSettings(numbers=("0120223042",)))
    modem.feed(b"ATE0DT0120223042\r", 0.0)
    return modem


def one_frame_per_read(modem: ModemEngine, now: list[float]) -> int:
    """What the listener does per frame: feed its bytes, store, answer."""
    acked = 0
    for _ in range(BATCH):
        now[0] += 0.001
        for action in modem.feed(FRAME, now[0]):
            if isinstance(action, FrameReceived):
                for out in modem.report_result(action.token, "id", None, now[0]):
                    acked += isinstance(out, Write)
    return acked


@pytest.mark.bench
def test_bench_engine_frames(benchmark: BenchmarkFixture) -> None:
    modem, now = connected(), [0.0]
    assert benchmark(one_frame_per_read, modem, now) == BATCH
    if benchmark.stats:
        benchmark.extra_info["frames_per_s"] = round(BATCH / benchmark.stats.stats.mean)


@pytest.mark.bench
def test_bench_engine_frames_in_small_reads(benchmark: BenchmarkFixture) -> None:
    # A serial port often hands over a few dozen bytes per read.
    pieces = [FRAME[i : i + 32] for i in range(0, len(FRAME), 32)]

    def run(modem: ModemEngine, now: list[float]) -> int:
        acked = 0
        for _ in range(BATCH):
            for piece in pieces:
                now[0] += 0.001
                for action in modem.feed(piece, now[0]):
                    if isinstance(action, FrameReceived):
                        acked += len(modem.report_result(action.token, "id", None, now[0]))
        return acked

    modem, now = connected(), [0.0]
    assert benchmark(run, modem, now) == BATCH
    if benchmark.stats:
        benchmark.extra_info["frames_per_s"] = round(BATCH / benchmark.stats.stats.mean)


@pytest.mark.bench
def test_bench_decoder_only(benchmark: BenchmarkFixture) -> None:
    wire = FRAME * BATCH
    decoder = FrameDecoder()

    def run() -> int:
        events, _ = decoder.feed(wire)
        return len(events)

    assert benchmark(run) == BATCH
    if benchmark.stats:
        benchmark.extra_info["frames_per_s"] = round(BATCH / benchmark.stats.stats.mean)
