"""Durable storage: SQLite with a group-commit writer."""

from monitor.store.sqlite import SchemaTooNew, Store, backup, migrate, schema_version
from monitor.store.writer import StorageUnavailable

__all__ = ["SchemaTooNew", "StorageUnavailable", "Store", "backup", "migrate", "schema_version"]
