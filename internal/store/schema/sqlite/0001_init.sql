-- trustpool schema, version 1, SQLite.
-- Times are INTEGER microseconds since the Unix epoch, UTC.
-- JSON columns hold values the store encodes itself (labels, reasons);
-- BLOB columns hold bytes returned exactly as written.

CREATE TABLE hosts (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    ek_public  BLOB,
    ek_hash    BLOB UNIQUE,              -- SHA-256 of ek_public: one EK, one host
    ek_cert    BLOB,
    ak_public  BLOB,
    ak_name    BLOB,
    url        TEXT NOT NULL,
    agent_cert BLOB,
    labels     TEXT,                     -- JSON object, NULL when empty
    policy     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE enrollments (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    ek_public   BLOB,
    ek_cert     BLOB,
    ak_public   BLOB,
    ak_name     BLOB,
    url         TEXT NOT NULL,
    csr         BLOB,
    secret_hash BLOB,
    token_hash  BLOB,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX enrollments_expires_at ON enrollments (expires_at);

CREATE TABLE join_tokens (
    hash       BLOB PRIMARY KEY,         -- SHA-256 of the token; the token itself is never stored
    host       TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;

CREATE TABLE verdicts (
    host    TEXT PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    level   TEXT NOT NULL,
    vtime   INTEGER NOT NULL,
    expiry  INTEGER NOT NULL,
    policy  TEXT NOT NULL,
    reasons TEXT                         -- JSON array, NULL when empty
) STRICT;

CREATE TABLE evidence (
    host         TEXT PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    evidence     BLOB,
    nonce        BLOB,
    measurements BLOB,
    verified_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE verdict_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    host    TEXT NOT NULL REFERENCES hosts (name) ON DELETE CASCADE,
    level   TEXT NOT NULL,
    vtime   INTEGER NOT NULL,
    expiry  INTEGER NOT NULL,
    policy  TEXT NOT NULL,
    reasons TEXT
) STRICT;
CREATE INDEX verdict_history_host ON verdict_history (host, id);

CREATE TABLE reference_values (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    class      TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    retired    INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;

CREATE TABLE policies (
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;

CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY,
    time    INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  BLOB,
    hash    BLOB NOT NULL
) STRICT;

-- The chain's head: appenders update this one row first, which serialises them.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    target       TEXT NOT NULL,
    body         BLOB,
    attempts     INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_next_attempt ON outbox (next_attempt, id);

CREATE TABLE api_tokens (
    hash       BLOB PRIMARY KEY,         -- SHA-256 of the token
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE leases (
    host       TEXT PRIMARY KEY REFERENCES hosts (name) ON DELETE CASCADE,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX leases_owner ON leases (owner);
