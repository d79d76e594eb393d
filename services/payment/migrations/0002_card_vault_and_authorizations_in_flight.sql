-- The card vault: a card number from checkout until its order's authorization or void takes
-- it (seconds), or until it expires; the saga and its commands carry only the token.
CREATE TABLE IF NOT EXISTS card_vault (
    token TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    card_number TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS card_vault_by_order ON card_vault (order_id);
CREATE INDEX IF NOT EXISTS card_vault_by_expiry ON card_vault (expires_at_ms);

-- An authorization sent to the provider and not yet recorded: committed before the call, so a
-- void that arrives meanwhile knows to cancel it at the provider by its idempotency key.
CREATE TABLE IF NOT EXISTS authorizations_in_flight (
    order_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    PRIMARY KEY (order_id, idempotency_key)
);
