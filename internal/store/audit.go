package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// The statements of Append.
const (
	advanceHead = `UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash`
	auditInsert = `INSERT INTO audit (seq, time, actor, action, subject, detail, hash) VALUES `
	insertAudit = auditInsert + `($1, $2, $3, $4, $5, $6, $7)`
	updateHead  = `UPDATE audit_head SET hash = $1 WHERE id = 1`
)

// Append adds e to the audit log as the next entry of the hash chain
// (e.Seq and e.Hash are assigned). Appends are serialised by the row lock
// on the chain's head, so concurrent appenders (on any number of replicas)
// never fork the chain. Time, Actor and Action are required; Detail must be
// empty or JSON.
func (s *Store) Append(ctx context.Context, e Entry) error {
	s.warm(ctx, advanceHead, insertAudit, updateHead)
	if err := s.inTx(ctx, func(tx *sql.Tx) error { return s.appendTx(ctx, tx, e) }); err != nil {
		return fmt.Errorf("append audit entry %q: %w", e.Action, err)
	}
	return nil
}

// appendTx appends e to the chain inside tx, so that a change and its audit
// entry commit together or not at all.
func (s *Store) appendTx(ctx context.Context, tx *sql.Tx, e Entry) error {
	return s.appendAllTx(ctx, tx, []Entry{e})
}

// appendAllTx appends es to the chain inside tx, in order, taking their
// numbers from the head at once (a re-evaluation of a fleet audits
// thousands of transitions in one transaction).
func (s *Store) appendAllTx(ctx context.Context, tx *sql.Tx, es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	for _, e := range es {
		if e.Time.IsZero() || e.Actor == "" || e.Action == "" {
			return invalid("audit entry %q: time, actor and action are required", e.Action)
		}
		if len(e.Detail) > 0 && !json.Valid(e.Detail) {
			return invalid("audit entry %q: detail is not JSON", e.Action)
		}
	}
	// Taking the numbers locks the head until commit.
	var last int64
	var prev []byte
	if err := s.txQueryRow(ctx, tx, advanceHead, len(es)).Scan(&last, &prev); err != nil {
		return fmt.Errorf("advance head: %w", err)
	}
	// The hashes chain in order; the rows go many a statement.
	rows := s.newRowBatch(tx, insertAudit, auditInsert, "(?, ?, ?, ?, ?, ?, ?)", "", false)
	for i, e := range es {
		e.Time = Truncate(e.Time)
		e.Seq = last - int64(len(es)-1-i)
		e.Hash = chainHash(prev, e)
		if err := rows.add(ctx, "", e.Seq, micros(e.Time), e.Actor, e.Action, e.Subject, e.Detail, e.Hash); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		prev = e.Hash
	}
	if err := rows.close(ctx); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	if _, err := s.txExec(ctx, tx, updateHead, prev); err != nil {
		return fmt.Errorf("update head: %w", err)
	}
	return nil
}

// ListAudit returns up to limit entries with Seq > afterSeq, in order.
func (s *Store) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]Entry, error) {
	if err := limitOK(limit); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT seq, time, actor, action, subject, detail, hash
		FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	es, err := collect(rows, func(r scanner) (Entry, error) {
		var e Entry
		var at int64
		err := r.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Subject, &e.Detail, &e.Hash)
		e.Time = fromMicros(at)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return es, nil
}

// AuditHead returns the sequence number and hash of the newest entry (0 and
// 32 zero bytes for an empty log). Recording the head outside the database
// is what lets VerifyChain detect a rewritten or truncated log.
func (s *Store) AuditHead(ctx context.Context) (seq int64, hash []byte, err error) {
	if err := s.rdb.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash); err != nil {
		return 0, nil, fmt.Errorf("audit head: %w", err)
	}
	return seq, hash, nil
}
