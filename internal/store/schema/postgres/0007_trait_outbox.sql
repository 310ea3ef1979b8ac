-- Version 7: Placement trait changes are outbox rows, written in the
-- transaction of the level change they follow (or by the reconcile that
-- found a provider wrong). One row a host: a newer change bumps gen, so a
-- sync that applied an older state leaves the row for the next one.
-- claimed_by/claimed_until let one replica at a time apply a host's row.
CREATE TABLE trait_outbox (
    host          text PRIMARY KEY,
    gen           bigint NOT NULL,
    attempts      integer NOT NULL,
    next_attempt  bigint NOT NULL,
    claimed_by    text NOT NULL,
    claimed_until bigint NOT NULL,
    last_error    text NOT NULL,
    created_at    bigint NOT NULL
);
CREATE INDEX trait_outbox_next_attempt ON trait_outbox (next_attempt, host);

-- Periodic jobs that one replica at a time runs (the full Placement
-- reconcile): whoever moves next_run forward runs it.
CREATE TABLE jobs (
    name     text PRIMARY KEY,
    owner    text NOT NULL,
    next_run bigint NOT NULL
);
