-- Version 8: a steady host's attestation writes only its verdict row. The
-- row keeps the SHA-256 of the measurements stored in the host's evidence
-- row and the time and number of their latest verification, so that
-- evidence measuring what is stored is not written again (the evidence row
-- keeps the time and number of the attestation that stored it). NULL: the
-- evidence row's own are the latest.
ALTER TABLE verdicts ADD COLUMN measurements_hash BLOB;
ALTER TABLE verdicts ADD COLUMN evidence_at INTEGER;
ALTER TABLE verdicts ADD COLUMN evidence_seq INTEGER;
