"""Every metric of SPEC 8, in the daemon's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# `*_created` series double the scrape size and no dashboard or rule uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NOTICE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# What retention counts (monitor/retention.py); `alarms_raw` is raw bytes
# emptied on alarms that are kept.
RETENTION_TABLES = (
    "alarms",
    "alarms_raw",
    "quarantine",
    "incidents",
    "notices",
    "notice_attempts",
    "events",
)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.alarms_received = Counter(
            "monitor_alarms_received",
            "Alarms received and stored, by channel and format",
            ["channel", "format"],
            registry=r,
        )
        self.alarms_rejected = Counter(
            "monitor_alarms_rejected",
            "Input rejected (and quarantined), by channel and reason",
            ["channel", "reason"],
            registry=r,
        )
        self.alarms_duplicate = Counter(
            "monitor_alarms_duplicate",
            "Duplicates: exact re-sends, or folded into an incident",
            ["kind"],
            registry=r,
        )
        self.alarms_uncovered = Counter(
            "monitor_alarms_uncovered",
            "Alarms kept but not raised because the device is not covered",
            ["coverage"],
            registry=r,
        )
        self.incidents_raised = Counter(
            "monitor_incidents_raised",
            "Incidents raised (went open), by plan and severity",
            ["plan", "severity"],
            registry=r,
        )
        self.incidents = Gauge("monitor_incidents", "Incidents by state", ["state"], registry=r)
        self.notices = Counter(
            "monitor_notices",
            "Notice transport attempts by outcome",
            ["transport", "outcome"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "monitor_ingest_seconds",
            "Receipt to durable commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notice_seconds = Histogram(
            "monitor_notice_seconds",
            "Incident raised to first notice delivered (daemon clock)",
            buckets=NOTICE_BUCKETS,
            registry=r,
        )
        self.sla_breaches = Counter(
            "monitor_sla_breaches", "Incidents not acknowledged by respond_by", registry=r
        )
        self.listener_up = Gauge(
            "monitor_listener_up", "1 while a listener is up", ["listener"], registry=r
        )
        self.agents_silent = Gauge(
            "monitor_agents_silent", "Devices whose agent is silent", registry=r
        )
        self.quarantine_bytes = Gauge(
            "monitor_quarantine_bytes", "Bytes held in quarantine", registry=r
        )
        self.store_batches = Counter(
            "monitor_store_commits", "Group commits by the store writer", registry=r
        )
        self._store_batches_seen = 0
        self.store_up = Gauge("monitor_store_up", "1 while the store takes writes", registry=r)
        self.config_reloads = Counter(
            "monitor_config_reloads", "SIGHUP reloads by outcome", ["outcome"], registry=r
        )
        # PostgreSQL only (several instances): the event feed's ordering
        # (docs/scale-out.md "SSE across instances"), synced at scrape time.
        self.event_feed = Counter(
            "monitor_event_feed",
            "Event-feed rounds that gave up waiting for older transactions (capped),"
            " and events published after newer ones (late: a resuming SSE client"
            " may have missed them)",
            ["outcome"],
            registry=r,
        )
        self._event_feed_seen: dict[str, int] = {"capped": 0, "late": 0}
        self.config_restart_pending = Gauge(
            "monitor_config_restart_pending",
            "1 while the loaded config changes keys that apply only at a restart"
            " (listen addresses, store, MQTT session, serial ports)",
            registry=r,
        )
        self.scheduler_steps = Counter(
            "monitor_scheduler_steps", "Scheduler steps taken by kind", ["step"], registry=r
        )
        # Operations (issue 12): retention, and the deferred queue against
        # the daemon clock (a simulated clock makes Prometheus' time() wrong).
        self.retention_pruned = Counter(
            "monitor_retention_pruned",
            "Rows removed by retention (alarms_raw: raw bytes emptied), by table",
            ["table"],
            registry=r,
        )
        self.retention_runs = Counter(
            "monitor_retention_runs",
            "Retention passes by outcome (ok | failed | skipped: another instance ran it)",
            ["outcome"],
            registry=r,
        )
        self.deferred_next_due = Gauge(
            "monitor_deferred_next_due_timestamp_seconds",
            "Earliest due_at of the deferred incidents (unix seconds, daemon clock); 0 if none",
            registry=r,
        )
        self.clock_time = Gauge(
            "monitor_clock_timestamp_seconds",
            "The daemon clock at scrape time (unix seconds; differs from time() when simulated)",
            registry=r,
        )
        for state in ("deferred", "open", "notified", "acknowledged", "resolved"):
            self.incidents.labels(state=state).set(0)
        for table in RETENTION_TABLES:
            self.retention_pruned.labels(table=table)
        for outcome in ("ok", "failed", "skipped"):
            self.retention_runs.labels(outcome=outcome)

    def sync_event_feed(self, counts: dict[str, int]) -> None:
        """Catch the counter up with the feed thread's own counts."""
        for outcome, value in counts.items():
            seen = self._event_feed_seen.get(outcome, 0)
            if value > seen:
                self.event_feed.labels(outcome=outcome).inc(value - seen)
                self._event_feed_seen[outcome] = value

    def sync_store_commits(self, batches: int) -> None:
        """The writer thread counts commits; the counter catches up at scrape
        time rather than taking a lock on the commit path."""
        if batches > self._store_batches_seen:
            self.store_batches.inc(batches - self._store_batches_seen)
            self._store_batches_seen = batches
