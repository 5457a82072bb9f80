"""Decoding the text of mails from Japanese servers.

What servers really send (FORMATS.md §6.1): ISO-2022-JP, Shift_JIS (which on
Windows means CP932 with the NEC and IBM extensions), EUC-JP and UTF-8, with a
charset label that is sometimes missing or wrong.  Every function here is
total: it returns text and a flag saying whether a strict decoding worked, and
never raises, because a bad byte must not lose a hardware alarm.
"""

from __future__ import annotations

import codecs
import re

# Labels as they appear in Content-Type / RFC 2047, mapped to the codec that
# really decodes what the sender meant.  "Shift_JIS" from Windows is CP932 (it
# has ① and the IBM kanji), and CP932 is a superset for everything else.
_ALIASES: dict[str, str] = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "ms932": "cp932",
    "windows-31j": "cp932",
    "cp932": "cp932",
    "csshiftjis": "cp932",
    "euc-jp": "euc_jp",
    "x-euc-jp": "euc_jp",
    "eucjp": "euc_jp",
    "cseucpkdfmtjapanese": "euc_jp",
    "iso-2022-jp": "iso2022_jp",
    "csiso2022jp": "iso2022_jp",
    "iso-2022-jp-2": "iso2022_jp",
    "iso-2022-jp-3": "iso2022_jp",
    "iso-2022-jp-2004": "iso2022_jp",
    "cp50220": "iso2022_jp",
    "cp50221": "iso2022_jp",
    "cp50222": "iso2022_jp",
    "utf-8": "utf-8",
    "utf8": "utf-8",
    # us-ascii labels are routinely wrong (8-bit text sent as "us-ascii"):
    # decode as UTF-8, a strict superset, and let the fallbacks handle the rest.
    "us-ascii": "utf-8",
    "ascii": "utf-8",
}

# Labels that say "no idea": treat them as absent.
_UNKNOWN = frozenset({"", "unknown-8bit", "x-unknown", "unknown", "8bit", "binary", "default"})

# EUC-JP after CP932 in every fallback list: EUC bytes usually also decode as
# CP932 (as half-width katakana soup), so which one wins is decided by a score.
_EUC_FAMILY = ("euc_jp", "euc_jis_2004")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")


def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when unknown or absent."""
    if label is None:
        return None
    name = label.strip().strip('"').lower()
    if name in _UNKNOWN:
        return None
    alias = _ALIASES.get(name)
    if alias is not None:
        return alias
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        # ValueError: a label with NUL or similar garbage in it.
        return None


def decode_bytes(data: bytes, label: str | None) -> tuple[str, bool]:
    """Decode text declared as `label` (None: undeclared).

    Returns (text, ok). ok is False when no strict decoding worked and the text
    was decoded with replacement characters; the caller decides whether that
    matters (a recognised alarm is still accepted).
    """
    if data.isascii() and b"\x1b" not in data and b"\x0e" not in data:
        # The overwhelmingly common case (and pure 7-bit QP/base64 results).
        return data.decode("ascii"), True
    codec = codec_for(label)
    if codec == "iso2022_jp" or (codec is None and b"\x1b$" in data):
        text = _decode_iso2022jp(data)
        if text is not None:
            return text, True
        codec = None  # mislabelled 8-bit text: fall through to guessing
    if codec is not None:
        try:
            return data.decode(codec), True
        except (UnicodeDecodeError, LookupError):
            pass
    text = _guess(data)
    if text is not None:
        return text, True
    return data.decode(codec or "utf-8", errors="replace"), False


def decode_unknown(data: bytes) -> str:
    """Best-effort text of undeclared bytes (raw 8-bit headers); never fails."""
    return decode_bytes(data, None)[0]


def _guess(data: bytes) -> str | None:
    """Undeclared or mislabelled 8-bit text: UTF-8, else the likelier Japanese codec."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    candidates: list[str] = []
    for codec in ("cp932", *_EUC_FAMILY):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        # CP932 maps stray bytes (0xA0, 0xFD-0xFF, user-defined rows) to the
        # private use area: a guess that needs them is a wrong guess.
        if _PRIVATE_USE.search(text) is None:
            candidates.append(text)
    if not candidates:
        return None
    return max(candidates, key=_japanese_score)


