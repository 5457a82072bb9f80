"""Throughput of the hours engine's hot calls (goal on one core: in_hours
>= 200k/s, next_start >= 50k/s, 2 h add_service_time >= 50k/s).

Run: .venv/bin/pytest tests/bench -m bench --benchmark-enable
Each round calls the function on 1,000 instants spread over 2026-2027 (warm
caches, as in the daemon); calls/s = 1000 / mean.  No thresholds here: the
figures go in the report, machines differ.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from monitor.fees import fee
from monitor.hours import Schedule, parse_days
from monitor.model import CalendarSpec, TariffBand, TimeRange

JP = CalendarSpec(
    "jp", "JP", frozenset({(12, 29), (12, 30), (12, 31), (1, 2), (1, 3)}), frozenset(), frozenset()
)
SCHEDULES = {
    "5x9-jp": Schedule(parse_days("mon-fri"), TimeRange(510, 1050), JP, "Asia/Tokyo"),
    "24x7": Schedule(parse_days("mon-sun"), TimeRange(0, 1440), None, "Asia/Tokyo"),
    "nights-berlin": Schedule(parse_days("sat-wed"), TimeRange(1260, 510), JP, "Europe/Berlin"),
}
BANDS = (
    TariffBand(TimeRange(510, 1050), 10000, 2500),
    TariffBand(TimeRange(1050, 1260), 12000, 3000),
    TariffBand(TimeRange(1260, 510), 14000, 3500),
)
N = 1000
_rng = random.Random(20261120)
_BASE = datetime(2026, 1, 1, tzinfo=UTC)
INSTANTS = [_BASE + timedelta(seconds=_rng.randrange(2 * 365 * 86400)) for _ in range(N)]
TWO_HOURS = timedelta(hours=2)


def _loop(call: Callable[[datetime], object]) -> Callable[[], None]:
    def run() -> None:
        for at in INSTANTS:
            call(at)

    return run


def _warm(call: Callable[[datetime], object]) -> None:
    for at in INSTANTS:  # fill the window caches first: we measure the steady state
        call(at)


@pytest.mark.bench
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_bench_in_hours(benchmark: BenchmarkFixture, name: str) -> None:
    call = SCHEDULES[name].in_hours
    _warm(call)
    benchmark.extra_info["calls_per_round"] = N
    benchmark(_loop(call))


@pytest.mark.bench
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_bench_next_start(benchmark: BenchmarkFixture, name: str) -> None:
    call = SCHEDULES[name].next_start
    _warm(call)
    benchmark.extra_info["calls_per_round"] = N
    benchmark(_loop(call))


@pytest.mark.bench
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_bench_add_service_time_2h(benchmark: BenchmarkFixture, name: str) -> None:
    sched = SCHEDULES[name]

    def call(at: datetime) -> object:
        return sched.add_service_time(at, TWO_HOURS)

    _warm(call)
    benchmark.extra_info["calls_per_round"] = N
    benchmark(_loop(call))


@pytest.mark.bench
def test_bench_window_at(benchmark: BenchmarkFixture) -> None:
    call = SCHEDULES["5x9-jp"].window_at
    _warm(call)
    benchmark.extra_info["calls_per_round"] = N
    benchmark(_loop(call))


@pytest.mark.bench
def test_bench_fee_3h(benchmark: BenchmarkFixture) -> None:
    def call(at: datetime) -> object:
        return fee(BANDS, "Asia/Tokyo", at, 180)

    benchmark.extra_info["calls_per_round"] = N
    benchmark(_loop(call))
