"""Charset decoding of Japanese mail text."""

from __future__ import annotations

import pytest

from monitor.formats.charset import codec_for, decode_bytes, decode_unknown
from monitor.formats.mime import decode_header_value

TEXT = "電源ユニット2で障害を検出しました。"


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("Shift_JIS", "cp932"),
        ("windows-31j", "cp932"),
        ('"ISO-2022-JP"', "iso2022_jp"),
        ("EUC-JP", "euc_jp"),
        ("us-ascii", "utf-8"),
        ("latin1", "iso8859-1"),
        ("unknown-8bit", None),
        ("x-no-such-charset", None),
        ("", None),
        (None, None),
    ],
)
def test_codec_for(label: str | None, codec: str | None) -> None:
    assert codec_for(label) == codec


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (TEXT.encode("cp932"), "shift_jis"),
        (TEXT.encode("euc_jp"), "euc-jp"),
        (TEXT.encode("iso2022_jp"), "iso-2022-jp"),
        # undeclared: guessed
        (TEXT.encode("utf-8"), None),
        (TEXT.encode("cp932"), None),
        (TEXT.encode("euc_jp"), None),
        (TEXT.encode("iso2022_jp"), None),
        # mislabelled: the label fails strictly, the guess works
        (TEXT.encode("cp932"), "us-ascii"),
        (TEXT.encode("euc_jp"), "iso-2022-jp"),
        (TEXT.encode("cp932"), "utf-8"),
    ],
)
def test_decodes(data: bytes, label: str | None) -> None:
    assert decode_bytes(data, label) == (TEXT, True)


def test_nec_specials_in_iso2022jp() -> None:
    # ① ㈱ as Windows writes them inside ESC $B (row 13), which Python's codec refuses.
    data = b"\x1b$B-!-j\x1b(B ok"
    assert decode_bytes(data, "iso-2022-jp") == ("①㈱ ok", True)


def test_halfwidth_katakana_shift_out() -> None:
    # CP50222 style: SO ... SI around half-width katakana
    assert decode_bytes(b"A\x0e1\x0fB", "iso-2022-jp") == ("AｱB", True)


def test_undecodable_reports_failure() -> None:
    text, ok = decode_bytes(b"\xff\xfe\x80", "utf-8")
    assert not ok and "\ufffd" in text
    assert decode_unknown(b"\xff\xfe\x80")  # never raises, always some text


def test_rfc2047_headers() -> None:
    assert decode_header_value("=?ISO-2022-JP?B?GyRCRUU4OyVmJUslQyVIGyhC?=") == "電源ユニット"
    assert decode_header_value("=?shift_jis?B?k2SMuQ==?= x") == "電源 x"
    assert decode_header_value("=?utf-8?q?=E9=9B=BB?= =?utf-8?q?=E6=BA=90?=") == "電源"
    assert decode_header_value("=?x-bogus?q?abc?=") == "abc"
    assert decode_header_value("plain") == "plain"
    # broken base64 in an encoded word: some text, no exception
    assert isinstance(decode_header_value("=?utf-8?b?####?="), str)
