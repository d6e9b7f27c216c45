-- sandboxer's state, schema version 1, for both backends: the one word
-- the dialects spell differently, an ever-growing integer key, is filled in
-- by schema::sql_for.
-- Times are RFC 3339 UTC text with milliseconds (`2026-12-05T04:33:22.123Z`),
-- which sorts as the time it names.

CREATE TABLE sandboxes (
    seq         @SERIAL@,
    id          TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    profile     TEXT NOT NULL,
    host        TEXT NOT NULL,
    extension   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    ended_at    TEXT,
    -- The record as consumers read it (`get --json`, `list --json`, the
    -- API): its JSON without `backend`, so a list copies it as it is...
    record      TEXT NOT NULL,
    -- ...and the extension's private state apart (NULL when none).
    backend     TEXT
);
-- The filters of `list` and the reaper's scans.
CREATE INDEX sandboxes_by_state ON sandboxes (state, seq);
CREATE INDEX sandboxes_by_actor ON sandboxes (actor, seq);
CREATE INDEX sandboxes_by_profile ON sandboxes (profile, seq);
CREATE INDEX sandboxes_by_host ON sandboxes (host, seq);
CREATE INDEX sandboxes_live ON sandboxes (host) WHERE state NOT IN ('destroyed', 'failed');
CREATE INDEX sandboxes_expiring ON sandboxes (expires_at) WHERE state NOT IN ('destroyed', 'failed');

CREATE TABLE idempotency (
    actor         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    sandbox_id    TEXT NOT NULL,
    PRIMARY KEY (actor, key)
);

CREATE TABLE outbox (
    seq           @SERIAL@,
    sandbox_id    TEXT NOT NULL,
    event         TEXT NOT NULL
);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    actor       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    record      TEXT NOT NULL
);

CREATE TABLE tokens (
    name        TEXT PRIMARY KEY,
    actor       TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE ledger_entries (
    seq         @SERIAL@,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    actor       TEXT,
    sandbox_id  TEXT,
    at          TEXT NOT NULL,
    entry       TEXT NOT NULL
);
CREATE INDEX ledger_by_actor ON ledger_entries (actor, seq);
CREATE INDEX ledger_by_sandbox ON ledger_entries (sandbox_id);

CREATE TABLE accounts (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE holds (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
