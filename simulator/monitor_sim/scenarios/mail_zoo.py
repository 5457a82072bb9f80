"""mail-zoo: what servers really mail (SPEC 3.3), in their charsets.

Half an hour from 10:00 on a working Thursday, over SMTP: NEC ESMPRO
reports in ISO-2022-JP, Shift_JIS and UTF-8; HP AlertMail (a fan failing,
then NORMAL) and an iLO mail; Dell iDRAC alerts (a fan warning, then Ok);
smartd warnings; mdadm Fail then RebuildFinished; and the native express
report in all three Japanese charsets.

ESMPRO, HP and iDRAC mails name the device's serial in their text; smartd
and mdadm only the host, so those go to devices whose host name resolves
to exactly one device.  Devices with a `secret` get only express mails
(vendor mails cannot carry a signature).

Expected: each mail stored once as the format's SPEC 3.3 mapping says
(severity, component, code, report id = Message-ID); clears mark their
incident recovered.
"""

from __future__ import annotations

import re
from datetime import date

from monitor_sim.scenarios.base import Ctx, fleet, service_day
from monitor_sim.simconfig import SimDevice

SPAN = 1800.0
# (format, component, code, severity, message, charset)
ZOO: tuple[tuple[str, str, str, str, str, str], ...] = (
    (
        "esmpro",
        "ESMCommonService",
        "C0000837",
        "critical",
        "電源ユニット2で障害を検出しました。",
        "iso-2022-jp",
    ),
    (
        "esmpro",
        "ESMCommonService",
        "800003FE",
        "warning",
        "DIMM #5 で訂正可能エラーがしきい値を超えました。",
        "shift_jis",
    ),
    (
        "esmpro",
        "ESMDiskArray",
        "40001004",
        "info",
        "論理ドライブ0の整合性チェックが完了しました。",
        "utf-8",
    ),
    ("hp", "Power Supply #4", "Failed", "critical", "Power Supply #4: Failed", ""),
    ("hp", "Fan #6", "Failed", "major", "Fan #6: Failed", ""),
    ("hp", "Fan #6", "OK", "clear", "Fan #6: OK", ""),
    (
        "ilo",
        "Hardware Failure",
        "0x1A3",
        "critical",
        "Uncorrectable Memory Error detected on Processor 2 DIMM 7.",
        "",
    ),
    ("idrac", "PSU", "PSU0003", "critical", "The power input for power supply 2 is lost.", ""),
    (
        "idrac",
        "FAN",
        "FAN0001",
        "warning",
        "Fan 4 RPM is less than the lower warning threshold.",
        "",
    ),
    ("idrac", "FAN", "FAN0001", "clear", "Fan 4 RPM is back to normal.", ""),
    (
        "smartd",
        "/dev/sdc",
        "CurrentPendingSector",
        "major",
        "16 Currently unreadable (pending) sectors",
        "",
    ),
    (
        "smartd",
        "/dev/sda",
        "FailedHealthCheck",
        "critical",
        "FAILED SMART self-check. BACK UP DATA NOW!",
        "",
    ),
    ("mdadm", "/dev/md1", "Fail", "major", "", ""),
    ("mdadm", "/dev/md1", "RebuildFinished", "clear", "", ""),
    ("express", "PSU1", "PSU-0003", "critical", "電源ユニット1の障害を検出しました", "utf-8"),
    (
        "express",
        "DIMM5",
        "MEM-0101",
        "warning",
        "メモリ訂正可能エラーがしきい値を超えました",
        "iso-2022-jp",
    ),
    ("express", "FAN1", "FAN-0001", "major", "ファンが停止しました", "shift_jis"),
)
BY_HOST = ("smartd", "mdadm")


def _found(needle: str, text: str) -> bool:
    return re.search(rf"(?<![0-9a-z_]){re.escape(needle.lower())}(?![0-9a-z_])", text) is not None


def host_resolvable(devices: list[SimDevice], device: SimDevice) -> bool:
    """Only this device's host (and no serial) is found in a text naming its host."""
    if not device.host or device.secret:
        return False
    text = f"{device.host}.example.net".lower()
    for other in devices:
        if other is device:
            continue
        if (other.host and _found(other.host, text)) or _found(other.serial, text):
            return False
        if other.host and _found(device.host, other.host.lower()):
            return False
    return True


def build(ctx: Ctx) -> float:
    if "smtp" not in ctx.options.channels:
        raise ValueError("mail-zoo needs the smtp channel")
    day = service_day(ctx, ctx.options.start or date(2026, 11, 19), 3)
    ctx.start = ctx.at_local(day, 10)
    rng = ctx.rng
    devices = fleet(ctx)
    unsigned = [d for d in devices if not d.secret] or devices
    by_host = [d for d in devices if host_resolvable(devices, d)] or unsigned
    # One device per format, so a clear meets its own fault.
    chosen: dict[str, SimDevice] = {}
    at = 30.0
    for fmt, component, code, severity, message, charset in ZOO:
        pool = by_host if fmt in BY_HOST else (devices if fmt == "express" else unsigned)
        device = chosen.setdefault(fmt, rng.choice(pool))
        if fmt == "mdadm":
            message = f"A {code} event had been detected on md device {component}."
        report_id = (
            None
            if fmt == "express"
            else f"{fmt}-{ctx.new_id()[:13]}@{device.host or 'bmc'}.example"
        )
        ctx.report(
            at,
            device,
            "smtp",
            (component, code, severity, message),
            fmt=fmt,
            charset=charset,
            report_id=report_id,
        )
        at += rng.uniform(30, SPAN / len(ZOO))
    return SPAN
