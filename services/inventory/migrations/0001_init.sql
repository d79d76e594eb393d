-- Stock per catalog item. `available` can still be reserved; `reserved` is held by orders in
-- flight; `committed` is sold. None is ever negative: every change is one conditional
-- UPDATE, and the CHECKs catch a bug rather than let it corrupt the counts.
CREATE TABLE stock (
    item_id TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    committed BIGINT NOT NULL DEFAULT 0 CHECK (committed >= 0),
    version BIGINT NOT NULL DEFAULT 1,
    updated_at_ms BIGINT NOT NULL
);

-- One row per order that asked for stock, keyed by the order: a repeated command finds it
-- and answers the stored outcome. status: reserved | rejected | released | committed.
-- `item_id` and `reason` say why a rejected order was refused (and why one was released).
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    item_id TEXT,
    reason TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- The lines an order asked for, duplicates merged. Only reservations in status reserved
-- or committed hold these units.
CREATE TABLE reservation_lines (
    order_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (order_id, item_id)
);

CREATE INDEX reservations_status ON reservations (status);
