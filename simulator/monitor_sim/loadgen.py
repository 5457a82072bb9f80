"""Fresh reports for `load`, cheap to make.

A load run makes tens of thousands of reports a second on a machine it
shares with the daemon, so the wire bytes come from a template filled with
one `%` operation (plus an HMAC for devices with a secret) instead of the
general encoders.  A test checks the template against `encode_alarm` and
`build_express_mail`, so both paths say the same thing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from monitor_sim.simconfig import SimDevice
from monitor_sim.wire import Wire

OCCURRED = "2026-11-20T10:00:00+09:00"
COMPONENT = "PSU1"
CODE = "PSU-0003"
SEVERITY = "major"
# Padded so a JSON alarm is ~300 bytes, PERF.md's payload size.
MESSAGE = "Power supply 1 failure detected (load test)" + " ." * 60

_JSON = (
    '{"v":1,"id":"%s","serial":"%s","occurred":"'
    + OCCURRED
    + '","severity":"'
    + SEVERITY
    + '","component":"'
    + COMPONENT
    + '","code":"'
    + CODE
    + '","message":"'
    + MESSAGE
    + '"%s}'
)
_MAIL = (
    "From: agent@load.example.jp\r\nTo: %s\r\n"
    "Subject: [EXPRESS-REPORT] %s " + SEVERITY + " " + CODE + "\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n\r\n"
    "Report-Id: %s\r\nSerial: %s\r\nModel: \r\nHost: \r\nOccurred: " + OCCURRED + "\r\n"
    "Severity: " + SEVERITY + "\r\nComponent: " + COMPONENT + "\r\nCode: " + CODE + "\r\n"
    "Message: " + MESSAGE + "\r\n%s"
)


def signature(report_id: str, serial: str, secret: str) -> str:
    text = "\n".join((report_id, serial, OCCURRED, SEVERITY, COMPONENT, CODE, MESSAGE))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class LoadReport:
    id: str
    serial: str
    wire: Wire


class ReportMaker:
    def __init__(
        self,
        channel: str,
        devices: list[SimDevice],
        run: str,
        *,
        topic_prefix: str = "express",
        mail_to: str = "alarms@monitor.example",
    ) -> None:
        if not devices:
            raise ValueError("no devices to report for")
        self.channel = channel
        self.devices = devices
        self.run = run
        self.prefix = topic_prefix
        self.mail_to = mail_to

    def report_id(self, n: int) -> str:
        return f"{self.run}-{n:09d}"

    def make(self, n: int) -> LoadReport:
        device = self.devices[n % len(self.devices)]
        rid, serial = self.report_id(n), device.serial
        sig = signature(rid, serial, device.secret) if device.secret else ""
        if self.channel == "smtp":
            tail = f"Signature: {sig}\r\n" if sig else ""
            mail = _MAIL % (self.mail_to, serial, rid, serial, tail)
            return LoadReport(
                rid, serial, Wire("smtp", "agent@load.example.jp", mail.encode(), rid)
            )
        payload = (_JSON % (rid, serial, f',"sig":"{sig}"' if sig else "")).encode()
        if self.channel == "http":
            target = "/api/v1/alarms"
        elif self.channel == "mqtt":
            target = f"{self.prefix}/alarm/{serial}"
        else:
            target = ""
        return LoadReport(rid, serial, Wire(self.channel, target, payload, rid))


def synthetic_devices(count: int = 64) -> list[SimDevice]:
    """Serials no config has (SPEC 7's default): stored as `unknown-device`."""
    return [SimDevice(f"SIMLOAD{i:05d}") for i in range(1, count + 1)]
