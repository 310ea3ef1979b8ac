-- trustpool schema, version 1, PostgreSQL.
-- Times are bigint microseconds since the Unix epoch, UTC, as on SQLite, so
-- that both engines compare and round the same way
-- (to_timestamp(col / 1e6) shows one).
-- jsonb columns hold values the store encodes itself (labels, reasons);
-- bytea columns hold bytes returned exactly as written.

CREATE TABLE hosts (
    name       text PRIMARY KEY,
    state      text NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    ek_public  bytea,
    ek_hash    bytea UNIQUE,             -- SHA-256 of ek_public: one EK, one host
    ek_cert    bytea,
    ak_public  bytea,
    ak_name    bytea,
    url        text NOT NULL,
    agent_cert bytea,
    labels     jsonb,                    -- object, NULL when empty
    policy     text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE enrollments (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    ek_public   bytea,
    ek_cert     bytea,
    ak_public   bytea,
    ak_name     bytea,
    url         text NOT NULL,
    csr         bytea,
    secret_hash bytea,
    token_hash  bytea,
    expires_at  bigint NOT NULL,
    created_at  bigint NOT NULL
);
CREATE INDEX enrollments_expires_at ON enrollments (expires_at);

CREATE TABLE join_tokens (
    hash       bytea PRIMARY KEY,        -- SHA-256 of the token; the token itself is never stored
    host       text NOT NULL,
    expires_at bigint NOT NULL,
    created_at bigint NOT NULL,
    used_at    bigint
);

CREATE TABLE verdicts (
    host    text PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    level   text NOT NULL,
    vtime   bigint NOT NULL,
    expiry  bigint NOT NULL,
    policy  text NOT NULL,
    reasons jsonb                        -- array, NULL when empty
);

CREATE TABLE evidence (
    host         text PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    evidence     bytea,
    nonce        bytea,
    measurements bytea,
    verified_at  bigint NOT NULL
);

CREATE TABLE verdict_history (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host    text NOT NULL REFERENCES hosts (name) ON DELETE CASCADE,
    level   text NOT NULL,
    vtime   bigint NOT NULL,
    expiry  bigint NOT NULL,
    policy  text NOT NULL,
    reasons jsonb
);
CREATE INDEX verdict_history_host ON verdict_history (host, id);

CREATE TABLE reference_values (
    name       text NOT NULL,
    version    integer NOT NULL,
    class      text NOT NULL,
    body       bytea NOT NULL,
    created_at bigint NOT NULL,
    created_by text NOT NULL,
    retired    boolean NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE policies (
    name       text NOT NULL,
    version    integer NOT NULL,
    body       bytea NOT NULL,
    created_at bigint NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE audit (
    seq     bigint PRIMARY KEY,
    time    bigint NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    subject text NOT NULL,
    detail  bytea,
    hash    bytea NOT NULL
);

-- The chain's head: appenders update this one row first, which serialises them.
CREATE TABLE audit_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target       text NOT NULL,
    body         bytea,
    attempts     integer NOT NULL,
    next_attempt bigint NOT NULL,
    last_error   text NOT NULL,
    created_at   bigint NOT NULL
);
CREATE INDEX outbox_next_attempt ON outbox (next_attempt, id);

CREATE TABLE api_tokens (
    hash       bytea PRIMARY KEY,        -- SHA-256 of the token
    name       text NOT NULL UNIQUE,
    role       text NOT NULL,
    created_at bigint NOT NULL,
    revoked_at bigint
);

CREATE TABLE leases (
    host       text PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    owner      text NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX leases_owner ON leases (owner);
