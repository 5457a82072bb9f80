"""The least MIME work that gets a mail's subject, text and JSON parts.

PERF.md: `email.message_from_bytes(policy=default)` costs ~630 µs a 1 KB
mail, compat32 ~36 µs.  Almost every alarm mail is a single text part, so
headers are split here by hand and only multipart mails go through the
compat32 parser to walk their parts.  Nothing in this module raises on any
input.
"""

from __future__ import annotations

import binascii
import email
import email.errors
import email.header
import html
import re
from dataclasses import dataclass, field
from email.message import Message

from monitor.formats.charset import decode_bytes, decode_unknown

_CHARSET = re.compile(r"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.IGNORECASE)
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_TAG = re.compile(r"<[^<>]*>")  # [^<>]: linear on "<<<<…"
_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", re.IGNORECASE)


MAX_HEADER = 4096  # bytes kept of any one header

# Header names read by the parsers (bytes, lower-cased → str key).
WANTED: dict[bytes, str] = {
    name.encode(): name
    for name in (
        "subject",
        "from",
        "date",
        "message-id",
        "content-type",
        "content-transfer-encoding",
        "auto-submitted",
        "precedence",
        "x-autoreply",
        "x-autorespond",
        "x-autoresponder",
    )
}


@dataclass(slots=True)
class Parts:
    """What the format parsers need from the MIME structure."""

    headers: dict[str, str]  # lower-cased name → unfolded value (first occurrence)
    body_raw: bytes  # everything after the header block: the fallback id's input
    content_type: str  # of the whole mail, lower-cased, without parameters
    text: str = ""  # the main text part, decoded
    text_ok: bool = True  # False: no strict decoding worked (replacement chars)
    json_parts: list[bytes] = field(default_factory=list)


def split(raw: bytes) -> Parts:
    """Headers and body of a mail; the body decoded when it is a single part."""
    head, body = split_head(raw)
    headers = _parse_headers(head)
    ctype_full = headers.get("content-type", "text/plain")
    ctype = ctype_full.partition(";")[0].strip().lower() or "text/plain"
    parts = Parts(headers=headers, body_raw=body, content_type=ctype)
    if ctype.startswith("multipart/"):
        _walk(raw, parts)
        return parts
    payload = _decode_cte(body, headers.get("content-transfer-encoding", ""))
    if ctype == "application/json" or ctype.endswith("+json"):
        parts.json_parts.append(payload)
    elif ctype.startswith("text/") or ctype in ("", "message/rfc822"):
        parts.text, parts.text_ok = _to_text(payload, _charset_param(ctype_full), ctype)
    return parts


def decode_header_value(value: str) -> str:
    """RFC 2047 encoded words → text, each word in its own charset."""
    if "=?" not in value:
        return value
    try:
        chunks = email.header.decode_header(value)
    except (email.errors.HeaderParseError, ValueError, LookupError):
        return value
    out: list[str] = []
    for chunk, label in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif label is None:
            # decode_header hands unencoded stretches back as
            # raw-unicode-escape bytes.
            try:
                out.append(chunk.decode("raw-unicode-escape"))
            except UnicodeDecodeError:
                out.append(chunk.decode("latin-1"))
        else:
            out.append(decode_bytes(chunk, label)[0])
    return "".join(out)


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) at the first empty line; no empty line: all header."""
    if raw.startswith((b"\n", b"\r\n")):
        return b"", raw[2 if raw.startswith(b"\r\n") else 1 :]
    ends = [(i, n) for i, n in ((raw.find(b"\n\n"), 2), (raw.find(b"\n\r\n"), 3)) if i >= 0]
    if not ends:
        return raw, b""
    i, n = min(ends)
    return raw[: i + 1], raw[i + n :]


def _parse_headers(head: bytes) -> dict[str, str]:
    """The headers anyone here reads (first occurrence each), unfolded and decoded.

    Only WANTED ones are kept: real mail carries a dozen Received: and
    DKIM lines nobody here needs to decode.
    """
    headers: dict[str, str] = {}
    name: str | None = None
    value = b""

    def flush() -> None:
        if name is not None and name not in headers:
            # Longer is garbage, and decode_header's regex is quadratic on
            # long runs of unterminated "=?" words.
            text = value.strip()[:MAX_HEADER]
            headers[name] = text.decode("ascii") if text.isascii() else decode_unknown(text)

    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value += line  # unfolding keeps the leading blank, drops CRLF
            continue
        flush()
        key, colon, rest = line.partition(b":")
        name = WANTED.get(key.lower()) if colon else None
        value = rest
    flush()
    return headers


def _charset_param(content_type: str) -> str | None:
    m = _CHARSET.search(content_type)
    if m is None:
        return None
    return next(g for g in m.groups() if g is not None)


def _decode_cte(body: bytes, cte: str) -> bytes:
    kind = cte.strip().lower()
    if kind == "quoted-printable":
        return binascii.a2b_qp(body)
    if kind == "base64":
        return _b64(body)
    return body


def _b64(data: bytes) -> bytes:
    """Tolerant base64: junk characters skipped, a bad tail dropped."""
    clean = _B64_JUNK.sub(b"", data.partition(b"=")[0])
    if len(clean) % 4 == 1:
        clean = clean[:-1]  # a lone sextet cannot make a byte
    clean += b"=" * (-len(clean) % 4)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        return b""


def _to_text(payload: bytes, charset: str | None, ctype: str) -> tuple[str, bool]:
    text, ok = decode_bytes(payload, charset)
    if ctype == "text/html":
        text = _html_text(text)
    return text.replace("\r\n", "\n"), ok


def _html_text(markup: str) -> str:
    text = _BREAK.sub("\n", markup)
    return html.unescape(_TAG.sub("", text))


def _walk(raw: bytes, parts: Parts) -> None:
    """Multipart: the first inline text/plain (else text/html) and all JSON parts."""
    try:
        msg = email.message_from_bytes(raw)  # compat32: the fast stdlib parser
        leaves = [p for p in msg.walk() if not p.is_multipart()]
    except Exception:  # a stdlib parser bug must not lose the mail
        return
    plain: Message | None = None
    markup: Message | None = None
    for part in leaves:
        ctype = part.get_content_type()
        if ctype == "application/json" or ctype.endswith("+json"):
            parts.json_parts.append(_payload(part))
        elif ctype == "text/plain" and plain is None and not _is_attachment(part):
            plain = part
        elif ctype == "text/html" and markup is None and not _is_attachment(part):
            markup = part
    chosen = plain or markup
    if chosen is not None:
        parts.text, parts.text_ok = _to_text(
            _payload(chosen),
            _charset_param(str(chosen.get("content-type", ""))),
            chosen.get_content_type(),
        )


def _payload(part: Message) -> bytes:
    try:
        raw = part.get_payload(decode=False)
    except Exception:  # same: never raise on input
        return b""
    if not isinstance(raw, str):
        return b""
    try:
        # compat32 keeps the undecoded bytes as surrogate escapes…
        data = raw.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        # …except where its own header handling already produced real text.
        data = raw.encode("utf-8", "replace")
    return _decode_cte(data, str(part.get("content-transfer-encoding", "")))


def _is_attachment(part: Message) -> bool:
    return str(part.get("content-disposition", "")).strip().lower().startswith("attachment")
