"""A psycopg (3, sync) connection that looks enough like sqlite3's to run the
store's transaction functions unchanged.

The shared SQL is kept portable (`?` placeholders, standard upserts); this
adapter only does what cannot be written portably:

- `?` -> `%s` (and a literal `%` -> `%%`);
- `INSERT OR IGNORE INTO` -> `INSERT INTO … ON CONFLICT DO NOTHING`;
- `cursor.lastrowid`: an INSERT into a table with an identity key gets
  `RETURNING <key>` appended;
- rows come back as `Row`: a tuple that also answers `row["column"]` and
  `row.keys()`, like `sqlite3.Row`;
- errors are raised as subclasses of the matching `sqlite3` exceptions, so
  callers that catch `sqlite3.Error` / `sqlite3.IntegrityError` keep working;
  `.sqlstate` carries PostgreSQL's code;
- parameters: `bool` -> `int` (SQLite has no booleans), NUL in text ->
  U+FFFD (PostgreSQL text cannot hold NUL).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker

# Tables whose primary key is an identity column: lastrowid comes from it.
IDENTITY_KEYS = {
    "alarms": "seq",
    "incidents": "id",
    "notices": "id",
    "quarantine": "seq",
    "events": "seq",
    "agent_outbox": "seq",
}

_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+IGNORE\s+)?INTO\s+(\w+)", re.IGNORECASE)
# serialization failure, deadlock, unique violation, lock wait timed out
_RETRY_STATES = frozenset({"40001", "40P01", "23505", "55P03"})


class PgIntegrityError(sqlite3.IntegrityError):
    sqlstate: str | None = None


class PgOperationalError(sqlite3.OperationalError):
    sqlstate: str | None = None


class PgDataError(sqlite3.DataError):
    sqlstate: str | None = None


def retryable(exc: BaseException) -> bool:
    """A conflict with another transaction: run the job again, it will see it."""
    return getattr(exc, "sqlstate", None) in _RETRY_STATES


def _mapped(exc: psycopg.Error) -> sqlite3.Error:
    err: PgIntegrityError | PgDataError | PgOperationalError
    if isinstance(exc, psycopg.IntegrityError):
        err = PgIntegrityError(str(exc))
    elif isinstance(exc, psycopg.DataError):
        err = PgDataError(str(exc))
    else:
        err = PgOperationalError(str(exc))
    err.sqlstate = exc.sqlstate
    return err


class Row(tuple[Any, ...]):
    """A result row: by index like a tuple, by name like `sqlite3.Row`."""

    __slots__ = ()
    _index: dict[str, int] = {}  # noqa: RUF012  (set on per-shape subclasses)
    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


_shapes: dict[tuple[str, ...], type[Row]] = {}


def _row_class(names: tuple[str, ...]) -> type[Row]:
    cls = _shapes.get(names)
    if cls is None:
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name, i)
        cls = type("Row", (Row,), {"__slots__": (), "_index": index, "_names": names})
        _shapes[names] = cls
    return cls


def row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    desc = cursor.description
    if desc is None:
        return lambda values: Row(values)
    cls = _row_class(tuple(d.name for d in desc))
    return lambda values: cls(values)


_sql_cache: dict[str, tuple[str, str | None]] = {}


def translate(sql: str) -> tuple[str, str | None]:
    """(PostgreSQL text, identity column returned for lastrowid or None)."""
    hit = _sql_cache.get(sql)
    if hit is not None:
        return hit
    out = sql.replace("%", "%%").replace("?", "%s")
    key: str | None = None
    m = _INSERT.match(out)
    if m is not None:
        if m.group(1):
            out = out[: m.start(1)] + out[m.end(1) :]
            if "ON CONFLICT" not in out.upper():
                out = out.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
        key = IDENTITY_KEYS.get(m.group(2).lower())
        if key is not None and "RETURNING" not in out.upper():
            out = f"{out.rstrip().rstrip(';')} RETURNING {key}"
        else:
            key = None
    if len(_sql_cache) < 4096:
        _sql_cache[sql] = (out, key)
    return out, key


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class Cursor:
    def __init__(self, cur: psycopg.Cursor[Row], key: str | None) -> None:
        self._cur = cur
        self.lastrowid: int | None = None
        self.rowcount = cur.rowcount
        if key is not None:
            row = cur.fetchone()
            self.lastrowid = int(row[0]) if row is not None else None

    def fetchone(self) -> Row | None:
        if self._cur.description is None:
            return None
        return self._cur.fetchone()

    def fetchall(self) -> list[Row]:
        if self._cur.description is None:
            return []
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


# Every connection of the store: give up connecting after 5 s, and notice a
# peer that vanished without closing (a network split, a dead host) within
# ~25 s idle or 30 s of unacknowledged data, instead of hanging the writer.
# Ignored on unix sockets, where the kernel reports a dead server at once.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


class Connection:
    """The part of `sqlite3.Connection` the store's functions use."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.raw = conn

    @classmethod
    def connect(cls, url: str, *, autocommit: bool = False) -> Connection:
        try:
            conn = psycopg.connect(
                url, autocommit=autocommit, row_factory=row_factory, **CONNECT_OPTIONS
            )
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        text, key = translate(sql)
        args = [_param(v) for v in params]
        try:
            cur = self.raw.execute(text, args)
            return Cursor(cur, key)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc

    def run(self, sql: str) -> None:
        """Raw PostgreSQL text (no translation, no parameters)."""
        try:
            self.raw.execute(sql.encode(), prepare=False)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status != psycopg.pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    @property
    def backend_pid(self) -> int:
        return int(self.raw.info.backend_pid)

    def close(self) -> None:
        self.raw.close()
