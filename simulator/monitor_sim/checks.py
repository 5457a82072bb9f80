"""Compare what the daemon's API shows after a replay with the trace's
expectations (`expect.py`).  Each check is one line of the final report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitor_sim.clients import Outcome
from monitor_sim.expect import first_copies
from monitor_sim.trace import Record, Trace

RAISED = ("open", "notified", "acknowledged")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def _few(items: Sequence[object], n: int = 5) -> str:
    text = ", ".join(str(i) for i in items[:n])
    return text + (f" … ({len(items)} in all)" if len(items) > n else "")


def check_acks(trace: Trace, outcomes: Sequence[Outcome | None]) -> list[Check]:
    """Every good report acknowledged; damaged ones refused where the channel
    can say so (MQTT's PUBACK is the broker's: it always acknowledges)."""
    unacked, accepted_bad = [], []
    for rec, out in zip(trace.records, outcomes, strict=True):
        if out is None:
            continue
        if not rec.malformed and not out.ok:
            unacked.append(f"{rec.channel}:{rec.id[:24]} ({out.detail[:60]})")
        elif rec.malformed and rec.channel != "mqtt" and not out.refused:
            accepted_bad.append(f"{rec.channel}:{rec.malformed} ({out.detail[:60]})")
    return [
        Check("good reports acknowledged", not unacked, _few(unacked)),
        Check("damaged reports refused to the sender", not accepted_bad, _few(accepted_bad)),
    ]


def check_storage(trace: Trace, alarms: Sequence[dict[str, Any]]) -> list[Check]:
    stored = Counter((a["device"], a["id"]) for a in alarms)
    by_key = {(a["device"], a["id"]): a for a in alarms}
    good = first_copies(trace.records)
    missing = [f"{r.serial}/{r.id[:24]}" for r in good if stored[(r.serial, r.id)] == 0]
    twice = [f"{d}/{i[:24]}" for (d, i), n in stored.items() if n > 1]
    wrong = []
    for r in good:
        a = by_key.get((r.serial, r.id))
        if a is None:
            continue
        got = (a["severity"], a["component"], a["code"])
        if got != (r.severity, r.component, r.code) or a["format"] != _format(r):
            wrong.append(
                f"{r.id[:24]}: {a['format']} {got} != {_format(r)} "
                f"{(r.severity, r.component, r.code)}"
            )
    bad = {(r.serial, r.id) for r in trace.records if r.malformed}
    leaked = [f"{d}/{i[:24]}" for (d, i) in stored if (d, i) in bad]
    return [
        Check(f"every report stored ({len(good)})", not missing, _few(missing)),
        Check("no report stored twice", not twice, _few(twice)),
        Check("stored as sent (format, severity, component, code)", not wrong, _few(wrong, 3)),
        Check("no damaged report stored", not leaked, _few(leaked)),
    ]


def _format(rec: Record) -> str:
    # The first copy decides: a resend by mail of an MQTT report is stored as json.
    return rec.format


def check_quarantine(trace: Trace, entries: Sequence[dict[str, Any]] | None) -> list[Check]:
    want = Counter((c, r) for c, r in trace.expect.get("quarantine", []))
    if not want:
        return []
    if entries is None:
        return [Check("quarantine", True, "skipped: the token is not an admin's")]
    got = Counter((e["channel"], e["reason"]) for e in entries)
    short = [f"{c}/{r}: {got[(c, r)]} < {n}" for (c, r), n in want.items() if got[(c, r)] < n]
    return [
        Check(
            f"damaged reports quarantined with their reason ({sum(want.values())})",
            not short,
            _few(short),
        )
    ]


def _by_fingerprint(incidents: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for inc in incidents:
        out.setdefault(inc["fingerprint"], []).append(inc)
    return out


def _same_time(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds()) < 1


def _not_before(when: str | None, due: str | None) -> bool:
    if due is None:
        return True
    return when is not None and datetime.fromisoformat(when) >= datetime.fromisoformat(due)


def check_incidents(
    trace: Trace,
    incidents: Sequence[dict[str, Any]],
    notices: dict[int, list[dict[str, Any]]],
) -> list[Check]:
    """The full model: with `--drive-clock` the daemon saw the trace's times."""
    want: dict[str, dict[str, Any]] = trace.expect.get("incidents", {})
    have = _by_fingerprint(incidents)
    problems: dict[str, list[str]] = {
        k: [] for k in ("set", "count", "deferral", "state", "notice")
    }
    extra = sorted(set(have) - set(want))
    for fp, exp in want.items():
        found = have.get(fp, [])
        if len(found) != 1:
            problems["set"].append(f"{fp}: {len(found)} incidents")
            continue
        inc = found[0]
        if (inc["count"], inc["severity"], inc["recovered_at"] is not None) != (
            exp["count"],
            exp["severity"],
            exp["recovered"],
        ):
            problems["count"].append(
                f"{fp}: count/severity/recovered {inc['count']}/{inc['severity']}/"
                f"{inc['recovered_at'] is not None} != {exp['count']}/{exp['severity']}/"
                f"{exp['recovered']}"
            )
        if not _same_time(inc["due_at"], exp["due_at"]) or inc["after_hours"] != exp["after_hours"]:
            problems["deferral"].append(
                f"{fp}: due_at {inc['due_at']} after_hours {inc['after_hours']}, "
                f"want {exp['due_at']} {exp['after_hours']}"
            )
        state_ok = (
            inc["state"] == "deferred"
            if exp["state"] == "deferred"
            else (inc["state"] in RAISED and _not_before(inc["raised_at"], exp["due_at"]))
        )
        if not state_ok:
            problems["state"].append(
                f"{fp}: {inc['state']} raised_at {inc['raised_at']}, "
                f"want {exp['state']} from {exp['due_at']}"
            )
        kinds = {(n["round"], n["kind"]) for n in notices.get(inc["id"], [])}
        first = (1, "after-hours" if exp["after_hours"] else "raised")
        if exp["state"] == "raised" and exp["notice"] and first not in kinds:
            problems["notice"].append(f"{fp}: notices {sorted(kinds)}")
        if exp["state"] == "deferred" and kinds:
            problems["notice"].append(f"{fp}: notified while deferred {sorted(kinds)}")
    deferred = sum(1 for e in want.values() if e["due_at"])
    return [
        Check(
            f"one incident per fingerprint ({len(want)})",
            not problems["set"] and not extra,
            _few(problems["set"] + [f"unexpected {fp}" for fp in extra]),
        ),
        Check("counts, severities, recoveries", not problems["count"], _few(problems["count"], 3)),
        Check(
            f"deferrals and after-hours raises ({deferred} deferred)",
            not problems["deferral"],
            _few(problems["deferral"], 3),
        ),
        Check(
            "states at the end (deferred, then raised at the window)",
            not problems["state"],
            _few(problems["state"], 3),
        ),
        Check(
            "first notices of raised incidents", not problems["notice"], _few(problems["notice"], 3)
        ),
    ]


