-- One row per (user, item): the quantity, and the name and price last seen in the catalog
-- (reads always re-price through the catalog; these are kept for diagnostics and as a
-- fallback when an item has left the catalog).
CREATE TABLE basket_lines (
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    name TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL,
    added_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, item_id),
    CHECK (quantity >= 1 AND quantity <= 99)
);
