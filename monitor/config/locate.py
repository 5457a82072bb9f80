"""Find the line of a key path in TOML text.

tomllib returns plain dicts without positions, yet every config error must
name its line.  This is a small structural scanner that walks text tomllib
has already accepted (so it may assume valid TOML and never reports errors)
and records the first line of every key path: table headers `[x.y]`,
arrays of tables `[[x]]` (numbered per occurrence, so the third `[[contracts]]`
is `contracts[2]`), `key = value` lines, dotted keys, and the elements and
keys of arrays and inline tables (`contacts = [ {name = "a"}, ... ]` gives
`contacts[1].name` its own line when written over several lines).
"""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib

from monitor.config.errors import KeyPath

__all__ = ["Locator", "syntax_error_position"]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# A TOML local date followed by a space and a time is ONE value
# (`1979-05-27 07:32:00`); the scanner must not take the time for a key.
_DATE_SPACE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:")
_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def syntax_error_position(message: str, text: str) -> tuple[int, int | None, str]:
    """Split a tomllib message into (line, column, message without position).

    "at end of document" becomes the last line: that is where an unclosed
    string or array is noticed, and the rule is that syntax errors always
    carry a line.
    """
    m = _POSITION.search(message)
    if m is not None:
        return int(m.group(1)), int(m.group(2)), message[: m.start()]
    m = _AT_END.search(message)
    last = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    if m is not None:
        return last, None, message[: m.start()]
    return last, None, message


class Locator:
    """Line numbers (1-based) of the key paths of one TOML document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        # Best effort: what was recorded before a surprise stays usable, and
        # a missing line degrades the message, not the load.
        with contextlib.suppress(IndexError, ValueError, tomllib.TOMLDecodeError):
            _Scanner(text, self._lines).run()

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, else of its nearest located parent.

        A missing required key thus points at its table's header, and a
        problem deep in a one-line inline table at the key that holds it.
        """
        for n in range(len(path), 0, -1):
            found = self._lines.get(path[:n])
            if found is not None:
                return found
        return None

    def exact(self, path: KeyPath) -> int | None:
        return self._lines.get(path)


class _Scanner:
    def __init__(self, text: str, out: dict[KeyPath, int]) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.out = out
        self.newlines = [k for k, c in enumerate(text) if c == "\n"]
        # Occurrences so far of each array of tables, by resolved path.
        self.aot: dict[KeyPath, int] = {}

    # -- positions ---------------------------------------------------------

    def line_at(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def record(self, path: KeyPath, offset: int) -> None:
        self.out.setdefault(path, self.line_at(offset))

    # -- lexical helpers ---------------------------------------------------

    def skip_ws(self, newlines: bool = False) -> None:
        """Skip blanks and comments (and newlines when allowed)."""
        s = self.s
        while self.i < self.n:
            c = s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                while self.i < self.n and s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def skip_string(self) -> str:
        """Skip a string at `i`, returning its raw text (quotes included)."""
        s = self.s
        start = self.i
        q = s[self.i]
        if s.startswith(q * 3, self.i):
            self.i += 3
            while not s.startswith(q * 3, self.i):
                if q == '"' and s[self.i] == "\\":
                    self.i += 1
                self.i += 1
                if self.i >= self.n:
                    raise ValueError("unterminated string")
            self.i += 3
            # Up to two quotes may sit right before the closing delimiter.
            for _ in range(2):
                if self.i < self.n and s[self.i] == q:
                    self.i += 1
            return s[start : self.i]
        self.i += 1
        while s[self.i] != q:
            if q == '"' and s[self.i] == "\\":
                self.i += 1
            self.i += 1
        self.i += 1
        return s[start : self.i]

    def key(self) -> list[str]:
        """A possibly dotted, possibly quoted key."""
        parts: list[str] = []
        while True:
            self.skip_ws()
            c = self.s[self.i]
            if c in "\"'":
                raw = self.skip_string()
                # Let tomllib decode escapes rather than reimplementing them.
                parts.append(str(tomllib.loads(f"k = {raw}")["k"]))
            else:
                start = self.i
                while self.i < self.n and self.s[self.i] in _BARE:
                    self.i += 1
                if self.i == start:
                    raise ValueError("expected a key")
                parts.append(self.s[start : self.i])
            self.skip_ws()
            if self.i < self.n and self.s[self.i] == ".":
                self.i += 1
                continue
            return parts

    # -- structure ---------------------------------------------------------

    def run(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_ws(newlines=True)
            if self.i >= self.n:
                return
            if self.s[self.i] == "[":
                table = self.header()
            else:
                self.keyval(table)

    def header(self) -> KeyPath:
        start = self.i
        array = self.s.startswith("[[", self.i)
        self.i += 2 if array else 1
        parts = self.key()
        self.i += 2 if array else 1
        path: KeyPath = ()
        for j, part in enumerate(parts):
            path = (*path, part)
            if array and j == len(parts) - 1:
                count = self.aot.get(path, 0)
                self.aot[path] = count + 1
                self.record(path, start)
                path = (*path, count)
            elif path in self.aot:
                # `[x.y]` after `[[x]]` belongs to the latest `x` element.
                path = (*path, self.aot[path] - 1)
            self.record(path, start)
        return path

    def keyval(self, base: KeyPath) -> None:
        start = self.i
        path = base
        for part in self.key():
            path = (*path, part)
            self.record(path, start)
        self.i += 1  # "="
        self.skip_ws()
        self.value(path)

    def value(self, path: KeyPath) -> None:
        c = self.s[self.i]
        if c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.s[self.i] == "]":
                    self.i += 1
                    return
                self.record((*path, index), self.i)
                self.value((*path, index))
                index += 1
                self.skip_ws(newlines=True)
                if self.s[self.i] == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_ws(newlines=True)
                if self.s[self.i] == "}":
                    self.i += 1
                    return
                self.keyval(path)
                self.skip_ws(newlines=True)
                if self.s[self.i] == ",":
                    self.i += 1
        elif c in "\"'":
            self.skip_string()
        else:
            if _DATE_SPACE_TIME.match(self.s, self.i):
                self.i += 11
            while self.i < self.n and self.s[self.i] not in " \t\r\n,]}#":
                self.i += 1
