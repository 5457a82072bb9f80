"""normal-day: one working day (a Thursday that is no holiday) of the fleet.

Each device reports one to three faults at random times over the day, on
the channel its agent happens to use (mostly MQTT); about a third recover
(`clear`) within the hour; one report in ten is retransmitted.  Express
mails come in UTF-8, ISO-2022-JP or Shift_JIS.

Expected: every report stored once; one incident per covered fingerprint;
those opened before 08:30 or after the window deferred to the next window
start, the rest raised at once (per each contract's plan).
"""

from __future__ import annotations

from datetime import date

from monitor_sim.scenarios.base import FAULTS, Ctx, fleet, service_day

DAY = 24 * 3600.0
CHARSETS = ("utf-8", "iso-2022-jp", "shift_jis")


def build(ctx: Ctx) -> float:
    day = service_day(ctx, ctx.options.start or date(2026, 11, 19), 3)
    ctx.start = ctx.at_local(day, 0)
    rng = ctx.rng
    for device in fleet(ctx):
        for _ in range(rng.randint(1, 3)):
            at = ctx.clear_of_edges(device, rng.uniform(600, DAY - 7200))
            channel = ctx.channel({"mqtt": 5, "http": 2, "smtp": 2, "serial": 1})
            smtp = channel == "smtp"
            fault = rng.choice(FAULTS)
            rec = ctx.report(
                at,
                device,
                channel,
                fault,
                fmt="express" if smtp else "json",
                charset=rng.choice(CHARSETS) if smtp else "",
            )
            if rng.random() < 0.3:
                back = ctx.clear_of_edges(device, at + rng.uniform(600, 3600))
                ctx.report(
                    back,
                    device,
                    channel,
                    fault,
                    fmt=rec.format,
                    severity="clear",
                    charset=rec.charset,
                )
            if rng.random() < 0.1:
                ctx.resend(rec, at + rng.uniform(2, 10))
    return DAY
