"""Text and JSON views of the hours engine, for `monitor hours`, `monitor fee`
and `GET /api/v1/contracts/{id}/hours` (SPEC 5, 6.2).

Pure: the caller passes the config and the instant; nothing here reads the
clock, prints or exits (that is `monitor.cli`'s job).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from monitor.fees import fee
from monitor.hours import Schedule, Window, format_days, schedule_for
from monitor.model import Config, Contract, PlanSpec

__all__ = ["UnknownContract", "fee_report", "hours_json", "hours_report"]


class UnknownContract(KeyError):
    """No contract with this id in the config."""

    def __init__(self, contract_id: str) -> None:
        super().__init__(contract_id)
        self.contract_id = contract_id

    def __str__(self) -> str:  # KeyError's default str() is the repr
        return f"unknown contract {self.contract_id!r}"


def _contract(config: Config, contract_id: str) -> Contract:
    try:
        return config.contracts[contract_id]
    except KeyError:
        raise UnknownContract(contract_id) from None


def _rfc3339(when: datetime) -> str:
    return when.isoformat()


def _span(window: Window) -> str:
    return f"{_rfc3339(window.start)} .. {_rfc3339(window.end)}"


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _duration(d: timedelta) -> str:
    """The config's own spelling: `"2h"`, `"90m"` -> `"1h30m"`, `"1d"`."""
    seconds = int(d.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _plan_line(name: str, plan: PlanSpec, schedule: Schedule) -> str:
    hours = f"{_hhmm(schedule.hours.start)}-{_hhmm(schedule.hours.end)}"
    if plan.response_nbd:
        response = "nbd"
    elif plan.response is not None:
        response = _duration(plan.response)
    else:
        response = "none"
    return (
        f"{name}: {format_days(schedule.days)} {hours}, calendar {plan.calendar}, "
        f"response {response}"
    )


def hours_report(config: Config, contract_id: str, at: datetime, n: int) -> str:
    """`monitor hours`: in hours or not at `at`, the open window, the next N."""
    contract = _contract(config, contract_id)
    plan = config.plans[contract.plan]
    schedule = schedule_for(config, contract)
    local = at.astimezone(schedule.zone)
    window = schedule.window_at(local)
    lines = [
        f"contract  {contract.id} ({contract.customer})",
        f"plan      {_plan_line(contract.plan, plan, schedule)}",
        f"zone      {schedule.tz}",
        f"at        {_rfc3339(local)} ({local.strftime('%a')})",
        f"in hours  {'yes' if window is not None else 'no'}",
        f"window    {_span(window) if window is not None else '-'}",
    ]
    upcoming = schedule.next_windows(local, n)
    lines.append(f"next {len(upcoming)} window{'' if len(upcoming) == 1 else 's'}:")
    lines.extend(f"  {_span(w)}  ({w.start.strftime('%a')})" for w in upcoming)
    return "\n".join(lines)


def hours_json(schedule: Schedule, at: datetime, n: int) -> dict[str, Any]:
    """Body of `GET /api/v1/contracts/{id}/hours` (SPEC 6.2), times RFC 3339
    in the contract's zone."""
    window = schedule.window_at(at)
    return {
        "in_hours": window is not None,
        "window": None
        if window is None
        else {"start": _rfc3339(window.start), "end": _rfc3339(window.end)},
        "next": [
            {"start": _rfc3339(w.start), "end": _rfc3339(w.end)}
            for w in schedule.next_windows(at, n)
        ],
    }


def fee_report(config: Config, start: datetime, minutes: int, contract_id: str | None) -> str:
    """`monitor fee`: itemised lines; the last line is exactly `total <yen>`.

    Bands are read in the contract's zone, or the daemon's without one.
    Raises UnknownContract, or monitor.fees.TariffError without a tariff.
    """
    tz = config.daemon.timezone
    head = ""
    if contract_id is not None:
        contract = _contract(config, contract_id)
        tz = contract.timezone
        head = f", contract {contract.id}"
    result = fee(config.tariff, tz, start, minutes)
    lines = [f"fee for {minutes} min from {_rfc3339(result.items[0].start)} ({tz}{head})"]
    width = max(len(item.description) for item in result.items)
    lines.extend(
        f"  {_rfc3339(item.start)}  {item.description:<{width}}  {item.amount:>8}"
        for item in result.items
    )
    lines.append(f"total {result.total}")
    return "\n".join(lines)
