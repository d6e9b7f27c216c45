-- Schema version 2: snapshots (`snap-...`), the saved state of a sandbox
-- that new sandboxes are created from. The record is its JSON, as for
-- uploads, beside the columns listing and the reaper filter on.

CREATE TABLE snapshots (
    seq         @SERIAL@,
    id          TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX snapshots_by_actor ON snapshots (actor, seq);
