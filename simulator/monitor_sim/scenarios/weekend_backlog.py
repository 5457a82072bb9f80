"""weekend-backlog: Friday 17:00 to Tuesday 10:30 across a Monday holiday.

The Friday is the first one on or after `--start` (default 2026-11-01)
whose Monday is a national holiday of the config's calendar country
(2026-11-23, 勤労感謝の日, by default).  Every device reports a fault on
Friday evening and a few more, repeats and recoveries through the weekend
and the holiday; a few report again on Tuesday morning.

Expected: on 5-day plans with a holiday calendar the weekend's incidents
stay deferred until Tuesday's window start and are raised then; plans
whose days include Saturday or that ignore holidays raise theirs at their
own next window; 24x7 contracts raise at once; critical alarms on
`notify-critical` contracts are raised at once as after-hours.  The
checkpoints look just before and just after each due time.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from monitor_sim.oracle import is_service_day
from monitor_sim.scenarios.base import FAULTS, Ctx, fleet, holiday_country, next_weekday
from monitor_sim.simconfig import SimCalendar


def holiday_friday(ctx: Ctx, since: date) -> date:
    cal = SimCalendar(holidays=holiday_country(ctx))
    friday = next_weekday(since, 4)
    for _ in range(520):  # ten years of Fridays
        if not is_service_day(friday + timedelta(days=3), cal):
            return friday
        friday += timedelta(days=7)
    raise ValueError("no Friday before a Monday holiday in ten years")


def build(ctx: Ctx) -> float:
    friday = holiday_friday(ctx, ctx.options.start or date(2026, 11, 1))
    ctx.start = ctx.at_local(friday, 17)
    tuesday = friday + timedelta(days=4)
    end = _secs(ctx, ctx.at_local(tuesday, 10, 30))
    weekend_end = _secs(ctx, ctx.at_local(tuesday, 8, 0))
    rng = ctx.rng
    weights = {"mqtt": 5, "smtp": 2, "http": 2, "serial": 1}
    for device in fleet(ctx):
        contract = ctx.config.contracts.get(device.contract)
        critical_first = contract is not None and contract.after_hours == "notify-critical"
        faults = list(FAULTS)
        rng.shuffle(faults)
        if critical_first:
            faults.insert(0, FAULTS[0])
        at = ctx.clear_of_edges(device, rng.uniform(2700, 6 * 3600))  # Friday evening
        for fault in faults[: rng.randint(2, 4)]:
            channel = ctx.channel(weights)
            fmt = "express" if channel == "smtp" else "json"
            rec = ctx.report(at, device, channel, fault, fmt=fmt)
            for _ in range(rng.randint(0, 2)):  # the fault keeps being reported
                again = ctx.clear_of_edges(device, rng.uniform(at + 600, weekend_end))
                ctx.report(again, device, channel, fault, fmt=fmt)
            if rng.random() < 0.1:
                ctx.resend(rec, at + rng.uniform(2, 20))
            at = ctx.clear_of_edges(device, rng.uniform(at, weekend_end))
        if rng.random() < 0.5:  # Tuesday morning, in hours for most plans
            morning = ctx.clear_of_edges(device, end - rng.uniform(600, 1500))
            ctx.report(morning, device, ctx.channel(weights), rng.choice(FAULTS))
    return end


def _secs(ctx: Ctx, when: datetime) -> float:
    return (when - ctx.start).total_seconds()
