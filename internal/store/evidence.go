package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// EvidenceRecord is a host's latest verified evidence: what the verifier
// accepted as genuine (signature, nonce, digest and replay checked) and the
// measurements it derived. The store keeps the bytes opaque.
//
// A steady host measures the same boot at every attestation, so its
// evidence is stored in full only when its measurements change: Evidence,
// Nonce and ContentHash are those of the first verified attestation that
// measured what Measurements holds, and VerifiedAt and Seq those of the
// latest one. The evidence and its nonce always belong together (a bundle
// of them verifies offline), and so do the measurements and the latest
// verification time.
type EvidenceRecord struct {
	Host         string
	Evidence     []byte // the evidence document (JSON), as the agent sent it
	Nonce        []byte // the challenge's nonce the quote answered
	Measurements []byte // the measurements the verifier derived (JSON)
	VerifiedAt   time.Time
	Seq          int64  // the attestation's number (verdict.Verdict.Seq)
	ContentHash  []byte // SHA-256 of Evidence, set by the store
}

// upsertEvidence stores a host's evidence in full. RecordVerdicts runs it
// only when the measurements differ from the stored ones (the verdict row
// keeps their hash): a steady host's attestation then writes its verdict
// row alone, with the time and number of this latest verification, and
// never rewrites the evidence's kilobytes (on SQLite an update of a row
// reads and rewrites all of it).
const upsertEvidence = `INSERT INTO evidence (host, evidence, nonce, measurements, verified_at, seq, content_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (host) DO UPDATE SET evidence = excluded.evidence, nonce = excluded.nonce,
			measurements = excluded.measurements, verified_at = excluded.verified_at, seq = excluded.seq,
			content_hash = excluded.content_hash`

// writeEvidence makes ev, verified by attestation seq, the host's stored
// evidence in tx.
func (s *Store) writeEvidence(ctx context.Context, tx *sql.Tx, ev *EvidenceRecord, seq int64) error {
	sum := sha256.Sum256(ev.Evidence)
	_, err := s.txExec(ctx, tx, upsertEvidence, ev.Host, ev.Evidence, ev.Nonce, ev.Measurements, micros(ev.VerifiedAt), seq, sum[:])
	return err
}

// latestVerification is the time and number of the stored evidence's
// latest verification, in a query joining evidence e and verdicts v.
const latestVerification = `COALESCE(v.evidence_at, e.verified_at), COALESCE(v.evidence_seq, e.seq)`

// LatestEvidence returns the host's latest verified evidence, or
// ErrNotFound when it has none.
func (s *Store) LatestEvidence(ctx context.Context, host string) (EvidenceRecord, error) {
	e := EvidenceRecord{Host: host}
	var at int64
	err := s.rdb.QueryRowContext(ctx, `SELECT e.evidence, e.nonce, e.measurements, `+latestVerification+`, e.content_hash
		FROM evidence e LEFT JOIN verdicts v ON v.host = e.host WHERE e.host = $1`, host).
		Scan(&e.Evidence, &e.Nonce, &e.Measurements, &at, &e.Seq, &e.ContentHash)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return EvidenceRecord{}, fmt.Errorf("latest evidence of %s: %w", host, err)
	}
	e.VerifiedAt = fromMicros(at)
	return e, nil
}
