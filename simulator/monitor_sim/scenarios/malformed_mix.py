"""malformed-mix: good reports among damaged ones, on every channel.

Ten minutes from 10:00 on a working Thursday: 40 good reports spread over
the channels, and two of every kind of damage each channel can carry
(`wire.MALFORMED`): JSON cut in half, a missing `code`, an unknown
severity, a wrong signature (devices with a `secret` only), an MQTT topic
naming another serial, a mail that is no alarm, a vendor mail from no
configured device.

Expected: the good ones stored once each; none of the damaged ones stored;
each damaged one quarantined with its reason; senders told so where the
channel can (HTTP 400, SMTP 550, serial NAK; MQTT's PUBACK comes from the
broker).
"""

from __future__ import annotations

from datetime import date

from monitor_sim.scenarios.base import FAULTS, Ctx, fleet, service_day
from monitor_sim.simconfig import SimDevice
from monitor_sim.wire import MALFORMED

GOOD = 40
SPAN = 600.0
GHOST = SimDevice("ZZGHOST0001", "PowerEdge R650", "ghost-web01")


def build(ctx: Ctx) -> float:
    day = service_day(ctx, ctx.options.start or date(2026, 11, 19), 3)
    ctx.start = ctx.at_local(day, 10)
    rng = ctx.rng
    devices = fleet(ctx)
    unsigned = [d for d in devices if not d.secret] or devices
    signed = [d for d in devices if d.secret]
    weights = {"mqtt": 1, "http": 1, "smtp": 1, "serial": 1}
    for _ in range(GOOD):
        channel = ctx.channel(weights)
        ctx.report(
            rng.uniform(0, SPAN),
            rng.choice(devices),
            channel,
            rng.choice(FAULTS),
            fmt="express" if channel == "smtp" else "json",
        )
    for kind, (channels, _reason) in MALFORMED.items():
        for channel in channels:
            if channel not in ctx.options.channels:
                continue
            for _ in range(2):
                if kind == "bad-signature":
                    if not signed:
                        continue
                    device = rng.choice(signed)
                elif kind == "unknown-device":
                    device = GHOST
                else:
                    device = rng.choice(unsigned)
                fmt = {"unknown-device": "idrac", "bad-signature": "express"}.get(kind, "json")
                fault = (
                    "PSU",
                    "PSU0003",
                    "critical",
                    "The power input for power supply 2 is lost.",
                )
                ctx.report(
                    rng.uniform(0, SPAN),
                    device,
                    channel,
                    fault if kind == "unknown-device" else rng.choice(FAULTS),
                    fmt=fmt if channel == "smtp" else "json",
                    malformed=kind,
                )
    return SPAN + 60
