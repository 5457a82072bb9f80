"""storm: a rack of 1,000 devices loses a power supply and its fans within 60 s.

Each device's agent reports PSU1 (critical) and then one or two fans
(major) a few seconds later, mostly over MQTT.  One report in ten is
retransmitted on the same channel (a lost PUBACK), one in twenty also goes
out by another channel with the same report id (the agent's fallback), and
a fifth of the BMCs push their own Redfish event for the PSU (a distinct
report of the same fault, which folds into the agent's incident).

The rack is the config's devices in order, topped up with synthetic
serials (`SIMRK00001`…, unknown to the daemon: stored, no incident) when
the config has fewer; `monitor-sim devices` writes a config include with a
whole rack.  The storm starts at 10:00 on a working Thursday.
"""

from __future__ import annotations

from datetime import date

from monitor_sim.scenarios.base import FAULTS, Ctx, service_day
from monitor_sim.simconfig import SimDevice

WINDOW = 60.0
END = 180.0


def rack(ctx: Ctx, size: int) -> list[SimDevice]:
    devices = list(ctx.config.devices[:size])
    for i in range(len(devices), size):
        devices.append(SimDevice(f"SIMRK{i + 1:05d}", "N8100-2801", f"rk{i + 1:05d}"))
    return devices


def build(ctx: Ctx) -> float:
    day = service_day(ctx, ctx.options.start or date(2026, 11, 19), 3)
    ctx.start = ctx.at_local(day, 10)
    rng = ctx.rng
    psu = FAULTS[0]
    weights = {"mqtt": 8, "http": 1, "smtp": 1}
    for device in rack(ctx, ctx.options.devices or 1000):
        t0 = rng.uniform(0, WINDOW - 6)
        channel = ctx.channel(weights)
        fmt = "express" if channel == "smtp" else "json"
        sent = [ctx.report(t0, device, channel, psu, fmt=fmt)]
        for n in range(1, rng.randint(2, 3)):
            fan = (f"FAN{n}", "FAN-0001", "major", f"Fan {n} stopped")
            sent.append(ctx.report(t0 + rng.uniform(0.5, 5), device, channel, fan, fmt=fmt))
        for rec in sent:
            if rng.random() < 0.1:
                ctx.resend(rec, rec.at + rng.uniform(1, 3))
            if rng.random() < 0.05:
                other = [c for c in ("smtp", "serial", "http") if c != rec.channel]
                fallback = ctx.channel({c: 1 for c in other})
                if fallback != rec.channel:
                    ctx.resend(rec, rec.at + rng.uniform(5, 30), channel=fallback)
        if "http" in ctx.options.channels and rng.random() < 0.2:
            ctx.report(
                t0 + rng.uniform(0, 2),
                device,
                "http",
                psu,
                fmt="redfish",
                report_id=f"bmc-{ctx.new_id()[:18]}",
            )
    return END
