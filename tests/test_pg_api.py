"""The HTTP API's tenancy and list tests again, on PostgreSQL.

The test functions are those of tests/test_tenancy.py (every route, every
role, list filters and cursors, the event stream live and on replay); an
autouse fixture points their `write_config` at a fresh PostgreSQL database.
The SQL behind the lists is shared with SQLite, so this is what catches SQL
that only one of the two accepts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import test_tenancy as tenancy
from tests.support import daemon as support
from tests.support.postgres import pg_server, pg_url  # noqa: F401
from tests.test_tenancy import (  # noqa: F401  (collected again here)
    test_customer_never_sees_another_contract,
    test_event_stream_is_filtered_live_and_on_replay,
    test_roles_per_endpoint,
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    original = support.write_config

    @functools.wraps(original)
    def write_config(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("db_url", pg_url)
        return original(*args, **kwargs)

    monkeypatch.setattr(tenancy, "write_config", write_config)
    yield
    with psycopg.connect(pg_url) as conn:  # the test really ran on PostgreSQL
        row = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert row is not None and row[0] > 0
