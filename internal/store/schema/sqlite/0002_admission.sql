-- Version 2: a host row exists only once the host is admitted; requests
-- awaiting an operator's approval live in pending_hosts and own nothing.
-- Host names are canonical (lower case): one name, one host, whatever the case.

-- Hosts admitted before version 2 were left pending with a certificate;
-- they enroll again and wait for approval.
DELETE FROM hosts WHERE state = 'pending';
CREATE UNIQUE INDEX hosts_name_lower ON hosts (lower(name));

ALTER TABLE enrollments ADD COLUMN source TEXT NOT NULL DEFAULT '';

-- A TPM that passed credential activation without a join token. The agent
-- polls with a secret whose hash is poll_hash; cert is set on approval.
CREATE TABLE pending_hosts (
    poll_hash  BLOB PRIMARY KEY,
    host       TEXT NOT NULL,
    ek_hash    BLOB NOT NULL,
    ek_public  BLOB NOT NULL,
    ek_cert    BLOB,
    ak_public  BLOB NOT NULL,
    ak_name    BLOB NOT NULL,
    url        TEXT NOT NULL,
    csr        BLOB NOT NULL,
    source     TEXT NOT NULL,
    cert       BLOB,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    UNIQUE (host, ek_hash)
) STRICT;
CREATE INDEX pending_hosts_expires_at ON pending_hosts (expires_at);
