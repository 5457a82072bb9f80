"""Off-contract fees (SPEC 4.7) with NEC's rate table (seed 002, 別表):
08:30-17:30 10,000 (+2,500 per 15 min), 17:30-21:00 12,000 (+3,000),
21:00-08:30 14,000 (+3,500), the last band crossing midnight."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from monitor.fees import TariffError, after_hours_estimate, band_at, fee
from monitor.model import TariffBand, TimeRange

JST = ZoneInfo("Asia/Tokyo")
DAY = TariffBand(TimeRange(510, 1050), 10000, 2500)
EVENING = TariffBand(TimeRange(1050, 1260), 12000, 3000)
NIGHT = TariffBand(TimeRange(1260, 510), 14000, 3500)
NEC = (DAY, EVENING, NIGHT)


def jst(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=JST)


@pytest.mark.parametrize(
    ("start", "minutes", "total"),
    [
        (jst(2026, 11, 20, 9), 1, 10000),  # any work costs the first hour
        (jst(2026, 11, 20, 9), 60, 10000),
        (jst(2026, 11, 20, 9), 61, 12500),  # a started quarter counts
        (jst(2026, 11, 20, 9), 75, 12500),
        (jst(2026, 11, 20, 9), 76, 15000),
        # Work runs into the evening band: those quarters pay evening rates.
        (jst(2026, 11, 20, 17), 120, 10000 + 4 * 3000),
        (jst(2026, 11, 20, 16), 120, 10000 + 2 * 2500 + 2 * 3000),
        # Evening start, into the night band.
        (jst(2026, 11, 20, 20, 30), 150, 12000 + 6 * 3500),
        # Night band crossing midnight: start before, quarters after.
        (jst(2026, 11, 20, 23, 30), 120, 14000 + 4 * 3500),
        # Early morning night band into the day band.
        (jst(2026, 11, 21, 7, 45), 90, 14000 + 2 * 2500),
        # Bands are for every day: a Sunday or holiday costs the same.
        (jst(2026, 11, 23, 9), 60, 10000),
        # Exactly on a boundary belongs to the band that starts there.
        (jst(2026, 11, 20, 17, 30), 60, 12000),
        (jst(2026, 11, 20, 8, 29), 60, 14000),
    ],
)
def test_fee_totals(start: datetime, minutes: int, total: int) -> None:
    assert fee(NEC, "Asia/Tokyo", start, minutes).total == total


def test_itemised_lines_group_quarters_by_band() -> None:
    result = fee(NEC, "Asia/Tokyo", jst(2026, 11, 20, 20, 0), 180)
    assert [(i.description, i.start, i.amount) for i in result.items] == [
        ("first hour (17:30-21:00)", jst(2026, 11, 20, 20), 12000),
        ("8 x 15 min at 3500 (21:00-08:30)", jst(2026, 11, 20, 21), 28000),
    ]
    assert result.total == 40000
    mixed = fee(NEC, "Asia/Tokyo", jst(2026, 11, 20, 16, 10), 150)
    # quarters start 17:10, 17:25 (day), 17:40, 17:55, 18:10, 18:25 (evening)
    assert [(i.start, i.amount) for i in mixed.items] == [
        (jst(2026, 11, 20, 16, 10), 10000),
        (jst(2026, 11, 20, 17, 10), 2 * 2500),
        (jst(2026, 11, 20, 17, 40), 4 * 3000),
    ]
    assert mixed.total == sum(i.amount for i in mixed.items) == 27000


def test_fee_reads_bands_in_the_given_zone() -> None:
    # 09:00 in Tokyo is 01:00 in Berlin (winter): the night band there.
    start = jst(2026, 11, 20, 9)
    assert fee(NEC, "Europe/Berlin", start, 60).total == 14000
    assert fee(NEC, "Europe/Berlin", start, 60).items[0].start.tzinfo == ZoneInfo("Europe/Berlin")


def test_quarters_are_real_time_across_dst() -> None:
    # Berlin 2026-10-25: 03:00 CEST -> 02:00 CET.  Work from 01:00 CEST for
    # 3 h: the 8 quarters start at real 15-minute steps, 02:00..02:45 CEST
    # then 02:00..02:45 CET, all inside the 00:00-03:00 band.  (Stepping the
    # wall clock instead would put four of them at 03:00..03:45.)
    bands = (TariffBand(TimeRange(0, 180), 100, 10), TariffBand(TimeRange(180, 1440), 100, 1))
    start = datetime(2026, 10, 25, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    result = fee(bands, "Europe/Berlin", start, 180)
    assert result.total == 100 + 8 * 10
    assert [i.description for i in result.items] == [
        "first hour (00:00-03:00)",
        "8 x 15 min at 10 (00:00-03:00)",
    ]


def test_after_hours_estimate() -> None:
    assert after_hours_estimate(NEC, "Asia/Tokyo", jst(2026, 11, 20, 22)) == 14000
    assert after_hours_estimate(NEC, "Asia/Tokyo", jst(2026, 11, 20, 18)) == 12000
    assert after_hours_estimate((), "Asia/Tokyo", jst(2026, 11, 20, 18)) is None


def test_errors() -> None:
    with pytest.raises(TariffError, match="no \\[\\[tariff\\]\\]"):
        fee((), "Asia/Tokyo", jst(2026, 11, 20, 9), 60)
    with pytest.raises(TariffError, match="03:00"):
        fee((DAY,), "Asia/Tokyo", jst(2026, 11, 20, 3), 60)
    with pytest.raises(ValueError, match="positive"):
        fee(NEC, "Asia/Tokyo", jst(2026, 11, 20, 9), 0)
    with pytest.raises(ValueError, match="aware"):
        fee(NEC, "Asia/Tokyo", datetime(2026, 11, 20, 9), 60)


def test_band_at_handles_crossing_midnight() -> None:
    assert band_at(NEC, jst(2026, 1, 1, 0, 0)) is NIGHT
    assert band_at(NEC, jst(2026, 1, 1, 8, 29)) is NIGHT
    assert band_at(NEC, jst(2026, 1, 1, 8, 30)) is DAY
    assert band_at(NEC, jst(2026, 1, 1, 21, 0)) is NIGHT
    assert band_at(NEC, jst(2026, 1, 1, 20, 59)) is EVENING
