"""`monitor hours` / `monitor fee` text and the hours API body (SPEC 5, 6.2)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from monitor.cli_hours import UnknownContract, fee_report, hours_json, hours_report
from monitor.fees import TariffError
from monitor.hours import parse_days, schedule_for
from monitor.model import (
    CalendarSpec,
    Config,
    Contract,
    DaemonConfig,
    HttpConfig,
    PlanSpec,
    TariffBand,
    TimeRange,
)

JST = ZoneInfo("Asia/Tokyo")
H = timedelta(hours=1)
JP = CalendarSpec(
    "jp", "JP", frozenset({(12, 29), (12, 30), (12, 31), (1, 2), (1, 3)}), frozenset(), frozenset()
)
TARIFF = (
    TariffBand(TimeRange(510, 1050), 10000, 2500),
    TariffBand(TimeRange(1050, 1260), 12000, 3000),
    TariffBand(TimeRange(1260, 510), 14000, 3500),
)


def contract(cid: str, plan: str, days: str | None = None, tz: str = "Asia/Tokyo") -> Contract:
    return Contract(
        id=cid,
        customer="Example Corp / billing system",
        plan=plan,
        days=None if days is None else parse_days(days),
        timezone=tz,
        start=date(2025, 4, 1),
        years=5,
        registered=True,
        after_hours="defer",
        ack_timeout=timedelta(minutes=30),
        contacts=(),
    )


def make_config(tariff: tuple[TariffBand, ...] = TARIFF) -> Config:
    contracts = [
        contract("C-0001", "express-5x9", days="tue-sat"),
        contract("C-0002", "hpe-9x5-nbd", tz="Europe/Berlin"),
        contract("C-0003", "express-24x7"),
    ]
    return Config(
        path="/etc/monitor/monitor.toml",
        daemon=DaemonConfig("Asia/Tokyo", "var/monitor.db", "system", None, "monitor-1"),
        http=HttpConfig("127.0.0.1", 9120),
        tariff=tariff,
        calendars={"jp": JP},
        plans={
            "express-5x9": PlanSpec(
                "express-5x9", parse_days("mon-fri"), 5, TimeRange(510, 1050), "jp", 2 * H
            ),
            "hpe-9x5-nbd": PlanSpec(
                "hpe-9x5-nbd", parse_days("mon-fri"), None, TimeRange(525, 1050), "jp", None, True
            ),
            "express-24x7": PlanSpec(
                "express-24x7", parse_days("mon-sun"), None, TimeRange(0, 1440), "none", 4 * H
            ),
        },
        contracts={c.id: c for c in contracts},
    )


CONFIG = make_config()


def test_hours_report_outside_hours() -> None:
    text = hours_report(CONFIG, "C-0001", datetime(2026, 11, 21, 8, 32, tzinfo=UTC), 3)
    assert text.splitlines() == [
        "contract  C-0001 (Example Corp / billing system)",
        "plan      express-5x9: tue-sat 08:30-17:30, calendar jp, response 2h",
        "zone      Asia/Tokyo",
        "at        2026-11-21T17:32:00+09:00 (Sat)",
        "in hours  no",
        "window    -",
        "next 3 windows:",
        "  2026-11-24T08:30:00+09:00 .. 2026-11-24T17:30:00+09:00  (Tue)",
        "  2026-11-25T08:30:00+09:00 .. 2026-11-25T17:30:00+09:00  (Wed)",
        "  2026-11-26T08:30:00+09:00 .. 2026-11-26T17:30:00+09:00  (Thu)",
    ]


def test_hours_report_inside_hours_and_zone() -> None:
    text = hours_report(CONFIG, "C-0002", datetime(2026, 11, 20, 10, tzinfo=UTC), 1)
    lines = text.splitlines()
    assert "plan      hpe-9x5-nbd: mon-fri 08:45-17:30, calendar jp, response nbd" in lines
    assert "zone      Europe/Berlin" in lines
    assert "in hours  yes" in lines
    assert "window    2026-11-20T08:45:00+01:00 .. 2026-11-20T17:30:00+01:00" in lines
    # Monday 23rd is a Japanese holiday and this contract uses the jp calendar.
    assert lines[-2:] == [
        "next 1 window:",
        "  2026-11-24T08:45:00+01:00 .. 2026-11-24T17:30:00+01:00  (Tue)",
    ]


def test_hours_report_24x7() -> None:
    text = hours_report(CONFIG, "C-0003", datetime(2027, 1, 1, 3, tzinfo=JST), 2)
    assert "in hours  yes" in text.splitlines()
    assert text.splitlines()[-1] == "next 0 windows:"


def test_unknown_contract() -> None:
    with pytest.raises(UnknownContract) as err:
        hours_report(CONFIG, "C-9999", datetime(2026, 1, 1, tzinfo=UTC), 1)
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "unknown contract 'C-9999'"
    with pytest.raises(UnknownContract):
        fee_report(CONFIG, datetime(2026, 1, 1, tzinfo=UTC), 60, "C-9999")


def test_fee_report_daemon_zone() -> None:
    text = fee_report(CONFIG, datetime(2026, 11, 20, 11, 30, tzinfo=UTC), 150, None)
    lines = text.splitlines()
    assert lines[0] == "fee for 150 min from 2026-11-20T20:30:00+09:00 (Asia/Tokyo)"
    assert "first hour (17:30-21:00)" in lines[1] and lines[1].endswith("12000")
    assert "6 x 15 min at 3500 (21:00-08:30)" in lines[2] and lines[2].endswith("21000")
    assert lines[-1] == "total 33000"


def test_fee_report_contract_zone() -> None:
    text = fee_report(CONFIG, datetime(2026, 11, 20, 11, 30, tzinfo=UTC), 150, "C-0002")
    lines = text.splitlines()
    assert lines[0] == (
        "fee for 150 min from 2026-11-20T12:30:00+01:00 (Europe/Berlin, contract C-0002)"
    )
    assert lines[-1] == "total 25000"


def test_fee_report_without_tariff() -> None:
    with pytest.raises(TariffError):
        fee_report(make_config(tariff=()), datetime(2026, 1, 1, tzinfo=UTC), 60, None)


def test_hours_json_shape() -> None:
    sched = schedule_for(CONFIG, CONFIG.contracts["C-0001"])
    at = datetime(2026, 11, 21, 16, 30, tzinfo=JST)
    body = hours_json(sched, at, 2)
    assert body == {
        "in_hours": True,
        "window": {"start": "2026-11-21T08:30:00+09:00", "end": "2026-11-21T17:30:00+09:00"},
        "next": [
            {"start": "2026-11-24T08:30:00+09:00", "end": "2026-11-24T17:30:00+09:00"},
            {"start": "2026-11-25T08:30:00+09:00", "end": "2026-11-25T17:30:00+09:00"},
        ],
    }
    json.dumps(body)  # plain JSON types only
    closed = hours_json(sched, datetime(2026, 11, 23, 12, tzinfo=JST), 0)
    assert closed == {"in_hours": False, "window": None, "next": []}
    # RFC 3339 strings parse back to the same instants.
    window = body["window"]
    assert datetime.fromisoformat(window["start"]) == datetime(2026, 11, 21, 8, 30, tzinfo=JST)
