"""The pipeline's end-to-end tests again, on PostgreSQL instead of SQLite.

The test functions are those of tests/test_pipeline_e2e.py; an autouse
fixture points their `write_config` at a fresh PostgreSQL database.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import test_pipeline_e2e as e2e
from tests.support import daemon as support
from tests.support.postgres import pg_server, pg_url  # noqa: F401
from tests.test_pipeline_e2e import (  # noqa: F401  (collected again here)
    test_acknowledged_while_deferred_is_not_notified,
    test_coverage_clear_and_resolve,
    test_friday_afternoon_to_tuesday,
    test_notify_critical_after_hours_with_fee,
    test_redfish_push,
    test_rejections_are_quarantined,
    test_window_closes_before_ack_timeout_reminds_next_window,
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    original = support.write_config

    @functools.wraps(original)
    def write_config(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("db_url", pg_url)
        return original(*args, **kwargs)

    monkeypatch.setattr(e2e, "write_config", write_config)
    yield
    # the test really ran on PostgreSQL
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alarms) + (SELECT count(*) FROM quarantine)"
        ).fetchone()
    assert row is not None and row[0] > 0
