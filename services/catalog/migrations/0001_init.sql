-- The catalog: categories (reference data) and items. Valid on SQLite and PostgreSQL:
-- only TEXT and BIGINT columns; times are RFC 3339 UTC text (sorts as text); money is
-- integer minor units.

CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    position BIGINT NOT NULL
);

CREATE TABLE items (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    brand TEXT NOT NULL,
    category TEXT NOT NULL REFERENCES categories (id),
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    stock BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX items_category ON items (category);
CREATE INDEX items_brand ON items (brand);
CREATE INDEX items_price ON items (price_minor);
CREATE INDEX items_created_at ON items (created_at);
