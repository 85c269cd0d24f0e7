-- Polling: where each resource's current state came from, the watch list, and leases.

-- `poll` when the relay's own /state polling set the current state: a webhook that later
-- reports the same state confirms it rather than being a second transition.
ALTER TABLE resources ADD COLUMN origin TEXT NOT NULL DEFAULT 'webhook';

-- Resources the relay polls: from configuration (discovered), the API, or the safety net for
-- jobs that stay non-terminal too long. One watch per resource path.
CREATE TABLE watches (
    id             TEXT    PRIMARY KEY,
    path           TEXT    NOT NULL UNIQUE,  -- canonical MK.IO object path
    project        TEXT    NOT NULL,
    source         TEXT    NOT NULL,         -- api | config | safety_net | reconcile
    until_states   TEXT,                     -- comma-separated; NULL: the kind's terminal states
    status         TEXT    NOT NULL,         -- active | done | gone | failed
    last_state     TEXT,
    interval_ms    BIGINT  NOT NULL,
    next_poll_ms   BIGINT  NOT NULL,
    last_polled_ms BIGINT,
    polls          BIGINT  NOT NULL DEFAULT 0,
    error          TEXT,
    created_ms     BIGINT  NOT NULL,
    updated_ms     BIGINT  NOT NULL
);
CREATE INDEX watches_due ON watches (project, next_poll_ms) WHERE status = 'active';

-- Work only one replica may do at a time (polling one project), held until `expires_ms`.
CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);
