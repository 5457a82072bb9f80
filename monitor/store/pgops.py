"""Operations on a PostgreSQL store: `monitor db status` and `monitor backup`.

- `status(url)` reads the schema version without changing anything (the
  store's own `schema_version` creates its table; this one only looks), in a
  read-only session.
- `dump(url, out)` runs `pg_dump --format=custom` (restorable with
  `pg_restore`), one consistent snapshot while the daemons keep writing.

A password never reaches the terminal nor the process list: messages name the
URL through `redact`, whatever a driver or `pg_dump` says is passed through
`scrub`, and `pg_dump` gets the URL without its password on its command line
and the password in its environment (`PGPASSWORD`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# Where the PostgreSQL client programs live when they are not on PATH
# (Debian/Ubuntu: one folder per major version).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
CONNECT_TIMEOUT_S = 10


class PgOpsError(Exception):
    """An operation failed; the message is safe to print (no password)."""


def is_postgres_url(database: str) -> bool:
    return database.lower().startswith(("postgresql://", "postgres://"))


def _split_password(url: str) -> tuple[str, str | None]:
    """(the URL without any password, the password or None)."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, secret = userinfo.partition(":")
        if colon:
            password = unquote(secret)
        netloc = f"{user}@{hostport}" if user else hostport
    kept: list[str] = []
    for item in parts.query.split("&") if parts.query else []:
        key, _, value = item.partition("=")
        if unquote(key).strip().lower() == "password":
            password = unquote(value.replace("+", " ")) if password is None else password
            continue
        kept.append(item)
    # Not urlunsplit: it drops the "//" of an empty host (postgresql:///db).
    clean = f"{parts.scheme}://{netloc}{parts.path}"
    if kept:
        clean += "?" + "&".join(kept)
    if parts.fragment:
        clean += "#" + parts.fragment
    return clean, password


def redact(url: str) -> str:
    """The URL as it may be shown: without its password."""
    return _split_password(url)[0]


def scrub(text: str, url: str) -> str:
    """`text` with every occurrence of the URL's password masked."""
    _, password = _split_password(url)
    for secret in {password, *(_raw_secrets(url))}:
        if secret:
            text = text.replace(secret, "***")
    return text


def _raw_secrets(url: str) -> list[str]:
    """The password as written in the URL (percent-encoded), for scrubbing."""
    out = []
    m = re.match(r"^[^:]+://([^@/?#]*):([^@/?#]*)@", url)
    if m:
        out.append(m.group(2))
    out.extend(re.findall(r"[?&]password=([^&#]*)", url, flags=re.IGNORECASE))
    return out


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# -- db status ------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    version: int | None  # None: no schema_version table (the daemon never started on it)
    newest: int  # this software's newest PostgreSQL migration
    pending: list[str]  # migrations a daemon would apply at start


def status(url: str) -> Status:
    """Schema version and pending migrations, read-only; PgOpsError when unreachable."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise PgOpsError(f"psycopg is not installed: {exc}") from None

    from monitor.store.postgres import migrations

    shipped = migrations()
    newest = max(v for v, _, _ in shipped)
    kwargs: dict[str, Any] = {}
    if "connect_timeout" not in url and "PGCONNECT_TIMEOUT" not in os.environ:
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        with psycopg.connect(url, autocommit=True, **kwargs) as conn:
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            version: int | None = None
            if row is not None and row[0]:
                got = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                version = int(got[0]) if got is not None and got[0] is not None else 0
    except psycopg.Error as exc:
        raise PgOpsError(
            f"cannot read database {redact(url)}: {scrub(_one_line(str(exc)), url)}"
        ) from None
    current = version or 0
    pending = [name for v, name, _ in shipped if v > current]
    return Status(version, newest, pending)


# -- backup ---------------------------------------------------------------------------


def _version_key(folder: str) -> tuple[int, ...]:
    name = Path(folder).parent.name  # /usr/lib/postgresql/<version>/bin
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_program(name: str) -> str | None:
    """`name` on PATH, else under /usr/lib/postgresql/*/bin, newest version first."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob(PG_BIN_GLOB), key=_version_key, reverse=True):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dump(url: str, out: str) -> list[str]:
    """`pg_dump -Fc` of the database into `out`; returns pg_dump's warnings.

    Raises PgOpsError (pg_dump missing or failed, with its stderr) — `out`
    may then hold a partial file, which the caller removes.
    """
    pg_dump = find_program("pg_dump")
    if pg_dump is None:
        raise PgOpsError(
            f"pg_dump not found on PATH nor under {PG_BIN_GLOB}; "
            "install the PostgreSQL client programs (Debian: postgresql-client)"
        )
    clean, password = _split_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    if "connect_timeout" not in url:
        env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
    cmd = [
        pg_dump,
        "--format=custom",
        "--no-password",  # never prompt: fail with a message instead
        f"--file={out}",
        f"--dbname={clean}",
    ]
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, check=False
        )
    except OSError as exc:
        raise PgOpsError(f"cannot run {pg_dump}: {exc}") from None
    lines = [scrub(line, url) for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 0:
        detail = "\n".join(lines) or "(no message)"
        raise PgOpsError(
            f"{pg_dump} exited with status {proc.returncode} on {redact(url)}:\n{detail}"
        )
    return lines


__all__ = [
    "PgOpsError",
    "Status",
    "dump",
    "find_program",
    "is_postgres_url",
    "redact",
    "scrub",
    "status",
]
