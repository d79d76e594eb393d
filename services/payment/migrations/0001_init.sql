-- The payment service's tables. Times are unix millis; money is minor units.

-- One payment per order: its state and the last four digits of its card (never the number).
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    decline_reason TEXT,
    provider_charge_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_newest ON payments (created_at_ms, payment_id);

-- The reply given to each idempotency key: a command with a known key gets it again.
CREATE TABLE IF NOT EXISTS idempotency (
    idempotency_key TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    order_id TEXT NOT NULL,
    reply_type TEXT NOT NULL,
    reply TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Orders voided before any authorization arrived: a late authorization is declined, so a
-- cancelled order never keeps a hold.
CREATE TABLE IF NOT EXISTS voided_orders (
    order_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- The simulated provider's own ledger, standing in for a real provider's idempotency: one
-- row per idempotency key, written outside the service's transactions (as a remote call
-- would be), so a re-run after a crash finds the call it already made.
CREATE TABLE IF NOT EXISTS provider_charges (
    idempotency_key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    outcome TEXT NOT NULL,
    decline_reason TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS provider_charges_by_charge ON provider_charges (charge_id);

-- One row per order that a command touched: every command's transaction updates it first,
-- so two commands for one order never decide on the same stale state (a row lock on
-- PostgreSQL; SQLite serialises writers anyway).
CREATE TABLE IF NOT EXISTS payment_locks (
    order_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
