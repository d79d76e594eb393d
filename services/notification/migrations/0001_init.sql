-- Who an order belongs to (from `OrderPlaced`), and the email rendered for each event the
-- service tells a customer about. Times are unix milliseconds. The bus's inbox is installed
-- by its crate at start-up.
CREATE TABLE IF NOT EXISTS recipients (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    email TEXT,
    total_minor BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    text_body TEXT NOT NULL,
    html_body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT
);

CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, created_at_ms);
CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at_ms);
