"""The pipeline's end-to-end, restart and retention tests again, on
PostgreSQL instead of SQLite.

The test functions are those of tests/test_pipeline_e2e.py,
tests/test_pipeline_restart.py and tests/test_retention_daemon.py; an
autouse fixture points their `write_config` at a fresh PostgreSQL database
(an SQLite path a test passes, to share one database between runs, becomes
that same PostgreSQL database).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests import test_pipeline_e2e as e2e
from tests import test_pipeline_restart as restart
from tests import test_retention_daemon as retention
from tests.support.postgres import pg_server, pg_url, point_write_config_at  # noqa: F401
from tests.test_pipeline_e2e import (  # noqa: F401  (collected again here)
    test_acknowledged_while_deferred_is_not_notified,
    test_coverage_clear_and_resolve,
    test_friday_afternoon_to_tuesday,
    test_notify_critical_after_hours_with_fee,
    test_redfish_push,
    test_rejections_are_quarantined,
    test_window_closes_before_ack_timeout_reminds_next_window,
)
from tests.test_pipeline_restart import (  # noqa: F401
    test_deferral_due_while_stopped_is_raised_once_at_start,
    test_event_stream_and_resume,
    test_kill_between_send_and_record_reuses_the_key,
)
from tests.test_retention_daemon import (  # noqa: F401
    test_jump_800_days_prunes_resolved_and_old_keeps_open_and_deferred,
    test_sse_resume_from_a_pruned_event_gets_reset,
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    point_write_config_at(pg_url, monkeypatch, e2e, restart, retention)
    yield
    # the test really ran on PostgreSQL
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alarms) + (SELECT count(*) FROM quarantine)"
        ).fetchone()
    assert row is not None and row[0] > 0
