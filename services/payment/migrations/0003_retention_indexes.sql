-- Pruning by age reads these times.
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at_ms);
CREATE INDEX IF NOT EXISTS provider_charges_by_age ON provider_charges (created_at_ms);
CREATE INDEX IF NOT EXISTS voided_orders_by_age ON voided_orders (created_at_ms);
