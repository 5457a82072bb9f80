"""`monitor-sim generate`: every scenario is reproducible from its seed, and
what it writes is what the daemon's own parsers read back."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from monitor_sim.cli import main
from monitor_sim.generate import generate
from monitor_sim.loadgen import MESSAGE, OCCURRED, ReportMaker
from monitor_sim.oracle import Hours
from monitor_sim.scenarios import SCENARIOS
from monitor_sim.scenarios.base import Options
from monitor_sim.simconfig import SimConfig, SimDevice, load_sim_config
from monitor_sim.trace import Trace, parse_trace
from monitor_sim.wire import MALFORMED, Targets, render

from monitor.config import load_config
from monitor.formats.alarm_json import Invalid, decode_alarm, encode_alarm, verify_sig
from monitor.formats.devices import DeviceIndex
from monitor.formats.express import build_express_mail
from monitor.formats.mail import MailReject, MailReports, parse_mail
from monitor.formats.redfish import parse_redfish
from monitor.model import AlarmReport

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.toml"
SMALL = Options(devices=60)  # storm: a small rack keeps this file fast


def text_of(trace: Trace) -> str:
    out = io.StringIO()
    trace.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def sim() -> SimConfig:
    return load_sim_config(EXAMPLE)


@pytest.fixture(scope="module")
def index() -> DeviceIndex:
    return DeviceIndex(load_config(EXAMPLE).devices)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_seed_same_trace_other_seed_other_trace(sim: SimConfig, scenario: str) -> None:
    one = text_of(generate(sim, scenario, 7, SMALL))
    assert one == text_of(generate(sim, scenario, 7, SMALL))
    assert one != text_of(generate(sim, scenario, 8, SMALL))
    head, *lines = one.splitlines()
    assert json.loads(head)["start"]  # SPEC 7's header
    assert lines and all(
        {"at", "channel", "format", "device", "id"} <= json.loads(x).keys() for x in lines
    )
    assert [json.loads(x)["at"] for x in lines] == sorted(json.loads(x)["at"] for x in lines)
    # The trace file reads back to the same trace.
    assert text_of(parse_trace(one.splitlines())) == one


def test_cli_writes_the_same_trace(tmp_path: Path, sim: SimConfig) -> None:
    out = tmp_path / "t.jsonl"
    args = ["generate", "-c", str(EXAMPLE), "--scenario", "flapping", "--seed", "3"]
    assert main([*args, "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == text_of(generate(sim, "flapping", 3))
    assert main(["generate", "-c", str(EXAMPLE), "--scenario", "storm", "--channels", "fax"]) == 2


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_wire_forms_read_back_with_the_daemons_parsers(
    sim: SimConfig, index: DeviceIndex, scenario: str
) -> None:
    trace = generate(sim, scenario, 11, SMALL)
    for rec in trace.records:
        device = sim.device(rec.serial)
        wire = render(rec, Targets())
        want = (rec.id, rec.serial, rec.severity, rec.component, rec.code)
        if rec.channel == "smtp":
            out = parse_mail(wire.payload, wire.target, index)
            if rec.malformed and rec.malformed != "bad-signature":
                assert isinstance(out, MailReject), rec
                assert out.reason == MALFORMED[rec.malformed][1]
                continue
            assert isinstance(out, MailReports), (rec, out)
            assert out.format == rec.format
            got: AlarmReport = out.reports[0]
        elif rec.format == "redfish":
            (item,) = parse_redfish(wire.payload, rec.serial)
            assert isinstance(item, AlarmReport)
            got = item
        else:
            decoded = decode_alarm(wire.payload)
            if rec.malformed in ("not-json", "missing-code", "bad-severity"):
                assert isinstance(decoded, Invalid)
                continue
            assert isinstance(decoded, AlarmReport), rec
            got = decoded
        assert (got.id, got.serial, got.severity, got.component, got.code) == want
        if device is not None and device.secret and rec.format in ("json", "express"):
            assert verify_sig(got, device.secret) == (rec.malformed != "bad-signature")


def test_storm_is_a_rack_in_a_minute_with_resends(sim: SimConfig) -> None:
    trace = generate(sim, "storm", 1)  # the full 1,000
    first = [r for r in trace.records if not r.dup]
    assert len({r.serial for r in trace.records}) == 1000
    assert max(r.at for r in first) < 60
    assert {r.component for r in first} >= {"PSU1", "FAN1"}
    dups = [r for r in trace.records if r.dup]
    origin = {r.id: r.channel for r in first}
    same = sum(1 for r in dups if origin[r.id] == r.channel)
    cross = sum(1 for r in dups if origin[r.id] != r.channel)
    assert same > 100 and cross > 50  # retransmissions and agent fallbacks
    assert Counter(r.format for r in trace.records)["redfish"] > 100  # BMCs push too


def test_weekend_backlog_crosses_a_monday_holiday(sim: SimConfig) -> None:
    trace = generate(sim, "weekend-backlog", 1)
    assert trace.start == datetime.fromisoformat("2026-11-20T17:00:00+09:00")  # a Friday
    end = trace.time_of(trace.end)
    assert end.date() == date(2026, 11, 24) and end.hour == 10  # Tuesday morning
    incidents = trace.expect["incidents"]
    due = Counter(i["due_at"] for i in incidents.values())
    # C-0002 (5x12, jp calendar): Monday 23rd is 勤労感謝の日, so Tuesday.
    c2 = [i for i in incidents.values() if i["contract"] == "C-0002" and i["due_at"]]
    assert c2 and all(i["due_at"] == "2026-11-24T08:30:00+09:00" for i in c2)
    # C-0001 picked tue-sat: its weekend backlog is due on Saturday morning.
    c1 = [i for i in incidents.values() if i["contract"] == "C-0001" and i["due_at"]]
    assert c1 and all(i["due_at"].startswith("2026-11-2") for i in c1)
    assert "2026-11-21T08:30:00+09:00" in due
    # C-0003's plan ignores holidays: Monday 08:30.
    assert any(
        i["due_at"] == "2026-11-23T08:30:00+09:00"
        for i in incidents.values()
        if i["contract"] == "C-0003"
    )
    assert any(i["after_hours"] for i in incidents.values())  # notify-critical at night
    points = trace.expect["checkpoints"]
    assert any(p["deferred"] for p in points) and any(p["raised"] for p in points)


def test_oracle_windows(sim: SimConfig) -> None:
    c1 = Hours(sim, sim.contracts["C-0001"])  # tue-sat 08:30-17:30, jp calendar
    fri_night = datetime.fromisoformat("2026-11-20T18:00:00+09:00")
    assert not c1.in_hours(fri_night)
    assert c1.next_start(fri_night) == datetime.fromisoformat("2026-11-21T08:30:00+09:00")
    assert c1.in_hours(datetime.fromisoformat("2026-11-21T17:29:00+09:00"))
    c4 = Hours(sim, sim.contracts["C-0004"])  # 24x7: one long window
    assert c4.in_hours(fri_night)
    assert c4.next_start(fri_night) is None or c4.next_start(fri_night) > fri_night


def test_load_templates_match_the_encoders() -> None:
    """`load` fills templates for speed; they must say what the encoders say."""
    devices = [SimDevice("JPN0012345"), SimDevice("SIGNED0001", secret="s3cret")]
    for n, device in enumerate(devices):
        report = AlarmReport(
            id=f"r-{n:09d}",
            serial=device.serial,
            severity="major",
            code="PSU-0003",
            message=MESSAGE,
            occurred=None,
            occurred_raw=OCCURRED,
            component="PSU1",
        )
        decoded = decode_alarm(ReportMaker("http", devices, "r").make(n).wire.payload)
        assert isinstance(decoded, AlarmReport)
        assert encode_alarm(decoded) == encode_alarm(replace(report, sig=decoded.sig))
        assert verify_sig(decoded, "s3cret") == bool(device.secret)
        mail = ReportMaker("smtp", devices, "r").make(n).wire.payload
        out = parse_mail(mail, "agent@load.example.jp", DeviceIndex({}))
        assert isinstance(out, MailReports) and out.format == "express"
        assert encode_alarm(out.reports[0]) == encode_alarm(replace(report, sig=decoded.sig))
        reference = build_express_mail(replace(report, sig=decoded.sig), sender="a", to="b")
        assert reference.split(b"\r\n\r\n", 1)[1] in mail


def test_every_scenario_states_expectations(sim: SimConfig) -> None:
    for scenario in SCENARIOS:
        trace = generate(sim, scenario, 2, SMALL)
        assert trace.expect["incidents"], scenario
        assert trace.end >= max(r.at for r in trace.records)
        assert trace.time_of(trace.end) - trace.start < timedelta(days=5)
    mix = generate(sim, "malformed-mix", 2)
    reasons = {reason for _, reason in mix.expect["quarantine"]}
    assert reasons == {reason for _, reason in MALFORMED.values()}
