-- The read models, built only from events. Days are UTC `YYYY-MM-DD` of the event's time;
-- amounts in minor units. The bus's inbox is installed by its crate at start-up.
CREATE TABLE IF NOT EXISTS sales_daily (
    day TEXT NOT NULL,
    item_id TEXT NOT NULL,
    name TEXT NOT NULL,
    units BIGINT NOT NULL,
    revenue_minor BIGINT NOT NULL,
    PRIMARY KEY (day, item_id)
);

CREATE TABLE IF NOT EXISTS revenue_daily (
    day TEXT PRIMARY KEY,
    orders BIGINT NOT NULL,
    revenue_minor BIGINT NOT NULL
);

-- stage: placed, confirmed or cancelled; reason: '' except for cancelled.
CREATE TABLE IF NOT EXISTS funnel (
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (stage, reason)
);

-- One row: the time of the latest event applied (unix milliseconds) and how many.
CREATE TABLE IF NOT EXISTS projection_state (
    name TEXT PRIMARY KEY,
    last_event_ms BIGINT NOT NULL,
    events BIGINT NOT NULL
);
