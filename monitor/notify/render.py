"""What a notice says: the e-mail subject and body, and the webhook payload.

Pure functions of a `NoticeContent`: no I/O and no clock, so equal inputs
give equal text and tests can compare it exactly.  (A resend differs only in
its `attempt` line; the Message-ID and Idempotency-Key stay the same.)

The subject format is part of the external contract (SPEC 4.5): contacts'
replies are matched back to the incident by the `[INC-<id>]` it starts with,
so the subject is never localised or decorated.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

NoticeKind = Literal["raised", "after-hours", "reminder", "escalated"]
NOTICE_KINDS: tuple[NoticeKind, ...] = ("raised", "after-hours", "reminder", "escalated")

RULE = "-" * 72
_SPACES = re.compile(" {2,}")


@dataclass(frozen=True, slots=True)
class NoticeContent:
    """Everything a notice shows, gathered by the scheduler.

    `incident` is the incident JSON of SPEC 6.2 (times as RFC 3339 strings).
    `respond_by`, when given, wins over the incident's own `respond_by`.
    `dashboard_url` is where staff can acknowledge; the daemon only knows
    its listen address, which is often loopback, so it is optional.
    """

    kind: NoticeKind
    incident: Mapping[str, Any]
    contract_id: str
    customer: str
    contact: str
    attempt: int
    round: int
    fee_estimate: int | None
    plan: str
    respond_by: datetime | None = None
    dashboard_url: str | None = None

    def __post_init__(self) -> None:
        # Fail at construction, in the scheduler's stack, rather than send a
        # notice with a kind the receivers don't know.
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}")
        if self.attempt < 1 or self.round < 1:
            raise ValueError("attempt and round count from 1")
        incident_id = self.incident.get("id")
        if isinstance(incident_id, bool) or not isinstance(incident_id, int) or incident_id < 1:
            raise ValueError(f"incident id must be a positive integer, got {incident_id!r}")

    @property
    def incident_id(self) -> int:
        value: int = self.incident["id"]
        return value

    @property
    def tag(self) -> str:
        """`[INC-<id>]`: what a reply's subject must keep to acknowledge."""
        return f"[INC-{self.incident_id}]"


def _one_line(value: object) -> str:
    """A field value safe to put on one line (of a header or the body).

    Alarm text comes from devices: a CR/LF in a code or message must not
    start a new header (header injection) or fake a body line.  Control and
    line/paragraph-separator characters become spaces; empty becomes "-" so
    that the subject keeps its five space-separated parts.
    """
    if value is None:
        return "-"
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(value)
    )
    # Collapse the runs of ASCII spaces that a CR LF leaves; other spacing
    # (full-width U+3000 is normal in Japanese vendor text) is kept.
    text = _SPACES.sub(" ", text).strip(" ")
    return text or "-"


