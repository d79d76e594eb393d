-- The audit trail: one row per admin action, chained by hash (see docs/edge.md).
CREATE TABLE IF NOT EXISTS audit_records (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    trace_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
