"""Durable storage: SQLite with a group-commit writer, or PostgreSQL (scale-out)."""

from monitor.store.pgops import PgOpsError, is_postgres_url
from monitor.store.sqlite import SchemaTooNew, Store, migrate, schema_version
from monitor.store.sqlite import backup as sqlite_backup
from monitor.store.writer import StorageUnavailable


def backup(database: str, out: str) -> list[str]:
    """A consistent copy of `[daemon] database`, taken while the daemons run.

    SQLite: the backup API into the file `out`.  PostgreSQL: `pg_dump
    --format=custom` into `out` (restore with `pg_restore`).  Returns
    warnings to show (pg_dump's).  Raises `sqlite3.Error` / `OSError`
    (SQLite) or `PgOpsError` (PostgreSQL; its message holds no password).
    """
    if is_postgres_url(database):
        from monitor.store.pgops import dump

        return dump(database, out)
    sqlite_backup(database, out)
    return []


def open_store(database: str, instance: str = "") -> Store:
    """The store for `[daemon] database`: a postgresql:// URL or an SQLite path."""
    if is_postgres_url(database):
        from monitor.store.postgres import PgStore

        return PgStore(database, instance=instance)
    return Store(database)


__all__ = [
    "PgOpsError",
    "SchemaTooNew",
    "StorageUnavailable",
    "Store",
    "backup",
    "migrate",
    "open_store",
    "schema_version",
]
