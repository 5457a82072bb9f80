-- Times are REAL unix seconds (UTC): sortable, zone-free, exact enough.
CREATE TABLE alarms (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    device      TEXT NOT NULL,
    report_id   TEXT NOT NULL,
    channel     TEXT NOT NULL,
    format      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    component   TEXT NOT NULL,
    code        TEXT NOT NULL,
    message     TEXT NOT NULL,
    model       TEXT NOT NULL DEFAULT '',
    host        TEXT NOT NULL DEFAULT '',
    occurred    TEXT,
    received_at REAL NOT NULL,
    stored_at   REAL NOT NULL,
    coverage    TEXT NOT NULL,
    contract    TEXT,
    incident    INTEGER,
    peer        TEXT NOT NULL DEFAULT '',
    raw         BLOB,
    UNIQUE (device, report_id)
);
CREATE INDEX alarms_incident ON alarms (incident);
CREATE INDEX alarms_contract ON alarms (contract, seq);
CREATE INDEX alarms_stored ON alarms (stored_at);

CREATE TABLE incidents (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    contract        TEXT NOT NULL,
    plan            TEXT NOT NULL,
    device          TEXT NOT NULL,
    component       TEXT NOT NULL,
    code            TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    severity        TEXT NOT NULL,
    state           TEXT NOT NULL,
    title           TEXT NOT NULL,
    count           INTEGER NOT NULL,
    first_seen      REAL NOT NULL,
    last_seen       REAL NOT NULL,
    due_at          REAL,
    raised_at       REAL,
    respond_by      REAL,
    recovered_at    REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    resolved_at     REAL,
    after_hours     INTEGER NOT NULL DEFAULT 0,
    fee_estimate    INTEGER,
    -- notification progress (SPEC 4.5): round number, the index of the last
    -- contact notified in it, and the next step the scheduler owes.
    round           INTEGER NOT NULL DEFAULT 0,
    contact_index   INTEGER NOT NULL DEFAULT -1,
    next_step       TEXT,
    next_step_at    REAL,
    sla_counted     INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL
);
-- One unresolved incident per fingerprint: dedup is a unique key, not a race.
CREATE UNIQUE INDEX incidents_unresolved_fp ON incidents (fingerprint) WHERE state != 'resolved';
CREATE INDEX incidents_state ON incidents (state, id);
CREATE INDEX incidents_contract ON incidents (contract, id);
CREATE INDEX incidents_device ON incidents (device, id);
CREATE INDEX incidents_step ON incidents (next_step_at) WHERE next_step_at IS NOT NULL;
CREATE INDEX incidents_sla ON incidents (respond_by) WHERE sla_counted = 0 AND respond_by IS NOT NULL;

CREATE TABLE notices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident    INTEGER NOT NULL,
    round       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    contact     TEXT NOT NULL,
    transport   TEXT NOT NULL,
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    status      TEXT NOT NULL,      -- pending | delivered | failed | cancelled
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,      -- daemon clock
    next_try    REAL NOT NULL,      -- wall clock: retries run on wall time
    delivered_at REAL,
    last_error  TEXT,
    fee_estimate INTEGER,
    UNIQUE (key, transport)
);
CREATE INDEX notices_incident ON notices (incident, id);
CREATE INDEX notices_pending ON notices (next_try) WHERE status = 'pending';

CREATE TABLE notice_attempts (
    notice      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  REAL NOT NULL,      -- wall clock
    outcome     TEXT,               -- NULL while in flight (or lost in a crash)
    error       TEXT,
    PRIMARY KEY (notice, attempt)
);

CREATE TABLE quarantine (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    peer        TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    size        INTEGER NOT NULL,
    raw         BLOB
);
CREATE INDEX quarantine_received ON quarantine (received_at);

CREATE TABLE heartbeats (
    serial      TEXT PRIMARY KEY,
    last_seen   REAL,
    interval    REAL,
    status      TEXT,               -- online | offline
    silent_since REAL               -- set while an AGENT-SILENT is raised
);

-- Incident change feed for SSE (`id:` = seq, Last-Event-ID resumes here).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    incident    INTEGER NOT NULL,
    contract    TEXT NOT NULL,
    at          REAL NOT NULL
);

CREATE TABLE counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
