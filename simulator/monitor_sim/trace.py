"""The trace file of SPEC 7: JSON lines, a header, then one line per report.

    {"start": "2026-11-20T17:00:00+09:00", "scenario": "weekend-backlog", "seed": 1, ...}
    {"at": 3600.0, "channel": "mqtt", "format": "json", "device": "JPN0012345",
     "v": 1, "id": "…", "serial": "JPN0012345", "severity": "major", …}

`start` is the scenario's absolute start; `at` is seconds after it.  A
record carries the 3.1 fields the daemon should end up storing (for a
vendor mail: what the mail maps to, SPEC 3.3's table), so a replay can
compare the stored alarm with it.  Optional keys:

- `dup`: this is a retransmission (same channel) or a cross-channel
  duplicate of an earlier report with the same id: the daemon acknowledges
  it and stores nothing new;
- `malformed`: how the wire form is damaged (see `wire.py`); the daemon
  must refuse it (quarantine), not store it;
- `charset`: the mail charset (`utf-8`, `iso-2022-jp`, `shift_jis`).

Header keys beyond `start` (`scenario`, `seed`, `end`, `expect`) are the
simulator's own: what the scenario expects, so `replay` needs nothing but
the trace to check the daemon.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

ALARM_FIELDS = (
    "v",
    "id",
    "serial",
    "model",
    "host",
    "occurred",
    "severity",
    "component",
    "code",
    "message",
    "sig",
)
CHANNELS = ("http", "smtp", "mqtt", "serial")


@dataclass(slots=True)
class Record:
    at: float
    channel: str
    format: str
    device: str
    id: str
    serial: str
    severity: str
    code: str
    message: str
    component: str = ""
    model: str = ""
    host: str = ""
    occurred: str = ""
    sig: str = ""
    dup: bool = False
    malformed: str = ""
    charset: str = ""

    def alarm(self) -> dict[str, Any]:
        """The SPEC 3.1 object of this report (optional fields only when set)."""
        obj: dict[str, Any] = {"v": 1, "id": self.id, "serial": self.serial}
        for name in ("model", "host", "occurred"):
            if value := getattr(self, name):
                obj[name] = value
        obj["severity"] = self.severity
        if self.component:
            obj["component"] = self.component
        obj["code"] = self.code
        obj["message"] = self.message
        if self.sig:
            obj["sig"] = self.sig
        return obj

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": round(self.at, 3),
            "channel": self.channel,
            "format": self.format,
            "device": self.device,
            **self.alarm(),
        }
        if self.dup:
            out["dup"] = True
        if self.malformed:
            out["malformed"] = self.malformed
        if self.charset:
            out["charset"] = self.charset
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        return cls(
            at=float(obj["at"]),
            channel=str(obj["channel"]),
            format=str(obj.get("format", "json")),
            device=str(obj.get("device", obj.get("serial", ""))),
            id=str(obj["id"]),
            serial=str(obj.get("serial", "")),
            severity=str(obj.get("severity", "")),
            code=str(obj.get("code", "")),
            message=str(obj.get("message", "")),
            component=str(obj.get("component", "")),
            model=str(obj.get("model", "")),
            host=str(obj.get("host", "")),
            occurred=str(obj.get("occurred", "")),
            sig=str(obj.get("sig", "")),
            dup=bool(obj.get("dup", False)),
            malformed=str(obj.get("malformed", "")),
            charset=str(obj.get("charset", "")),
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.serial}/{self.component}/{self.code}"


@dataclass
class Trace:
    start: datetime
    records: list[Record]
    scenario: str = ""
    seed: int = 0
    end: float = 0.0  # seconds after start the scenario runs to (>= the last `at`)
    expect: dict[str, Any] = field(default_factory=dict)

    def time_of(self, at: float) -> datetime:
        return self.start + timedelta(seconds=at)

    def header(self) -> dict[str, Any]:
        head: dict[str, Any] = {"start": self.start.isoformat()}
        if self.scenario:
            head["scenario"] = self.scenario
            head["seed"] = self.seed
        head["end"] = round(self.end, 3)
        if self.expect:
            head["expect"] = self.expect
        return head

    def lines(self) -> Iterator[str]:
        yield _dumps(self.header())
        for rec in self.records:
            yield _dumps(rec.to_json())

    def write(self, out: IO[str]) -> None:
        for line in self.lines():
            out.write(line + "\n")


def _dumps(obj: dict[str, Any]) -> str:
    # Compact, key order as built, non-ASCII kept: diffable and deterministic.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def parse_trace(lines: Iterable[str]) -> Trace:
    it = (line for line in lines if line.strip())
    try:
        head = json.loads(next(it))
    except StopIteration:
        raise ValueError("empty trace") from None
    if not isinstance(head, dict) or "start" not in head:
        raise ValueError('the first line of a trace must be {"start": TIME, …}')
    start = datetime.fromisoformat(str(head["start"]))
    if start.tzinfo is None:
        raise ValueError("trace start needs an offset")
    records = [Record.from_json(json.loads(line)) for line in it]
    last = max((r.at for r in records), default=0.0)
    return Trace(
        start=start,
        records=records,
        scenario=str(head.get("scenario", "")),
        seed=int(head.get("seed", 0)),
        end=max(float(head.get("end", 0.0)), last),
        expect=dict(head.get("expect", {})),
    )


def read_trace(path: str | Path) -> Trace:
    with open(path, encoding="utf-8") as f:
        return parse_trace(f)
