-- Version 4: replicas announce themselves, so that one holding no lease yet
-- counts when the others size their fair share of the hosts.
CREATE TABLE replicas (
    owner      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;
