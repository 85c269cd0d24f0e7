-- Outbound subscriptions, their deliveries (the transactional outbox) and delivery attempts.
CREATE TABLE subscriptions (
    id                      TEXT    PRIMARY KEY,
    url                     TEXT    NOT NULL,
    filter                  TEXT    NOT NULL,  -- JSON {"types","projects","kinds","states"}
    enabled                 INTEGER NOT NULL,
    retry_schedule          TEXT,              -- JSON array of milliseconds; NULL: the default
    secret                  TEXT    NOT NULL,  -- whsec_...
    previous_secret         TEXT,              -- still signing until previous_secret_until_ms
    previous_secret_until_ms INTEGER,
    disabled_reason         TEXT,
    origin                  TEXT    NOT NULL,  -- api | config
    created_ms              INTEGER NOT NULL,
    updated_ms              INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT    NOT NULL,
    seq             INTEGER NOT NULL,          -- the event
    resource        TEXT    NOT NULL,          -- ordering key: one at a time per resource
    state           TEXT    NOT NULL,          -- pending | delivered | dead
    attempts        INTEGER NOT NULL,          -- attempts made, ever
    schedule_pos    INTEGER NOT NULL,          -- failures since the last (re)start of the schedule
    next_attempt_ms INTEGER NOT NULL,
    lease_until_ms  INTEGER NOT NULL,          -- claimed by a dispatcher until then
    last_status     INTEGER,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_order ON deliveries (subscription_id, resource, seq);

CREATE TABLE delivery_attempts (
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    started_ms  INTEGER NOT NULL,
    status      INTEGER,                       -- NULL: no HTTP answer (timeout, refused, ...)
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
