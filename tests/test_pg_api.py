"""The HTTP API's tenancy and list tests again, on PostgreSQL.

The test functions are those of tests/test_tenancy.py (every role, list
filters and cursors, the event stream live and on replay); an autouse
fixture points their `write_config` at a fresh PostgreSQL database.
The SQL behind the lists is shared with SQLite, so this is what catches SQL
that only one of the two accepts.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests import test_tenancy as tenancy
from tests.support.postgres import pg_server, pg_url, point_write_config_at  # noqa: F401
from tests.test_tenancy import (  # noqa: F401  (collected again here)
    test_customer_never_sees_another_contract,
    test_event_stream_is_filtered_live_and_on_replay,
    test_roles_per_endpoint,
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    point_write_config_at(pg_url, monkeypatch, tenancy)
    yield
    with psycopg.connect(pg_url) as conn:  # the test really ran on PostgreSQL
        row = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert row is not None and row[0] > 0
