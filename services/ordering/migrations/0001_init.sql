-- Orders and their lines. Times are RFC 3339 UTC text with milliseconds (sorts as text);
-- money is integer minor units. The saga's tables (saga_instances, saga_steps) and the bus's
-- (outbox, leases, inbox) are installed by their crates at start-up.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    total_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    idempotency_key TEXT,
    payment_captured BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- One order per user and idempotency key (NULL keys never collide, on both engines).
CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency ON orders (user_id, idempotency_key);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status);

CREATE TABLE IF NOT EXISTS order_lines (
    order_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    item_id TEXT NOT NULL,
    name TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
