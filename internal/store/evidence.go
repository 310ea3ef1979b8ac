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

// The statements of writeEvidence, on the hot write path. An attestation
// that measured what is stored touches only its time and number: on SQLite
// the one page holding the row's end (the unchanged evidence pages are not
// rewritten), on PostgreSQL a tuple whose TOASTed bodies are not copied.
const (
	touchEvidence = `UPDATE evidence SET verified_at = $2, seq = $3
		WHERE host = $1 AND measurements = $4`
	upsertEvidence = `INSERT INTO evidence (host, evidence, nonce, measurements, verified_at, seq, content_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (host) DO UPDATE SET evidence = excluded.evidence, nonce = excluded.nonce,
			measurements = excluded.measurements, verified_at = excluded.verified_at, seq = excluded.seq,
			content_hash = excluded.content_hash`
)

// writeEvidence makes ev, verified by attestation seq, the host's latest
// evidence in tx: in full when its measurements differ from the stored
// ones (or none are stored), else only its time and number (see
// EvidenceRecord).
func (s *Store) writeEvidence(ctx context.Context, tx *sql.Tx, ev *EvidenceRecord, seq int64) error {
	res, err := s.txExec(ctx, tx, touchEvidence, ev.Host, micros(ev.VerifiedAt), seq, ev.Measurements)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	sum := sha256.Sum256(ev.Evidence)
	_, err = s.txExec(ctx, tx, upsertEvidence, ev.Host, ev.Evidence, ev.Nonce, ev.Measurements, micros(ev.VerifiedAt), seq, sum[:])
	return err
}

// LatestEvidence returns the host's latest verified evidence, or
// ErrNotFound when it has none.
func (s *Store) LatestEvidence(ctx context.Context, host string) (EvidenceRecord, error) {
	e := EvidenceRecord{Host: host}
	var at int64
	err := s.rdb.QueryRowContext(ctx, `SELECT evidence, nonce, measurements, verified_at, seq, content_hash FROM evidence WHERE host = $1`, host).
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
