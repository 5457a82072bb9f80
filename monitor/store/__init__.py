"""Durable storage: SQLite with a group-commit writer, or PostgreSQL (scale-out)."""

from monitor.store.sqlite import SchemaTooNew, Store, backup, migrate, schema_version
from monitor.store.writer import StorageUnavailable


def open_store(database: str, instance: str = "") -> Store:
    """The store for `[daemon] database`: a postgresql:// URL or an SQLite path."""
    if database.startswith(("postgresql://", "postgres://")):
        from monitor.store.postgres import PgStore

        return PgStore(database, instance=instance)
    return Store(database)


__all__ = [
    "SchemaTooNew",
    "StorageUnavailable",
    "Store",
    "backup",
    "migrate",
    "open_store",
    "schema_version",
]
