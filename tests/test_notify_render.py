"""Rendering of notices: the subject contract, the bilingual body, the payload."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from monitor.notify.render import NOTICE_KINDS, NoticeContent, render_email, webhook_payload

JST = timezone(timedelta(hours=9))


def incident(**over: Any) -> dict[str, Any]:
    """An incident in the shape of SPEC 6.2."""
    base: dict[str, Any] = {
        "id": 42,
        "contract": "C-0001",
        "device": "JPN0012345",
        "component": "PSU",
        "code": "PSU0003",
        "fingerprint": "JPN0012345/PSU/PSU0003",
        "severity": "critical",
        "state": "open",
        "title": "電源ユニット2の障害 / Power supply 2 failed",
        "count": 3,
        "first_seen": "2026-11-20T09:10:00+09:00",
        "last_seen": "2026-11-20T09:15:30+09:00",
        "due_at": None,
        "raised_at": "2026-11-20T09:10:01+09:00",
        "respond_by": "2026-11-20T11:10:01+09:00",
        "recovered_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "after_hours": False,
    }
    base.update(over)
    return base


def notice(**over: Any) -> NoticeContent:
    fields: dict[str, Any] = {
        "kind": "raised",
        "incident": incident(),
        "contract_id": "C-0001",
        "customer": "Example Corp / billing system",
        "contact": "Sato",
        "attempt": 1,
        "round": 1,
        "fee_estimate": None,
        "plan": "express-5x9",
        "respond_by": None,
    }
    fields.update(over)
    return NoticeContent(**fields)


@pytest.mark.parametrize("kind", NOTICE_KINDS)
def test_subject_is_exactly_the_spec_format(kind: str) -> None:
    subject, _ = render_email(notice(kind=kind))
    assert subject == "[INC-42] critical C-0001 JPN0012345 PSU0003"


def test_subject_follows_the_incident_fields() -> None:
    inc = incident(id=7, severity="major", device="SGH123X", code="Failed")
    subject, _ = render_email(notice(incident=inc, contract_id="C-0099"))
    assert subject == "[INC-7] major C-0099 SGH123X Failed"


def test_subject_cannot_be_used_for_header_injection() -> None:
    # Codes come from devices; a line break must not survive into a header.
    inc = incident(code="X\r\nBcc: attacker@example.com", device="")
    subject, _ = render_email(notice(incident=inc))
    assert "\r" not in subject and "\n" not in subject
    assert subject == "[INC-42] critical C-0001 - X Bcc: attacker@example.com"


def test_body_is_japanese_then_english() -> None:
    _, body = render_email(notice())
    ja, en = body.index("障害通知"), body.index("Incident notice")
    assert ja < en
    assert body.index("応答期限") < en < body.index("Respond by")
    assert body.endswith("\n")


def test_body_carries_the_fields() -> None:
    _, body = render_email(notice())
    for text in (
        "INC-42",
        "C-0001 (Example Corp / billing system)",
        "express-5x9",
        "JPN0012345",
        "PSU0003",
        "電源ユニット2の障害 / Power supply 2 failed",
        "Sato 様",
        "Dear Sato,",
        "2026-11-20 09:10:00 +09:00",  # first seen, readable with its offset
        "2026-11-20 11:10:01 +09:00",  # respond_by from the incident
        "round 1, attempt 1",
    ):
        assert text in body, text


def test_explicit_respond_by_wins() -> None:
    due = datetime(2026, 11, 21, 17, 30, tzinfo=JST)
    _, body = render_email(notice(respond_by=due))
    assert "Respond by: 2026-11-21 17:30:00 +09:00" in body
    assert "11:10:01" not in body


def test_how_to_acknowledge() -> None:
    _, body = render_email(notice(dashboard_url="https://monitor.example/"))
    assert "件名の [INC-42] は消さずに残してください" in body
    assert "reply to this e-mail, keeping [INC-42] in the subject" in body
    assert "dashboard (https://monitor.example/)" in body


def test_reminder_says_why() -> None:
    _, body = render_email(notice(kind="reminder", round=3))
    assert "前回のサービス時間帯（窓）で応答がなかったため再通知します（第3巡）" in body
    assert "previous service window" in body and "(round 3)" in body


def test_escalated_names_the_new_severity() -> None:
    _, body = render_email(notice(kind="escalated", incident=incident(severity="critical")))
    assert "重要度が critical に上がりました" in body
    assert "rose to critical" in body


def test_raised_after_deferral_says_it_was_held() -> None:
    held = incident(due_at="2026-11-23T08:30:00+09:00")
    _, body = render_email(notice(incident=held))
    assert "保留" in body and "held until the service window opened" in body
    _, plain = render_email(notice())
    assert "保留" not in plain


def test_after_hours_shows_the_fee_estimate() -> None:
    _, body = render_email(notice(kind="after-hours", fee_estimate=14000))
    assert "時間外作業の概算（最初の1時間）: 14,000円" in body
    assert "After-hours estimate (1st hour): JPY 14,000" in body
    assert "off-contract" in body


def test_after_hours_without_tariff_says_so() -> None:
    _, body = render_email(notice(kind="after-hours", fee_estimate=None))
    assert "no tariff configured" in body


def test_no_fee_line_for_ordinary_notices() -> None:
    _, body = render_email(notice())
    assert "estimate" not in body.lower().replace("(estimate below)", "")


def test_resend_is_flagged() -> None:
    _, first = render_email(notice())
    _, again = render_email(notice(attempt=2))
    assert "再送" not in first and "resend" not in first
    assert "再送です" in again and "this is a resend" in again


def test_recovered_at_is_shown_when_set() -> None:
    _, body = render_email(notice(incident=incident(recovered_at="2026-11-20T10:00:00+09:00")))
    assert "Recovery seen: 2026-11-20 10:00:00 +09:00" in body


def test_missing_and_odd_values_do_not_break_rendering() -> None:
    sparse = {"id": 5, "first_seen": "not a time", "title": "line1\nline2\u2028x"}
    subject, body = render_email(notice(incident=sparse))
    assert subject == "[INC-5] - C-0001 - -"
    assert "First seen: not a time" in body
    assert "Message: line1 line2 x" in body


def test_rendering_is_deterministic() -> None:
    assert render_email(notice()) == render_email(notice())


@pytest.mark.parametrize(
    "over",
    [
        {"kind": "paged"},
        {"attempt": 0},
        {"round": 0},
        {"incident": incident(id=0)},
        {"incident": incident(id="42")},
        {"incident": {}},
    ],
)
def test_invalid_notices_are_refused(over: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        notice(**over)


def test_webhook_payload_has_exactly_the_spec_keys() -> None:
    n = notice(kind="after-hours", fee_estimate=14000, attempt=2, round=1)
    payload = webhook_payload(n)
    assert list(payload) == ["kind", "incident", "contact", "attempt", "round", "fee_estimate"]
    assert payload == {
        "kind": "after-hours",
        "incident": incident(),
        "contact": "Sato",
        "attempt": 2,
        "round": 1,
        "fee_estimate": 14000,
    }
    # JSON-ready as is, and a copy: mutating it leaves the notice alone.
    assert json.loads(json.dumps(payload)) == payload
    payload["incident"]["id"] = 1
    assert n.incident["id"] == 42
