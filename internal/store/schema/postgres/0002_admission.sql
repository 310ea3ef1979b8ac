-- Version 2: a host row exists only once the host is admitted; requests
-- awaiting an operator's approval live in pending_hosts and own nothing.
-- Host names are canonical (lower case): one name, one host, whatever the case.

-- Hosts admitted before version 2 were left pending with a certificate;
-- they enroll again and wait for approval.
DELETE FROM hosts WHERE state = 'pending';
CREATE UNIQUE INDEX hosts_name_lower ON hosts (lower(name));

ALTER TABLE enrollments ADD COLUMN source text NOT NULL DEFAULT '';

-- A TPM that passed credential activation without a join token. The agent
-- polls with a secret whose hash is poll_hash; cert is set on approval.
CREATE TABLE pending_hosts (
    poll_hash  bytea PRIMARY KEY,
    host       text NOT NULL,
    ek_hash    bytea NOT NULL,
    ek_public  bytea NOT NULL,
    ek_cert    bytea,
    ak_public  bytea NOT NULL,
    ak_name    bytea NOT NULL,
    url        text NOT NULL,
    csr        bytea NOT NULL,
    source     text NOT NULL,
    cert       bytea,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    UNIQUE (host, ek_hash)
);
CREATE INDEX pending_hosts_expires_at ON pending_hosts (expires_at);
