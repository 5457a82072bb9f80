"""Fuzz targets: one function of bytes per parser the network reaches.

Each target raises only on a real bug: an exception the parser must never
let out, a refusal without a known reason, or an accepted report that breaks
SPEC 3.1's limits or could not be stored (not valid UTF-8).  `fuzz/run.py`
drives them with atheris (coverage-guided, when it is installed) or with a
plain mutation loop over the corpus.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "agents", ROOT / "simulator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from monitor.formats.alarm_json import (  # noqa: E402
    MAX_FIELD,
    MAX_ID,
    MAX_MESSAGE,
    MAX_SERIAL,
    Invalid,
    decode_alarm,
    verify_sig,
)
from monitor.formats.devices import DeviceIndex  # noqa: E402
from monitor.formats.mail import (  # noqa: E402
    REASONS,
    MailAck,
    MailReject,
    MailReports,
    parse_mail,
    parse_text,
)
from monitor.formats.redfish import RedfishReject, parse_redfish  # noqa: E402
from monitor.frames import AnswerDecoder, FrameDecoder  # noqa: E402
from monitor.listeners.mqtt_payloads import decode_heartbeat, decode_status, route  # noqa: E402
from monitor.model import SEVERITIES, AlarmReport, Device  # noqa: E402
from monitor.modem import ModemEngine, ModemSettings  # noqa: E402

INDEX = DeviceIndex(
    {
        d.serial: d
        for d in (
            Device(
                "JPN0012345",
                "N8100-2801",
                "db01",
                "C-0001",
                secret="s3cret",
                senders=("esmpro@db01.example.jp",),
            ),
            Device("7QX2K3M", "PowerEdge R750", "web03", "C-0004"),
            Device("NAS02-0001", "NAS", "nas02", "C-0005"),
        )
    }
)


class Bug(AssertionError):
    """An invariant broke: this input is a finding."""


def _check_report(r: AlarmReport) -> None:
    if r.severity not in SEVERITIES:
        raise Bug(f"severity {r.severity!r}")
    if not (0 < len(r.id) <= MAX_ID and 0 < len(r.serial) <= MAX_SERIAL):
        raise Bug("id or serial length")
    if not (0 < len(r.code) <= MAX_FIELD) or len(r.message) > MAX_MESSAGE:
        raise Bug("code or message length")
    if r.occurred is not None and r.occurred.tzinfo is None:
        raise Bug("naive occurred")
    for value in (r.id, r.serial, r.code, r.message, r.component, r.model, r.host, r.sig):
        value.encode("utf-8")  # UnicodeEncodeError: the store could not take it
    verify_sig(r, "secret")


def alarm_json(data: bytes) -> None:
    out = decode_alarm(data)
    if isinstance(out, Invalid):
        if out.reason != "invalid":
            raise Bug(out.reason)
    else:
        _check_report(out)


def mail(data: bytes) -> None:
    for outcome in (parse_mail(data, "x@example.jp", INDEX), parse_text(data[:65536], INDEX)):
        if isinstance(outcome, MailReject):
            if outcome.reason not in REASONS or outcome.reason == "parser-error":
                raise Bug(f"{outcome.reason}: {outcome.detail}")
        elif isinstance(outcome, MailReports):
            for r in outcome.reports:
                _check_report(r)
        elif not isinstance(outcome, MailAck):
            raise Bug(repr(outcome))


def redfish(data: bytes) -> None:
    for item in parse_redfish(data, "JPN0012345"):
        if isinstance(item, RedfishReject):
            if item.reason != "invalid":
                raise Bug(item.reason)
        else:
            _check_report(item)


def mqtt(data: bytes) -> None:
    topic, _, payload = data.partition(b"\n")
    route(topic.decode("utf-8", "replace"), "express")
    for out in (decode_heartbeat(payload), decode_status(payload)):
        if isinstance(out, Invalid) and out.reason != "invalid":
            raise Bug(out.reason)


def frames(data: bytes) -> None:
    decoder, answers = FrameDecoder(), AnswerDecoder()
    for at in range(0, len(data), 7):
        decoder.feed(data[at : at + 7])
        answers.feed(data[at : at + 7])


def modem(data: bytes) -> None:
    engine = ModemEngine(ModemSettings(baud=9600, numbers=("0120223042",), idle_timeout=60.0))
    now = 0.0
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        now += (chunk[0] % 4) * 0.4 if chunk else 0.0
        engine.feed(chunk, now)
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= now + 2:
            engine.tick(deadline)


def collectors(data: bytes) -> None:
    from monitor_agent.collectors import CollectorError, CollectorSpec, Sample, make_collector

    kinds = ("ipmi", "smart", "mdstat", "edac", "sensors")
    kind = kinds[data[0] % len(kinds)] if data else "ipmi"
    spec = CollectorSpec(
        name=kind,
        type=kind,
        command=("true",),
        path=None,
        interval=timedelta(seconds=60),
        timeout=timedelta(seconds=60),
    )
    collector = make_collector(spec, "JPN0012345")
    memory: dict[str, object] = {}
    now = datetime(2026, 11, 20, tzinfo=UTC)
    for part in data[1:].split(b"\x00\x00"):
        now += timedelta(minutes=1)
        try:
            findings, memory = collector.evaluate(
                Sample(part.decode("utf-8", "replace")), memory, now
            )
        except CollectorError:
            continue
        memory = json.loads(json.dumps(memory))
        for f in findings:
            if f.severity not in SEVERITIES or not f.id:
                raise Bug(repr(f))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "alarm_json": alarm_json,
    "mail": mail,
    "redfish": redfish,
    "mqtt": mqtt,
    "frames": frames,
    "modem": modem,
    "collectors": collectors,
}


def corpus(name: str) -> list[bytes]:
    """Seeds for a target: fixtures where the repository has them."""
    fixtures = ROOT / "tests" / "fixtures"
    seeds: list[bytes] = [b"", b"{}", b"\x00"]
    if name in ("mail",):
        seeds += [p.read_bytes() for p in sorted((fixtures / "mail").glob("*.eml"))]
    if name in ("alarm_json", "frames", "modem"):
        good = (
            b'{"v":1,"id":"r-1","serial":"JPN0012345","severity":"critical",'
            b'"code":"PSU-0003","message":"Power supply 1 failure detected"}'
        )
        seeds += [good, b"ATE0V1\rATDT0120223042\r\x02" + good + b"\x0329B1\r\x04"]
    if name == "redfish":
        seeds.append(
            b'{"Events":[{"EventId":"1","MessageId":"Base.1.0.PowerSupplyFailed",'
            b'"MessageSeverity":"Critical","OriginOfCondition":{"@odata.id":"/r/1"}}]}'
        )
    if name == "mqtt":
        seeds += [
            b'express/heartbeat/JPN0012345\n{"v":1,"serial":"JPN0012345","interval":60}',
            b"express/status/JPN0012345\nonline",
        ]
    if name == "collectors":
        for i, p in enumerate(sorted((fixtures / "agent").glob("*"))):
            if p.suffix in (".txt", ".json"):
                seeds.append(bytes([i]) + p.read_bytes())
    return seeds
