-- PostgreSQL twin of migrations/0003_offline_grace.sql.
ALTER TABLE heartbeats ADD COLUMN offline_since DOUBLE PRECISION;
