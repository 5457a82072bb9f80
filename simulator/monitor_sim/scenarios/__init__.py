"""Scenarios: each builds the records of one situation and states (through
`expect.py`) what the daemon should make of them.

    normal-day       a working day of a fleet: faults, recoveries, a few resends
    storm            a rack of 1,000 devices losing a PSU and fans within 60 s
    weekend-backlog  Friday evening to Tuesday morning across a Monday holiday
    flapping         components toggling fault/clear every few minutes
    malformed-mix    good reports among damaged ones on every channel
    mail-zoo         ESMPRO, HP, iLO, iDRAC, smartd, mdadm and express mails
"""

from __future__ import annotations

from collections.abc import Callable

from monitor_sim.scenarios import (
    flapping,
    mail_zoo,
    malformed_mix,
    normal_day,
    storm,
    weekend_backlog,
)
from monitor_sim.scenarios.base import Ctx, Options

# A scenario fills ctx.records (setting ctx.start) and returns its end, in
# seconds after the start.
Build = Callable[[Ctx], float]

SCENARIOS: dict[str, Build] = {
    "normal-day": normal_day.build,
    "storm": storm.build,
    "weekend-backlog": weekend_backlog.build,
    "flapping": flapping.build,
    "malformed-mix": malformed_mix.build,
    "mail-zoo": mail_zoo.build,
}

__all__ = ["SCENARIOS", "Build", "Ctx", "Options"]