def _japanese_score(text: str) -> int:
    """How much a decoding looks like Japanese prose rather than mojibake.

    Real text is full of hiragana and full-width katakana; EUC bytes read as
    CP932 turn into half-width katakana, and CP932 read as EUC into rare kanji
    with no kana at all.
    """
    score = 0
    for ch in text:
        o = ord(ch)
        if 0x3040 <= o <= 0x30FF or 0x3000 <= o <= 0x303F or 0xFF01 <= o <= 0xFF5E:
            score += 2
        elif 0xFF61 <= o <= 0xFF9F:
            score -= 1
    return score


def _decode_iso2022jp(data: bytes) -> str | None:
    """ISO-2022-JP, including what Windows sends as ISO-2022-JP (CP50220/1/2).

    Python's codec rejects the NEC special characters (①, ㈱, row 13) and
    the IBM extensions that Outlook and Windows servers put in JIS X 0208
    escapes, so on failure we transcode JIS to Shift_JIS and decode as CP932,
    which has them all.
    """
    # Python's codec passes SO/SI (CP50222 half-width katakana) through as
    # control characters, so such text goes to the transcoder directly.
    if b"\x0e" not in data:
        try:
            return data.decode("iso2022_jp")
        except UnicodeDecodeError:
            pass
    try:
        return _jis_to_sjis(data).decode("cp932")
    except (UnicodeDecodeError, ValueError):
        pass
    for codec in ("iso2022_jp_2004", "iso2022_jp_2"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _jis_to_sjis(data: bytes) -> bytes:
    """Transcode 7-bit JIS (ESC sequences, SO/SI kana) to Shift_JIS bytes.

    Raises ValueError on bytes that cannot be JIS (8-bit bytes, an odd
    double-byte run).
    """
    out = bytearray()
    mode = "ascii"  # ascii | kanji | kana
    shifted = False  # SO/SI half-width katakana (CP50222)
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            seq = data[i + 1 : i + 3]
            if seq in (b"$B", b"$@"):
                mode, i = "kanji", i + 3
            elif seq in (b"(B", b"(J", b"(H"):
                mode, i = "ascii", i + 3
            elif seq == b"(I":
                mode, i = "kana", i + 3
            elif data[i + 1 : i + 4] == b"$(D":
                raise ValueError("JIS X 0212 has no Shift_JIS form")
            else:
                raise ValueError("unknown escape sequence")
            continue
        if b == 0x0E:
            shifted, i = True, i + 1
            continue
        if b == 0x0F:
            shifted, i = False, i + 1
            continue
        if b >= 0x80:
            raise ValueError("8-bit byte in 7-bit JIS")
        if b in (0x0A, 0x0D):
            # Line ends reset nothing in the standard, but some senders omit
            # ESC ( B before them; RFC 1468 requires ASCII at line end anyway.
            out.append(b)
            i += 1
            continue
        if shifted or mode == "kana":
            if 0x21 <= b <= 0x5F:
                out.append(b + 0x80)
                i += 1
                continue
            out.append(b)
            i += 1
            continue
        if mode == "kanji":
            if i + 1 >= n:
                raise ValueError("odd byte in a double-byte run")
            j1, j2 = b, data[i + 1]
            if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
                raise ValueError("not a JIS X 0208 pair")
            s1 = ((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)
            s2 = j2 + (0x1F if j1 & 1 else 0x7E)
            if (j1 & 1) and s2 >= 0x7F:
                s2 += 1
            out += bytes((s1, s2))
            i += 2
            continue
        out.append(b)
        i += 1
    return bytes(out)
