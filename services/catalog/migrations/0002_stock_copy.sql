-- The catalog's `stock` is a read copy of the inventory's `available`, kept by the consumer
-- of `tideway.inventory.level-changed`. `stock_version` is the inventory's version of the
-- last level applied: an event is applied only when its version is newer, so late,
-- repeated or reordered events never move the copy backwards. 0: never heard from the
-- inventory (the seeded figure stands).
ALTER TABLE items ADD COLUMN stock_version BIGINT NOT NULL DEFAULT 0;
