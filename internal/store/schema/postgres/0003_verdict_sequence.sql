-- Version 3: verdicts are ordered by a per-host sequence, never by wall time.
-- hosts.attest_seq numbers the host's attestations; a verdict, and the
-- evidence it judged, carry the number of their attestation.
ALTER TABLE hosts ADD COLUMN attest_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE verdicts ADD COLUMN seq bigint NOT NULL DEFAULT 0;
ALTER TABLE evidence ADD COLUMN seq bigint NOT NULL DEFAULT 0;
ALTER TABLE verdict_history ADD COLUMN seq bigint NOT NULL DEFAULT 0;
