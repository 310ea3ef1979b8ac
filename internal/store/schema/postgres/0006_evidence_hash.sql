-- Version 6: evidence is kept as the agent sent it, with the SHA-256 of
-- those bytes (a verified attestation's identity, and what a copy is
-- checked against).
ALTER TABLE evidence ADD COLUMN content_hash bytea;
