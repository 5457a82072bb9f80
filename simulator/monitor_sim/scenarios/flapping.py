"""flapping: components toggling between fault and clear every few minutes.

Up to three devices, from 09:00 on a working Thursday, each flap one
component 10–20 times (a fault, then its `clear` 1–5 minutes later); half
end on a fault.  A fourth keeps flapping across 17:30, the end of the
5-day plans' window.

Expected: one incident per flapping fingerprint (never a new one per
flap), its `count` the number of faults, `recovered_at` set exactly when
the last report was a clear.
"""

from __future__ import annotations

from datetime import date

from monitor_sim.scenarios.base import FAULTS, Ctx, fleet, service_day


def build(ctx: Ctx) -> float:
    day = service_day(ctx, ctx.options.start or date(2026, 11, 19), 3)
    ctx.start = ctx.at_local(day, 9)
    rng = ctx.rng
    devices = fleet(ctx)[:4]
    end = 0.0
    for i, device in enumerate(devices):
        fault = rng.choice(FAULTS)
        channel = ctx.channel({"mqtt": 3, "http": 2, "serial": 1})
        at = 60.0 + i * 30 if i < 3 else 8 * 3600.0 + 600  # the 4th from 17:10
        for _ in range(rng.randint(10, 20)):
            at = ctx.clear_of_edges(device, at)
            ctx.report(at, device, channel, fault)
            at = ctx.clear_of_edges(device, at + rng.uniform(60, 300))
            ctx.report(at, device, channel, fault, severity="clear")
            at += rng.uniform(60, 300)
        if rng.random() < 0.5:
            at = ctx.clear_of_edges(device, at)
            ctx.report(at, device, channel, fault)
            at += 60
        end = max(end, at + 300)
    return end
