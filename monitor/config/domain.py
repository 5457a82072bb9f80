"""The domain tables: calendars, plans, contracts, devices, API tokens.

They may come from several files (`include`), so each builder takes the
entries of every file in load order, reports duplicates with both places,
and checks references by *declared* name: an invalid plan still counts as
existing, so one mistake is reported once, not again by every contract that
names it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import date, timedelta
from typing import Literal

from monitor.config.fields import (
    as_date,
    as_days,
    as_duration,
    as_email,
    as_hex64,
    as_nonempty,
    as_url,
    as_zone,
    choice,
    q,
)
from monitor.config.table import Table, as_bool, as_int, as_str
from monitor.config.values import format_days, is_consecutive, parse_hours
from monitor.model import (
    ROLES,
    AfterHours,
    ApiToken,
    CalendarSpec,
    Contact,
    Contract,
    Device,
    PlanSpec,
    Role,
    TimeRange,
)

__all__ = [
    "build_calendars",
    "build_contracts",
    "build_devices",
    "build_plans",
    "build_tokens",
]

# The `holidays` import costs ~80 ms and most reloads repeat the same codes.


@functools.cache
def _holiday_code_ok(code: str) -> bool:
    import holidays  # lazy: only configs with holiday calendars pay for it

    try:
        holidays.country_holidays(code)
    except NotImplementedError:
        return False
    return True


def _holidays(value: object) -> str:
    code = as_str(value)
    if code and not _holiday_code_ok(code):
        raise ValueError(f"{q(code)} is not a country code known to the holidays package")
    return code


_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _full_date(value: object) -> date:
    if isinstance(value, date):
        return as_date(value)  # refuses datetimes
    text = as_str(value)
    if not _FULL_DATE.fullmatch(text):
        raise ValueError(f'{q(text)} is not a date "YYYY-MM-DD"')
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{q(text)} is not a valid date") from None


def _closed(value: object) -> date | tuple[int, int]:
    """`"MM-DD"` (every year) or a full date."""
    if isinstance(value, str) and (m := _MONTH_DAY.fullmatch(value)):
        month, day = int(m.group(1)), int(m.group(2))
        try:
            date(2000, month, day)  # a leap year, so 02-29 is accepted
        except ValueError:
            raise ValueError(f"{q(value)} is not a valid month-day") from None
        return (month, day)
    if isinstance(value, str) and not _FULL_DATE.fullmatch(value):
        raise ValueError(f'{q(value)} is not "MM-DD" (every year) or "YYYY-MM-DD"')
    return _full_date(value)


def build_calendars(entries: list[tuple[str, Table]]) -> tuple[dict[str, CalendarSpec], set[str]]:
    out: dict[str, CalendarSpec] = {}
    first: dict[str, Table] = {}
    for name, t in entries:
        code = t.get("holidays", _holidays, "")
        closed = t.array("closed", _closed) or ()
        opened = t.array("open", _full_date) or ()
        t.close()
        if name == "none":
            t.error(None, 'the name "none" is reserved (a plan\'s calendar = "none": every day)')
            continue
        if name in first:
            t.error(None, f"duplicate calendar {q(name)} (also at {first[name].where()})")
            continue
        first[name] = t
        out[name] = CalendarSpec(
            name=name,
            holidays=code,
            closed_annual=frozenset(c for c in closed if isinstance(c, tuple)),
            closed_dates=frozenset(c for c in closed if isinstance(c, date)),
            open_dates=frozenset(opened),
        )
    return out, set(first)


def _response(value: object) -> timedelta | Literal["nbd"]:
    """`"nbd"` (next business day) or a duration of service time."""
    text = as_str(value)
    if text == "nbd":
        return "nbd"
    try:
        return as_duration(text)
    except ValueError as e:
        raise ValueError(f'{e}, or "nbd"') from None


def _hours(value: object) -> TimeRange:
    return parse_hours(as_str(value))


def _days_text(t: Table, key: str) -> str:
    raw = t.data.get(key)
    return q(raw) if isinstance(raw, str) else format_days(as_days(raw))


def build_plans(
    entries: list[tuple[str, Table]], calendars: set[str]
) -> tuple[dict[str, PlanSpec], set[str]]:
    out: dict[str, PlanSpec] = {}
    first: dict[str, Table] = {}
    for name, t in entries:
        days = t.get("days", as_days, required=True)
        consecutive = t.get("consecutive", as_int(1, 7))
        hours = t.get("hours", _hours, required=True)
        calendar = t.get("calendar", as_nonempty, required=True)
        if calendar is not None and calendar != "none" and calendar not in calendars:
            known = ", ".join(q(c) for c in sorted(calendars)) or "none defined"
            t.error("calendar", f'unknown calendar {q(calendar)} (known: {known}; or "none")')
        response = t.get("response", _response, required=True)
        t.close()
        if days is not None and consecutive is not None and not _fits(days, consecutive):
            t.error(
                "days",
                f"{_days_text(t, 'days')} is not {consecutive} consecutive days "
                f"(consecutive = {consecutive})",
            )
        if name in first:
            t.error(None, f"duplicate plan {q(name)} (also at {first[name].where()})")
            continue
        first[name] = t
        if days is None or hours is None or calendar is None or response is None:
            continue
        out[name] = PlanSpec(
            name=name,
            days=days,
            consecutive=consecutive,
            hours=hours,
            calendar=calendar,
            response=None if response == "nbd" else response,
            response_nbd=response == "nbd",
        )
    return out, set(first)


def _fits(days: frozenset[int], n: int) -> bool:
    return is_consecutive(days, n)


def _contact(t: Table) -> Contact | None:
    name = t.get("name", as_nonempty, required=True)
    email = t.get("email", as_email)
    webhook = t.get("webhook", as_url("http", "https"))
    t.close()
    if "email" not in t.data and "webhook" not in t.data:
        t.error(None, "a contact needs an email, a webhook or both")
    if name is None or (email is None and webhook is None):
        return None
    return Contact(name=name, email=email, webhook=webhook)


_AFTER_HOURS: dict[str, AfterHours] = {"defer": "defer", "notify-critical": "notify-critical"}


def build_contracts(
    entries: list[Table],
    plans: dict[str, PlanSpec],
    plan_names: set[str],
    default_timezone: str,
) -> tuple[dict[str, Contract], set[str]]:
    out: dict[str, Contract] = {}
    first: dict[str, Table] = {}
    for t in entries:
        cid = t.get("id", as_nonempty, required=True)
        customer = t.get("customer", as_str, "")
        plan = t.get("plan", as_nonempty, required=True)
        if plan is not None and plan not in plan_names:
            known = ", ".join(q(p) for p in sorted(plan_names)) or "none defined"
            t.error("plan", f"unknown plan {q(plan)} (known: {known})")
        days = t.get("days", as_days)
        spec = plans.get(plan) if plan is not None else None
        if days is not None and spec is not None and spec.consecutive is not None:
            n = spec.consecutive
            if not _fits(days, n):
                what = f"is {len(days)} days" if len(days) != n else f"is not {n} consecutive days"
                t.error(
                    "days",
                    f"{_days_text(t, 'days')} {what}; plan {q(spec.name)} needs exactly "
                    f"{n} consecutive days (consecutive = {n})",
                )
        timezone = t.get("timezone", as_zone, default_timezone)
        start = t.get("start", as_date, required=True)
        years = t.get("years", as_int(1, 10), required=True)
        registered = t.get("registered", as_bool, True)
        after = t.get("after_hours", choice(*_AFTER_HOURS), "defer")
        ack_timeout = t.get("ack_timeout", as_duration, timedelta(minutes=30))
        contacts = [c for c in map(_contact, t.tables("contacts", "array of contacts")) if c]
        t.close()
        if cid is None:
            continue
        if cid in first:
            t.error("id", f"duplicate contract id {q(cid)} (also at {first[cid].where('id')})")
            continue
        first[cid] = t
        if plan is None or start is None or years is None:
            continue
        out[cid] = Contract(
            id=cid,
            customer=customer,
            plan=plan,
            days=days,
            timezone=timezone,
            start=start,
            years=years,
            registered=registered,
            after_hours=_AFTER_HOURS[after],
            ack_timeout=ack_timeout,
            contacts=tuple(contacts),
        )
    return out, set(first)


def _serial(value: object) -> str:
    text = as_nonempty(value)
    if len(text) > 64:
        raise ValueError("must be at most 64 characters (the alarm schema's limit)")
    return text


def build_devices(entries: list[Table], contract_ids: set[str]) -> dict[str, Device]:
    out: dict[str, Device] = {}
    first: dict[str, Table] = {}
    for t in entries:
        serial = t.get("serial", _serial, required=True)
        model = t.get("model", as_str, "")
        host = t.get("host", as_str, "")
        contract = t.get("contract", as_nonempty, required=True)
        if contract is not None and contract not in contract_ids:
            t.error("contract", f"unknown contract {q(contract)}")
        secret = t.get("secret", as_str, "")
        senders = t.array("senders", as_email) or ()
        t.close()
        if serial is None:
            continue
        if serial in first:
            t.error(
                "serial", f"duplicate serial {q(serial)} (also at {first[serial].where('serial')})"
            )
            continue
        first[serial] = t
        if contract is None:
            continue
        out[serial] = Device(
            serial=serial,
            model=model,
            host=host,
            contract=contract,
            secret=secret or None,  # "" means unsigned, as in the agent's config
            senders=senders,
        )
    return out


_ROLES: dict[str, Role] = {r: r for r in ROLES}


def build_tokens(entries: list[Table], contract_ids: set[str]) -> tuple[ApiToken, ...]:
    out: list[ApiToken] = []
    first: dict[str, Table] = {}
    for t in entries:
        digest = t.get("token_sha256", as_hex64)
        plain = t.get("token", as_nonempty)
        if t.has("token_sha256") == t.has("token"):
            t.error(None, "needs exactly one of token_sha256 (preferred) or token")
        if plain is not None:
            digest = hashlib.sha256(plain.encode()).hexdigest()
        role_name = t.get("role", choice(*ROLES), required=True)
        contracts = t.array("contracts", as_nonempty) or ()
        raw_contracts = t.data.get("contracts")
        # customer: the contracts it may see (required); agent: the contracts
        # whose devices it may report for (optional, [] = any device).
        if role_name == "customer" and (raw_contracts is None or raw_contracts == []):
            t.error("contracts", "a customer token needs the contracts it may see")
        if role_name in ("customer", "agent"):
            for i, cid in enumerate(contracts):
                if cid not in contract_ids:
                    t.collector.add(t.src, (*t.path, "contracts", i), f"unknown contract {q(cid)}")
        elif role_name is not None and contracts:
            t.error(
                "contracts",
                f"only customer and agent tokens are limited to contracts ({role_name} sees all)",
            )
        t.close()
        if digest is None or role_name is None:
            continue
        if digest in first:
            key = "token" if plain is not None else "token_sha256"
            t.error(key, f"the same token is already defined at {first[digest].where()}")
            continue
        first[digest] = t
        out.append(
            ApiToken(token_sha256=digest, role=_ROLES[role_name], contracts=frozenset(contracts))
        )
    return tuple(out)
