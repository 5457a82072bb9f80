"""`schedule_for(config, contract)`: the Schedule a contract runs on.

Schedules are shared by everything with the same (days, hours, calendar,
zone, response), so a thousand contracts on one plan share one set of window
caches, and a SIGHUP that leaves a plan alone keeps its warm caches.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from monitor.hours.schedule import Schedule
from monitor.model import CalendarSpec, Config, Contract, TimeRange

__all__ = ["schedule_for"]

# id(config) -> (config, {contract id: Schedule}).  The config itself is kept
# in the entry and compared with `is`, because an id can be reused once a
# replaced config is garbage-collected.  A few entries cover a reload in
# progress (old and new config both in use for a moment).
_BY_CONFIG: dict[int, tuple[Config, dict[str, Schedule]]] = {}
_MAX_CONFIGS = 4


@lru_cache(maxsize=1024)
def _shared(
    days: frozenset[int],
    hours: TimeRange,
    calendar: CalendarSpec | None,
    tz: str,
    response: timedelta | None,
    response_nbd: bool,
) -> Schedule:
    return Schedule(days, hours, calendar, tz, response, response_nbd)


def schedule_for(config: Config, contract: Contract) -> Schedule:
    """The contract's schedule: its plan's hours and calendar, the contract's
    days override and zone.  KeyError if the plan or calendar is missing
    (config validation prevents that)."""
    entry = _BY_CONFIG.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_BY_CONFIG) >= _MAX_CONFIGS:
            _BY_CONFIG.pop(next(iter(_BY_CONFIG)))
        entry = _BY_CONFIG[id(config)] = (config, {})
    by_contract = entry[1]
    got = by_contract.get(contract.id)
    if got is None:
        plan = config.plans[contract.plan]
        calendar = None if plan.calendar == "none" else config.calendars[plan.calendar]
        got = by_contract[contract.id] = _shared(
            contract.days if contract.days is not None else plan.days,
            plan.hours,
            calendar,
            contract.timezone,
            plan.response,
            plan.response_nbd,
        )
    return got
