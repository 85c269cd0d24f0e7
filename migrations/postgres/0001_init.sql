-- Event log, deduplication ledger and current resource state.
CREATE TABLE events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       TEXT    NOT NULL,
    source         TEXT    NOT NULL,                  -- canonical object path
    type           TEXT    NOT NULL,
    time           TEXT,                              -- the `time` attribute verbatim
    event_ms       BIGINT  NOT NULL,
    received_ms    BIGINT  NOT NULL,
    project        TEXT    NOT NULL,
    kind           TEXT    NOT NULL,                  -- `unknown` for undocumented event types
    resource_kind  TEXT    NOT NULL,                  -- the kind parsed from `source`
    parent         TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    previous_state TEXT,
    state          TEXT,
    applied        BOOLEAN NOT NULL,                  -- true when it became the resource's state
    origin         TEXT    NOT NULL,                  -- webhook | poll
    data           TEXT,                              -- JSON; NULL once pruned
    raw            BYTEA                              -- bytes as received; NULL once pruned
);

-- The deduplication ledger: (source, id) is unique for as long as the row exists.
CREATE UNIQUE INDEX events_source_id ON events (source, event_id);

CREATE TABLE resources (
    kind           TEXT    NOT NULL,
    project        TEXT    NOT NULL,
    parent         TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    previous_state TEXT,
    version_ms     BIGINT  NOT NULL,
    event_ms       BIGINT  NOT NULL,
    last_seq       BIGINT  NOT NULL,
    created_ms     BIGINT  NOT NULL,
    updated_ms     BIGINT  NOT NULL,
    details        TEXT    NOT NULL,
    PRIMARY KEY (kind, project, parent, name)
);
