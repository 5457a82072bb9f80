-- AGENT-SILENT alarms and their clears that the heartbeat tracker owes the
-- pipeline (SPEC 3.2).  A row is written in the same transaction as the
-- heartbeats change that decides it, and deleted once the pipeline has
-- stored the alarm; after a crash in between it is sent again (the pipeline
-- deduplicates by report id, which the row determines).
CREATE TABLE agent_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    serial      TEXT NOT NULL,
    kind        TEXT NOT NULL,      -- silent | back
    at          REAL NOT NULL,      -- daemon clock: when it went silent / came back
    format      TEXT NOT NULL,      -- heartbeat | status: what decided it
    message     TEXT NOT NULL,
    received    REAL NOT NULL       -- daemon clock: when the tracker decided it
);
