-- `[mqtt] offline_grace` (SPEC 3.2 flap damping): when an `offline` status
-- arrived that is waiting out its grace before the agent counts as silent;
-- NULL when none is pending.  Neither `silent_since` (it means silent: the
-- gauge counts it) nor `last_seen` (the heartbeat deadline runs from it) can
-- hold that time.
ALTER TABLE heartbeats ADD COLUMN offline_since REAL;
