"""Coverage of a device at an instant (SPEC 4.2), in the contract's zone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from monitor.hours import contract_end, coverage
from monitor.model import Contract, Coverage, Device

JST = ZoneInfo("Asia/Tokyo")

CONTRACT = Contract(
    id="C-0001",
    customer="Example Corp / billing system",
    plan="express-5x9",
    days=None,
    timezone="Asia/Tokyo",
    start=date(2025, 4, 1),
    years=5,
    registered=True,
    after_hours="defer",
    ack_timeout=timedelta(minutes=30),
    contacts=(),
)
DEVICE = Device(serial="JPN0012345", model="N8100-2801", host="db01", contract="C-0001")


def jst(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=JST)


@pytest.mark.parametrize(
    ("device", "contract", "at", "expected"),
    [
        (DEVICE, CONTRACT, jst(2026, 11, 20, 16, 30), Coverage.COVERED),
        (None, CONTRACT, jst(2026, 11, 20), Coverage.UNKNOWN_DEVICE),
        (None, None, jst(2026, 11, 20), Coverage.UNKNOWN_DEVICE),
        (DEVICE, None, jst(2026, 11, 20), Coverage.UNREGISTERED),
        (DEVICE, replace(CONTRACT, registered=False), jst(2026, 11, 20), Coverage.UNREGISTERED),
        # Order: unregistered is reported before not-started / expired.
        (DEVICE, replace(CONTRACT, registered=False), jst(2020, 1, 1), Coverage.UNREGISTERED),
        # First covered local date is `start` itself, from local midnight.
        (DEVICE, CONTRACT, jst(2025, 3, 31, 23, 59), Coverage.NOT_STARTED),
        (DEVICE, CONTRACT, jst(2025, 4, 1, 0, 0), Coverage.COVERED),
        # start + 5 years is the first day NOT covered.
        (DEVICE, CONTRACT, jst(2030, 3, 31, 23, 59), Coverage.COVERED),
        (DEVICE, CONTRACT, jst(2030, 4, 1, 0, 0), Coverage.EXPIRED),
    ],
)
def test_coverage_table(
    device: Device | None, contract: Contract | None, at: datetime, expected: Coverage
) -> None:
    assert coverage(device, contract, at) is expected


def test_local_date_is_the_contracts_zone() -> None:
    # 2025-03-31 16:00 UTC is already 2025-04-01 01:00 in Tokyo: covered.
    at = datetime(2025, 3, 31, 16, 0, tzinfo=UTC)
    assert coverage(DEVICE, CONTRACT, at) is Coverage.COVERED
    # The same instant for a Berlin contract is still 31 March there.
    berlin = replace(CONTRACT, timezone="Europe/Berlin")
    assert coverage(DEVICE, berlin, at) is Coverage.NOT_STARTED
    # Expiry likewise: 2030-03-31 15:00 UTC is 04-01 00:00 JST.
    assert coverage(DEVICE, CONTRACT, datetime(2030, 3, 31, 15, tzinfo=UTC)) is Coverage.EXPIRED
    assert coverage(DEVICE, berlin, datetime(2030, 3, 31, 15, tzinfo=UTC)) is Coverage.COVERED


@pytest.mark.parametrize(
    ("start", "years", "end"),
    [
        (date(2025, 4, 1), 5, date(2030, 4, 1)),
        (date(2024, 2, 29), 3, date(2027, 3, 1)),  # leap day -> Mar 1
        (date(2024, 2, 29), 4, date(2028, 2, 29)),  # leap year again: Feb 29
        (date(2023, 2, 28), 1, date(2024, 2, 28)),
        (date(2025, 12, 31), 3, date(2028, 12, 31)),
    ],
)
def test_contract_end(start: date, years: int, end: date) -> None:
    assert contract_end(start, years) == end


def test_feb_29_contract_runs_through_feb_28() -> None:
    leap = replace(CONTRACT, start=date(2024, 2, 29), years=3)
    assert coverage(DEVICE, leap, jst(2027, 2, 28, 23, 59)) is Coverage.COVERED
    assert coverage(DEVICE, leap, jst(2027, 3, 1)) is Coverage.EXPIRED
    assert coverage(DEVICE, leap, jst(2024, 2, 28, 23, 59)) is Coverage.NOT_STARTED
    assert coverage(DEVICE, leap, jst(2024, 2, 29)) is Coverage.COVERED


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        coverage(DEVICE, CONTRACT, datetime(2026, 1, 1))
