"""Strict, error-collecting access to the tables tomllib returns.

A `Table` wraps one TOML table together with where it lives (file, key
path).  Every accessor records the key as known; `close()` then reports every
key nobody asked for as unknown, which is how typos are caught without a
separate schema to keep in sync.  Accessors never raise: a bad or missing
value is reported to the `Collector` and the caller gets `None` (or its
default), so one load reports every problem at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import TypeVar, overload

from monitor.config.errors import KeyPath, Problem, format_key
from monitor.config.locate import Locator

__all__ = [
    "Collector",
    "Source",
    "Table",
    "as_bool",
    "as_int",
    "as_str",
    "type_name",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Source:
    """One loaded file."""

    display: str  # how messages name it: as given, or as the include found it
    path: Path  # absolute
    locator: Locator
    order: int  # 0 = the main file; messages are sorted by file, then line


@dataclass
class Collector:
    """Every problem of one load, in file then line order."""

    _items: list[tuple[int, int, int, Problem]] = field(default_factory=list)

    def add(self, src: Source, path: KeyPath, message: str) -> None:
        line = src.locator.line(path)
        self.add_problem(src.order, Problem(src.display, line, format_key(path), message))

    def add_problem(self, order: int, problem: Problem) -> None:
        # The running count keeps problems on one line in discovery order.
        self._items.append((order, problem.line or 0, len(self._items), problem))

    def problems(self) -> list[Problem]:
        return [item[3] for item in sorted(self._items, key=lambda x: x[:3])]

    def __bool__(self) -> bool:
        return bool(self._items)


def type_name(value: object) -> str:
    """The TOML name of a decoded value's type, for messages."""
    # bool before int: True is an int to Python but not to TOML.
    for kind, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (datetime, "datetime"),
        (date, "date"),
        (time, "time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def as_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type_name(value)}")
    return value


def as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type_name(value)}")
    return value


def as_int(low: int | None = None, high: int | None = None) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, not {type_name(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise ValueError(f"must be at least {low} (got {value})")
            if low is None:
                raise ValueError(f"must be at most {high} (got {value})")
            raise ValueError(f"must be {low}..{high} (got {value})")
        return value

    return parse


_MISSING = object()


class Table:
    def __init__(
        self,
        collector: Collector,
        src: Source,
        path: KeyPath,
        data: Mapping[str, object],
    ) -> None:
        self.collector = collector
        self.src = src
        self.path = path
        self.data = data
        self._seen: set[str] = set()

    # -- reporting ---------------------------------------------------------

    def error(self, key: str | int | None, message: str) -> None:
        path = self.path if key is None else (*self.path, key)
        self.collector.add(self.src, path, message)

    def line(self, key: str | int | None = None) -> int | None:
        path = self.path if key is None else (*self.path, key)
        return self.src.locator.line(path)

    def where(self, key: str | int | None = None) -> str:
        """`file:line` of a key, for "also defined at" messages."""
        line = self.line(key)
        return self.src.display if line is None else f"{self.src.display}:{line}"

    def close(self) -> None:
        """Report keys that no accessor asked for."""
        for key in self.data:
            if key in self._seen:
                continue
            hint = difflib.get_close_matches(key, sorted(self._seen), n=1, cutoff=0.7)
            extra = f' (did you mean "{hint[0]}"?)' if hint else ""
            self.error(key, f"unknown key{extra}")

    # -- access ------------------------------------------------------------

    def allow(self, keys: Iterable[str]) -> None:
        """Mark keys as known without reading them (read elsewhere)."""
        self._seen.update(keys)

    def has(self, key: str) -> bool:
        self._seen.add(key)
        return key in self.data

    def raw(self, key: str) -> object:
        self._seen.add(key)
        return self.data.get(key, _MISSING)

    @overload
    def get(self, key: str, parse: Callable[[object], T], default: T) -> T: ...

    @overload
    def get(
        self,
        key: str,
        parse: Callable[[object], T],
        default: None = None,
        *,
        required: bool = False,
    ) -> T | None: ...

    def get(
        self,
        key: str,
        parse: Callable[[object], T],
        default: T | None = None,
        *,
        required: bool = False,
    ) -> T | None:
        value = self.raw(key)
        if value is _MISSING:
            if required:
                self.error(key, "required key missing")
            return default
        try:
            return parse(value)
        except ValueError as e:
            self.error(key, str(e))
            return default

    def array(
        self, key: str, parse: Callable[[object], T], *, required: bool = False
    ) -> tuple[T, ...] | None:
        """An array whose elements are checked one by one (errors at `key[i]`)."""
        value = self.raw(key)
        if value is _MISSING:
            if required:
                self.error(key, "required key missing")
            return None
        if not isinstance(value, list):
            self.error(key, f"must be an array, not {type_name(value)}")
            return None
        out: list[T] = []
        for i, item in enumerate(value):
            try:
                out.append(parse(item))
            except ValueError as e:
                self.collector.add(self.src, (*self.path, key, i), str(e))
        return tuple(out)

    def table(self, key: str, *, required: bool = False) -> Table | None:
        """A sub-table (`[a.b]`, or an inline table)."""
        value = self.raw(key)
        if value is _MISSING:
            if required:
                self.error(key, f"required table [{format_key((*self.path, key))}] missing")
            return None
        if not isinstance(value, dict):
            self.error(key, f"must be a table, not {type_name(value)}")
            return None
        return Table(self.collector, self.src, (*self.path, key), value)

    def tables(self, key: str, what: str = "array of tables") -> list[Table]:
        """An array of tables (`[[x]]`, or an array of inline tables)."""
        value = self.raw(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            hint = (
                f" (write [[{format_key((*self.path, key))}]])" if isinstance(value, dict) else ""
            )
            self.error(key, f"must be an {what}, not {type_name(value)}{hint}")
            return []
        out: list[Table] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(Table(self.collector, self.src, (*self.path, key, i), item))
            else:
                self.collector.add(
                    self.src, (*self.path, key, i), f"must be a table, not {type_name(item)}"
                )
        return out

    def named_tables(self, key: str) -> list[tuple[str, Table]]:
        """A table of tables (`[plans.<name>]`), in file order."""
        sub = self.table(key)
        if sub is None:
            return []
        out: list[tuple[str, Table]] = []
        for name, item in sub.data.items():
            sub.allow([name])
            if isinstance(item, dict):
                out.append((name, Table(self.collector, self.src, (*sub.path, name), item)))
            else:
                header = format_key((*sub.path, name))
                sub.error(name, f"must be a table [{header}], not {type_name(item)}")
        return out