def _when(value: object) -> str:
    """RFC 3339 as `2026-11-20 09:00:00 +09:00`, easier on people; raw if unparsable."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return _one_line(value)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    offset = moment.strftime("%z")  # +0900
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S')} {offset[:3]}:{offset[3:]}"


def render_subject(notice: NoticeContent) -> str:
    """`[INC-<id>] <severity> <contract> <serial> <code>` (SPEC 4.5), exactly."""
    inc = notice.incident
    parts = (
        notice.tag,
        _one_line(inc.get("severity")),
        _one_line(notice.contract_id),
        _one_line(inc.get("device")),
        _one_line(inc.get("code")),
    )
    return " ".join(parts)


def _kind_text_ja(n: NoticeContent) -> list[str]:
    sev = _one_line(n.incident.get("severity"))
    if n.kind == "raised":
        lines = ["新しい障害を受け付けました。内容をご確認のうえ、対応をお願いします。"]
        if n.incident.get("due_at"):
            lines.append(
                "この障害はサービス時間外に受信したため、サービス時間の開始まで通知を保留していました。"
            )
        return lines
    if n.kind == "after-hours":
        return [
            "サービス時間外ですが、重大度 critical の障害のため直ちに通知します"
            "（契約の設定 after_hours = notify-critical）。",
            "時間外の作業は契約外作業となり、費用が発生します（概算は下記）。",
        ]
    if n.kind == "reminder":
        return [
            f"前回のサービス時間帯（窓）で応答がなかったため再通知します（第{n.round}巡）。",
            "担当者リストの先頭から連絡を再開しています。",
        ]
    return [
        f"この障害の重要度が {sev} に上がりました。",
        "この巡回で既に通知した担当者全員にお知らせしています。",
    ]


def _kind_text_en(n: NoticeContent) -> list[str]:
    sev = _one_line(n.incident.get("severity"))
    if n.kind == "raised":
        lines = ["A new incident was raised. Please review it and respond."]
        if n.incident.get("due_at"):
            lines.append(
                "It was received outside service hours and held until the service window opened."
            )
        return lines
    if n.kind == "after-hours":
        return [
            "This incident arrived outside service hours. It is critical and the contract asks",
            "for critical faults to be notified at once (after_hours = notify-critical).",
            "Work outside service hours is off-contract and billed (estimate below).",
        ]
    if n.kind == "reminder":
        return [
            "Nobody acknowledged this incident during the previous service window, so",
            f"contacting starts again from the first contact (round {n.round}).",
        ]
    return [
        f"The severity of this incident rose to {sev}.",
        "Every contact already notified in this round receives this notice.",
    ]


def _fee(n: NoticeContent, lang: Literal["ja", "en"]) -> str | None:
    """The after-hours estimate line, or None when there is nothing to say."""
    if n.fee_estimate is None:
        if n.kind != "after-hours":
            return None
        return (
            "未算出（料金表が未設定）" if lang == "ja" else "not available (no tariff configured)"
        )
    return f"{n.fee_estimate:,}円" if lang == "ja" else f"JPY {n.fee_estimate:,}"


def _fields(n: NoticeContent, lang: Literal["ja", "en"]) -> list[str]:
    inc = n.incident
    ja = lang == "ja"
    respond_by = n.respond_by if n.respond_by is not None else inc.get("respond_by")
    rows: list[tuple[str, str]] = [
        ("インシデント" if ja else "Incident", f"INC-{n.incident_id}"),
        ("状態" if ja else "State", _one_line(inc.get("state"))),
        ("重要度" if ja else "Severity", _one_line(inc.get("severity"))),
        (
            "契約（管理番号）" if ja else "Contract",
            f"{_one_line(n.contract_id)} ({_one_line(n.customer)})",
        ),
        ("サービスプラン" if ja else "Plan", _one_line(n.plan)),
        ("装置（製造番号）" if ja else "Device (serial)", _one_line(inc.get("device"))),
        ("部位" if ja else "Component", _one_line(inc.get("component"))),
        ("コード" if ja else "Code", _one_line(inc.get("code"))),
        ("内容" if ja else "Message", _one_line(inc.get("title"))),
        ("受信回数" if ja else "Occurrences", _one_line(inc.get("count"))),
        ("初回受信" if ja else "First seen", _when(inc.get("first_seen"))),
        ("最終受信" if ja else "Last seen", _when(inc.get("last_seen"))),
    ]
    if inc.get("recovered_at"):
        rows.append(("回復を受信" if ja else "Recovery seen", _when(inc.get("recovered_at"))))
    rows.append(("応答期限" if ja else "Respond by", _when(respond_by)))
    fee = _fee(n, lang)
    if fee is not None:
        rows.append(
            ("時間外作業の概算（最初の1時間）" if ja else "After-hours estimate (1st hour)", fee)
        )
    rows.append(
        (
            "宛先" if ja else "To",
            f"{_one_line(n.contact)} 様" if ja else _one_line(n.contact),
        )
    )
    rows.append(
        (
            "通知" if ja else "Notice",
            f"{n.kind}・第{n.round}巡・送信{n.attempt}回目"
            if ja
            else f"{n.kind}, round {n.round}, attempt {n.attempt}",
        )
    )
    return [f"  {label}: {value}" for label, value in rows]


def _ack_text(n: NoticeContent, lang: Literal["ja", "en"]) -> list[str]:
    if lang == "ja":
        where = f"（{n.dashboard_url}）" if n.dashboard_url else ""
        return [
            "受領の連絡方法:",
            f"  ・このメールに返信してください。件名の {n.tag} は消さずに残してください。",
            "    （この通知を受け取ったアドレスから返信してください）",
            f"  ・または、ダッシュボード{where}で INC-{n.incident_id} を受領してください。",
            "受領されるまで、次の担当者へ順に連絡が続きます。",
        ]
    where = f" ({n.dashboard_url})" if n.dashboard_url else ""
    return [
        "To acknowledge:",
        f"  - reply to this e-mail, keeping {n.tag} in the subject",
        "    (from the address this notice was sent to), or",
        f"  - acknowledge INC-{n.incident_id} on the dashboard{where}.",
        "Until someone acknowledges, the next contacts are notified in turn.",
    ]


def _resend_text(n: NoticeContent, lang: Literal["ja", "en"]) -> list[str]:
    # A retry after a transport failure or a crash may reach someone who
    # already got the first try; say so rather than look like a new fault.
    if n.attempt == 1:
        return []
    if lang == "ja":
        return ["", "※ 再送です。同じ通知を既に受け取っている場合は、この通知を無視してください。"]
    return ["", "Note: this is a resend. If you already received this notice, ignore this copy."]


def render_email(notice: NoticeContent) -> tuple[str, str]:
    """(subject, plain-text body): Japanese first, then English."""
    n = notice
    head = f"INC-{n.incident_id}"
    ja = [
        f"【障害通知】{head}",
        "",
        f"{_one_line(n.contact)} 様",
        "",
        *_kind_text_ja(n),
        *_resend_text(n, "ja"),
        "",
        *_fields(n, "ja"),
        "",
        *_ack_text(n, "ja"),
    ]
    en = [
        f"Incident notice {head}",
        "",
        f"Dear {_one_line(n.contact)},",
        "",
        *_kind_text_en(n),
        *_resend_text(n, "en"),
        "",
        *_fields(n, "en"),
        "",
        *_ack_text(n, "en"),
    ]
    footer = [
        "このメールは監視センターから自動送信されています。",
        "This message was sent automatically by the monitoring centre.",
    ]
    body = "\n".join([*ja, "", RULE, "", *en, "", RULE, *footer]) + "\n"
    return render_subject(n), body


def webhook_payload(notice: NoticeContent) -> dict[str, Any]:
    """The webhook JSON body: exactly the six keys of SPEC 4.5."""
    return {
        "kind": notice.kind,
        "incident": dict(notice.incident),
        "contact": notice.contact,
        "attempt": notice.attempt,
        "round": notice.round,
        "fee_estimate": notice.fee_estimate,
    }
