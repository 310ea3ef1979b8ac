-- Version 5: push mode. A host's agent is either dialled by the server
-- (pull: it listens at url) or dials the server itself (push: it opens no
-- port, fetches a challenge and posts its evidence; url is empty). The
-- server owns the schedule in both modes.
ALTER TABLE hosts ADD COLUMN mode TEXT NOT NULL DEFAULT 'pull';