def check_incidents_structural(
    alarms: Sequence[dict[str, Any]], incidents: Sequence[dict[str, Any]]
) -> list[Check]:
    """Without `--drive-clock` the daemon's own clock decided coverage and
    windows, so only the grouping is checked: one incident per covered
    fingerprint, counting its non-clear alarms."""
    faults = Counter(
        f"{a['device']}/{a['component']}/{a['code']}"
        for a in alarms
        if a["coverage"] == "covered" and a["severity"] != "clear"
    )
    have = _by_fingerprint(incidents)
    wrong = []
    for fp, n in faults.items():
        found = have.get(fp, [])
        if len(found) != 1 or found[0]["count"] != n:
            wrong.append(f"{fp}: {[i['count'] for i in found]} != [{n}]")
    return [
        Check(
            f"one incident per covered fingerprint ({len(faults)}), counted",
            not wrong,
            _few(wrong, 3),
        )
    ]


def check_checkpoint(
    point: dict[str, Any], incidents: Sequence[dict[str, Any]]
) -> tuple[bool, list[str]]:
    have = {fp: found[0] for fp, found in _by_fingerprint(incidents).items() if len(found) == 1}
    off = []
    for fp in point["deferred"]:
        state = have[fp]["state"] if fp in have else "missing"
        if state != "deferred":
            off.append(f"{fp} {state} (want deferred)")
    for fp in point["raised"]:
        state = have[fp]["state"] if fp in have else "missing"
        if state not in RAISED:
            off.append(f"{fp} {state} (want raised)")
    return not off, off
