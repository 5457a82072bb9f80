"""parse_mail cost per message (run: make bench).

Compare with PERF.md: `email` policy.default ~630 µs, compat32 ~36 µs for a
1 KB mail, and an aiosmtpd sink's ~2,900 msg/s (~345 µs a message), of which
parsing should take a small part.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from monitor.formats.devices import DeviceIndex
from monitor.formats.express import build_express_mail
from monitor.formats.mail import MailReports, parse_mail
from monitor.formats.redfish import parse_redfish
from monitor.model import AlarmReport, Device

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
JST = timezone(timedelta(hours=9))

# A realistic index: a few thousand devices, the tested ones among them.
DEVICES = {
    f"JPN{i:07d}": Device(f"JPN{i:07d}", "N8100-2801", f"srv{i:05d}", "C") for i in range(5000)
}
DEVICES["JPN0020014"] = Device("JPN0020014", "N8100-2500", "srv-tky-014", "C")
INDEX = DeviceIndex(DEVICES)


def express_1k() -> bytes:
    report = AlarmReport(
        id="b2f0c6e1-0d7e-4a53-9d43-1c1d7e0a9f10",
        serial="JPN0012345",
        severity="critical",
        code="PSU-0003",
        message="Power supply 1 failure detected. " * 14,
        model="N8100-2801",
        host="db01",
        occurred=datetime(2026, 11, 20, 17, 45, 12, tzinfo=JST),
        occurred_raw="2026-11-20T17:45:12+09:00",
        component="PSU1",
        sig="93284c36fb1fa3553b15a11e34983022006db038fde9f8ed79b158110b84bf74",
    )
    raw = build_express_mail(
        report,
        sender="agent@db01.example.jp",
        to="alarms@monitor.example",
        message_id="agent-0001@db01.example.jp",
        date=datetime(2026, 11, 20, 17, 45, 13, tzinfo=JST),
    )
    assert 950 <= len(raw) <= 1100, len(raw)
    return raw


@pytest.mark.bench
def test_bench_express_1k(benchmark: BenchmarkFixture) -> None:
    raw = express_1k()
    outcome = benchmark(parse_mail, raw, "agent@db01.example.jp", INDEX)
    assert isinstance(outcome, MailReports) and outcome.format == "express"


@pytest.mark.bench
@pytest.mark.parametrize("name", ["esmpro_iso2022jp.eml", "esmpro_relay_sjis_fullwidth.eml"])
def test_bench_esmpro(benchmark: BenchmarkFixture, name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    if name.startswith("esmpro_relay"):
        INDEX_RELAY = DeviceIndex(
            {
                **DEVICES,
                "JPN0030002": Device(
                    "JPN0030002", "M", "db-osk-02", "C", senders=("esmpro-mgr@osk.example.jp",)
                ),
            }
        )
        outcome = benchmark(parse_mail, raw, "esmpro-mgr@osk.example.jp", INDEX_RELAY)
    else:
        outcome = benchmark(parse_mail, raw, "esmpro@srv-tky-014.example.jp", INDEX)
    assert isinstance(outcome, MailReports) and outcome.format == "esmpro"


@pytest.mark.bench
def test_bench_redfish(benchmark: BenchmarkFixture) -> None:
    data = (
        b'{"Events":[{"EventId":"41877","EventTimestamp":"2025-07-14T02:33:10+00:00",'
        b'"MessageId":"ExampleVendorEvents.2.1.PowerSupplyFailed",'
        b'"Message":"Power supply PSU2 has failed.","MessageSeverity":"Critical",'
        b'"OriginOfCondition":{"@odata.id":"/redfish/v1/Chassis/1/Power#/PowerSupplies/1"}}]}'
    )
    out = benchmark(parse_redfish, data, "JPN0012345")
    assert isinstance(out[0], AlarmReport)
