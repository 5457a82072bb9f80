"""Which configured device a vendor mail is about (SPEC 3.3).

Order: a configured serial found in the text, else the envelope or header
sender in a device's `senders`, else a configured `host` found in the subject
or body.  A serial or host "is found" when it occurs with no word character
(ASCII letter, digit, `_`) touching it on either side, compared
case-insensitively; `db01` is found in `db01.example.jp` and in `db01で`,
not in `db011`.  Word characters are ASCII only so Japanese text glued to a
host name (no spaces in Japanese) still leaves a boundary.

Thousands of devices: the index is built once per config snapshot, and a
text is tokenised once; each token is looked up in dicts keyed by the first
word of every serial and host, so the cost is O(len(text)), not O(devices).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from monitor.formats.mailtext import address_of
from monitor.model import Device

_WORD = re.compile(r"[0-9a-z_]+")
# Characters NFKC would change in a serial or host name: full-width forms.
_FULLWIDTH = re.compile("[\uff01-\uff5e\u3000]")

How = Literal["serial", "sender", "host"]


@dataclass(frozen=True, slots=True)
class Resolution:
    device: Device
    how: How  # which rule found it (logged: "why this device")


@dataclass(frozen=True, slots=True)
class _Key:
    text: str  # the configured string, lower-cased
    lead: int  # offset of its first word inside `text`
    devices: tuple[Device, ...]


class DeviceIndex:
    """Lookups from text and addresses to configured devices. Immutable."""

    __slots__ = ("_by_serial", "_hosts", "_senders", "_serials")

    def __init__(self, devices: Mapping[str, Device]) -> None:
        self._by_serial: dict[str, Device] = {d.serial.lower(): d for d in devices.values()}
        self._serials = _build_keys((d.serial, d) for d in devices.values())
        self._hosts = _build_keys((d.host, d) for d in devices.values() if d.host)
        senders: dict[str, list[Device]] = {}
        for d in devices.values():
            for addr in d.senders:
                key = address_of(addr)
                if key:
                    senders.setdefault(key, []).append(d)
        self._senders = {k: tuple(v) for k, v in senders.items()}

    def __len__(self) -> int:
        return len(self._by_serial)

    def get(self, serial: str) -> Device | None:
        """The device with this serial (case-insensitive), if configured."""
        return self._by_serial.get(serial.lower())

    def resolve(self, texts: Iterable[str], senders: Iterable[str]) -> Resolution | None:
        """Apply SPEC 3.3's order to the mail's texts and sender addresses.

        A sender or host shared by several devices (one ESMPRO manager relaying
        for many servers, two customers both calling a box `db01`) identifies
        none of them: it is skipped and the next rule or match is tried.
        """
        serial, host = self._scan(texts)
        if serial is not None:
            return Resolution(serial, "serial")
        for addr in senders:
            found = self._senders.get(address_of(addr))
            if found is not None and len(found) == 1:
                return Resolution(found[0], "sender")
        if host is not None:
            return Resolution(host, "host")
        return None

    def _scan(self, texts: Iterable[str]) -> tuple[Device | None, Device | None]:
        """One pass over the tokens: first serial match, else first unique host match."""
        serials, hosts = self._serials, self._hosts
        host: Device | None = None
        for raw in texts:
            text = _fold(raw)
            for m in _WORD.finditer(text):
                token = m.group()
                keys = serials.get(token)
                if keys is not None:
                    found = _match(keys, text, m.start())
                    if found is not None:
                        return found[0], None  # a serial beats everything: stop here
                if host is None:
                    keys = hosts.get(token)
                    if keys is not None:
                        found = _match(keys, text, m.start())
                        if found is not None and len(found) == 1:
                            host = found[0]
        return None, host


def _fold(text: str) -> str:
    # Full-width letters (ＤＢ０１) become ASCII under NFKC; text without
    # them (nearly all) skips the normalisation, which costs ~30 µs a KB.
    if not text.isascii() and _FULLWIDTH.search(text) is not None:
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def _build_keys(items: Iterable[tuple[str, Device]]) -> dict[str, tuple[_Key, ...]]:
    grouped: dict[str, list[Device]] = {}
    for value, device in items:
        text = _fold(value.strip())
        if _WORD.search(text) is not None:
            grouped.setdefault(text, []).append(device)
    index: dict[str, list[_Key]] = {}
    for text, devices in grouped.items():
        first = _WORD.search(text)
        assert first is not None  # filtered above
        index.setdefault(first.group(), []).append(_Key(text, first.start(), tuple(devices)))
    # Longest first, so `db01-a` wins over `db01` at the same position.
    return {
        k: tuple(sorted(v, key=lambda key: len(key.text), reverse=True)) for k, v in index.items()
    }


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _match(keys: tuple[_Key, ...], text: str, at: int) -> tuple[Device, ...] | None:
    """The devices of the first key occurring at token position `at`, if any."""
    for key in keys:
        start = at - key.lead
        end = start + len(key.text)
        if start < 0 or not text.startswith(key.text, start):
            continue
        if start > 0 and _is_word(text[start - 1]):
            continue
        if end < len(text) and _is_word(text[end]):
            continue
        return key.devices
    return None
