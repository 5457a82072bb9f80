"""NEC ESMPRO internet-mail reports (FORMATS.md §6).

    コンピュータ名 : SRV-TKY-014
    製品名 : Express5800/R120h-1M
    発生日付 : 2025/7/3
    発生時間 : 02:41:17
    [トラップ名]
    Power Supply Failure(2)
    [ソース名]
    ESMCommonService
    [イベントID]
    2103 ( C0000837 )
    [詳細メッセージ]
    電源ユニット2で障害を検出しました。
    ...
    [アラートタイプ]
    PowerSupply            (or `Memory(警告)` when relayed by AlertManager)

The subject is whatever the administrator typed, so recognition is by body:
at least two of the bracketed sections.  Labels are matched after NFKC, so
full-width brackets, colons and spaces (［イベントＩＤ］, `：`, U+3000) are the
same as ASCII ones.  Message text is taken as sent, not normalised.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from monitor.formats.mailtext import (
    MAX_MESSAGE,
    Extracted,
    FormatError,
    MailText,
    cap,
)

FORMAT = "esmpro"

_SECTIONS = frozenset(
    {"トラップ名", "ソース名", "イベントID", "詳細メッセージ", "対処方法", "アラートタイプ"}
)
_SECTION = re.compile(r"^\[([^\]]*)\](.*)$")
_HEX_IN_PARENS = re.compile(r"\(\s*(?:0[xX])?([0-9A-Fa-f]{1,8})\s*\)")
_LONE_HEX = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]{8})$")
_DECIMAL = re.compile(r"^(\d+)")
# 発生時刻 : 2025年11月20日 23:05 (+09:00)   (AlertManager relay prefix line)
_STAMP = re.compile(
    r"(\d{4})年\s*(\d{1,2})月\s*(\d{1,2})日\s*(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s*(?:\(\s*)?(?:(?:UTC|GMT)\s*)?([+-])(\d{1,2}):?(\d{2})"
)
# Severity words ESMPRO puts in the alert type, most severe first.
_WORDS: tuple[tuple[str, str], ...] = (("異常", "critical"), ("警告", "warning"), ("情報", "info"))
_PRECHECK = ("イベント", "ソース名", "トラップ名", "ｲﾍﾞﾝﾄ", "ｿｰｽ")


def parse_esmpro(mail: MailText) -> Extracted | FormatError | None:
    body = mail.body
    if not any(word in body for word in _PRECHECK):
        return None  # cheap exit before normalising anything
    norm = mail.norm_lines()
    orig = mail.lines()
    head: dict[str, str] = {}
    sections: dict[str, list[tuple[str, str]]] = {}  # name → [(normalised, original)]
    current: list[tuple[str, str]] | None = None
    for i, line in enumerate(norm):
        m = _SECTION.match(line)
        if m is not None and m.group(1).strip() in _SECTIONS:
            current = sections.setdefault(m.group(1).strip(), [])
            rest = m.group(2).strip()
            if rest:
                current.append((rest, rest))
            continue
        if current is not None:
            if line:
                current.append((line, orig[i].strip(" \t\u3000")))
            continue
        label, colon, value = line.partition(":")
        if colon:
            head.setdefault(label.strip(), value.strip())
    if len(sections) < 2:
        return None

    event = _first(sections.get("イベントID"))
    code, number = _event_id(event)
    if not code:
        return FormatError(FORMAT, f"no event id in [イベントID] ({event[:40]!r})")

    occurred, occurred_raw, detail = _occurred(sections.get("詳細メッセージ", []), head, mail)
    message = detail or _first(sections.get("トラップ名")) or f"ESMPRO event {code}"
    return Extracted(
        format=FORMAT,
        severity=_severity(sections.get("アラートタイプ", []), number),
        code=cap(code),
        message=cap(message, MAX_MESSAGE),
        component=cap(_first(sections.get("ソース名"))),
        occurred=occurred,
        occurred_raw=occurred_raw,
        host=cap(head.get("コンピュータ名", "")),
        model=cap(head.get("製品名", "")),
    )


def _first(values: list[tuple[str, str]] | None) -> str:
    return values[0][0] if values else ""


def _event_id(text: str) -> tuple[str, int | None]:
    """`2103 ( C0000837 )` → ("C0000837", 0xC0000837); decimal only → ("2103", None)."""
    m = _HEX_IN_PARENS.search(text)
    if m is None:
        m = _LONE_HEX.match(text)
        if m is not None and m.group(1).isdigit():
            m = None  # eight decimal digits: a decimal id, not hex
    if m is not None:
        hexid = m.group(1).upper()
        return hexid, int(hexid, 16)
    d = _DECIMAL.match(text)
    return (d.group(1), None) if d is not None else ("", None)


def _severity(alert_type: list[tuple[str, str]], number: int | None) -> str:
    text = " ".join(norm for norm, _ in alert_type)
    for word, severity in _WORDS:
        if f"({word})" in text:
            return severity
    for word, severity in _WORDS:
        if word in text:
            return severity
    if number is not None:
        # The hex id is a Windows event id: its top two bits are the severity
        # (11 error, 10 warning, 01 informational, 00 success).
        return ("info", "info", "warning", "critical")[(number >> 30) & 3]
    # Recognised but unclassifiable: alarm anyway rather than drop it.
    return "warning"


def _occurred(
    detail: list[tuple[str, str]], head: dict[str, str], mail: MailText
) -> tuple[datetime | None, str, str]:
    """(occurred, occurred_raw, first detail line without the relay stamp)."""
    stamp: tuple[datetime | None, str] | None = None
    message = ""
    for norm, orig in detail:
        if norm.startswith("発生時刻") and ":" in norm and stamp is None:
            raw = norm.partition(":")[2].strip()
            stamp = (_parse_stamp(raw), raw)
            continue
        message = orig
        break
    if stamp is not None and stamp[0] is not None:
        return stamp[0], stamp[1], message
    day, clock = head.get("発生日付", ""), head.get("発生時間", "")
    if day or clock:
        # Local time of an unknown zone: keep the text, don't guess.
        return None, f"{day} {clock}".strip(), message
    when, raw = mail.date()
    return when, raw, message


def _parse_stamp(text: str) -> datetime | None:
    m = _STAMP.search(text)
    if m is None:
        return None
    y, mo, d, h, mi, s, sign, oh, om = m.groups()
    try:
        offset = timedelta(hours=int(oh), minutes=int(om))
        zone = timezone(-offset if sign == "-" else offset)
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=zone)
    except ValueError:
        return None  # 2025年13月…, or an offset of 24 hours or more
