package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"trustpool/internal/verdict"
)

// Record is one verdict to record, with the verified evidence it judged
// (nil when verification failed or for a re-evaluation of stored evidence).
type Record struct {
	Verdict  verdict.Verdict
	Evidence *EvidenceRecord
	// Expire makes this the expiry of the stored verdict of the same Seq:
	// it is written only while that verdict is still the host's, not yet
	// unknown, and expired by Verdict.VTime.
	Expire bool
}

// Recorded says what became of a Record.
type Recorded struct {
	// Written: the verdict is now the host's. A verdict of a lower Seq
	// than the stored one, for a host that no longer exists, or an expiry
	// of a verdict already replaced is not written.
	Written bool
	// Gone: not written because the host no longer exists.
	Gone bool
	// Prev is the level the host had when the verdict was established
	// (the stored verdict read at Verdict.VTime: unknown when none, or
	// expired; for an expiry, the level it ends), and Changed says the
	// level moved.
	Prev    verdict.Level
	Changed bool
}

// Transition is what a level change brings with it, written in the same
// transaction as the verdict: its audit entry and its outbox rows (webhook
// notifications, and the host's Placement trait change when Trait is set:
// Host and CreatedAt).
type Transition struct {
	Audit         *Entry
	Notifications []Notification
	Trait         *TraitChange
}

// Consequences returns the Transition of v replacing a verdict of level
// prev. It runs inside the recording transaction and must not block.
type Consequences func(v verdict.Verdict, prev verdict.Level) Transition

// The statements of RecordVerdicts, the hottest write path. A verdict and
// a history row are written alone or, in a batch, many rows a statement
// (rowBatch): the multi-row forms are the same statement with more rows.
const (
	selectStored = `SELECT level, vtime, expiry, seq, measurements_hash FROM verdicts WHERE host = $1`
	// selectHostStored is lockOne and selectStored in one, for engines
	// without row locks.
	selectHostStored = `SELECT v.level, v.vtime, v.expiry, v.seq, v.measurements_hash FROM hosts h LEFT JOIN verdicts v ON v.host = h.name WHERE h.name = $1`
	verdictInsert    = `INSERT INTO verdicts (host, level, vtime, expiry, policy, reasons, seq, measurements_hash, evidence_at, evidence_seq) VALUES `
	historyInsert    = `INSERT INTO verdict_history (host, level, vtime, expiry, policy, reasons, seq) VALUES `
	verdictRow       = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	historyRow       = `(?, ?, ?, ?, ?, ?, ?)`
	// A verdict without evidence (a failure, an expiry, a re-evaluation)
	// keeps the stored evidence's hash, time and number.
	verdictUpdate = `
		ON CONFLICT (host) DO UPDATE SET level = excluded.level, vtime = excluded.vtime,
			expiry = excluded.expiry, policy = excluded.policy, reasons = excluded.reasons, seq = excluded.seq,
			measurements_hash = COALESCE(excluded.measurements_hash, verdicts.measurements_hash),
			evidence_at = COALESCE(excluded.evidence_at, verdicts.evidence_at),
			evidence_seq = COALESCE(excluded.evidence_seq, verdicts.evidence_seq)`
	upsertVerdict     = verdictInsert + `($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)` + verdictUpdate
	insertHistory     = historyInsert + `($1, $2, $3, $4, $5, $6, $7)`
	numberAttestation = `UPDATE hosts SET attest_seq = attest_seq + 1 WHERE name = $1 RETURNING ` + attestColumns + `, attest_seq`
	// attestColumns are hostColumns with NULL for the EK's public area and
	// certificate, which only admission reads (a kilobyte or two a host
	// not copied out of the database at every attestation).
	attestColumns = `name, state, NULL, NULL, ak_public, ak_name, url, agent_cert, labels, policy, created_at, updated_at, mode`
	lockHosts     = `SELECT name FROM hosts h ORDER BY name`
)

// NextSeq numbers a new attestation of host: the Seq its verdict will
// carry, higher than that of every attestation before it. A host that does
// not exist is ErrNotFound.
func (s *Store) NextSeq(ctx context.Context, host string) (int64, error) {
	_, seq, err := s.NumberAttestation(ctx, host)
	return seq, err
}

// NumberAttestation is NextSeq that also returns the host as it is once
// numbered, without its EK (EKPublic and EKCert are nil): the attestation
// path's one statement before the challenge.
func (s *Store) NumberAttestation(ctx context.Context, name string) (Host, int64, error) {
	var seq int64
	h, err := scanHost(s.queryRow(ctx, s.wdb, numberAttestation, name), &seq)
	if err != nil {
		return Host{}, 0, fmt.Errorf("number attestation of %s: %w", name, err)
	}
	return h, seq, nil
}

// stored is a host's stored verdict, as RecordVerdicts compares it.
type stored struct {
	level         verdict.Level
	vtime, expiry int64
	seq           int64
	// measured is the SHA-256 of the measurements in the host's evidence
	// row (nil: unknown, the evidence is written in full).
	measured       []byte
	had, hostKnown bool
}

// at is the stored level read at t (micros): unknown when none or expired.
func (p stored) at(t int64) verdict.Level {
	if !p.had || t >= p.expiry {
		return verdict.Unknown
	}
	return p.level
}

// RecordVerdicts records recs in one transaction, in order: each verdict
// is written unless the host's stored verdict has a higher Seq (see
// Record), with its evidence, a history row when the level changed (or it
// is the host's first), and,
// for every level change, what then returns (nil: nothing). One host's
// writers take turns on its row lock, so the previous level each sees is
// exact; a batch locks its hosts in name order (every host, when large).
func (s *Store) RecordVerdicts(ctx context.Context, recs []Record, then Consequences) ([]Recorded, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	reasons := make([]any, len(recs))
	for i, r := range recs {
		v := r.Verdict
		if v.Host == "" || !v.Level.Valid() {
			return nil, fmt.Errorf("record verdicts: %w", invalid("verdict of host %q, level %q", v.Host, v.Level))
		}
		if r.Evidence != nil && r.Evidence.Host != v.Host {
			return nil, fmt.Errorf("record verdict of %s: %w", v.Host, invalid("evidence of host %q", r.Evidence.Host))
		}
		var err error
		if reasons[i], err = jsonOrNull(v.Reasons, len(v.Reasons) == 0); err != nil {
			return nil, fmt.Errorf("record verdict of %s: encode reasons: %w", v.Host, err)
		}
	}
	out := make([]Recorded, len(recs))
	lockOne := `SELECT 1 FROM hosts h WHERE h.name = $1` + s.eng.forUpdate("h", false)
	s.warm(ctx, lockOne, selectStored, selectHostStored, upsertVerdict, insertHistory, upsertEvidence, upsertTrait,
		advanceHead, insertAudit, updateHead, insertNotification)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		prev, err := s.lockStored(ctx, tx, recs, lockOne)
		if err != nil {
			return err
		}
		// The transitions' audit entries and outbox rows, written at once
		// in the order of the transitions.
		var (
			audits []Entry
			traits []TraitChange
			notes  []Notification
		)
		verdicts := s.newRowBatch(tx, upsertVerdict, verdictInsert, verdictRow, verdictUpdate, true)
		history := s.newRowBatch(tx, insertHistory, historyInsert, historyRow, "", false)
		for i, r := range recs {
			v := r.Verdict
			p := prev[v.Host]
			switch {
			case !p.hostKnown:
				out[i].Gone = true // deleted
				continue
			case r.Expire && (!p.had || p.seq != v.Seq || p.level == verdict.Unknown || p.expiry > micros(v.VTime)):
				continue // replaced, or not expired after all
			case p.had && p.seq > v.Seq:
				continue // a later attestation's verdict stands
			}
			from := p.at(micros(v.VTime))
			if r.Expire {
				from = p.level // the level the expiry ends
			}
			out[i] = Recorded{Written: true, Prev: from, Changed: from != v.Level}
			row := []any{v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons[i], v.Seq}
			// The verdict row's evidence columns (NULL keeps the stored
			// ones); the evidence itself is written only when it measured
			// something else than what is stored.
			measured, evidence := p.measured, []any{nil, nil, nil}
			if ev := r.Evidence; ev != nil {
				sum := sha256.Sum256(ev.Measurements)
				if measured = sum[:]; !bytes.Equal(measured, p.measured) {
					if err := s.writeEvidence(ctx, tx, ev, v.Seq); err != nil {
						return fmt.Errorf("write evidence of %s: %w", v.Host, err)
					}
				}
				evidence = []any{measured, micros(ev.VerifiedAt), v.Seq}
			}
			if err := verdicts.add(ctx, v.Host, append(row, evidence...)...); err != nil {
				return fmt.Errorf("write verdicts (%s): %w", v.Host, err)
			}
			if !p.had || out[i].Changed {
				if err := history.add(ctx, "", row...); err != nil {
					return fmt.Errorf("append history (%s): %w", v.Host, err)
				}
			}
			if out[i].Changed && then != nil {
				t := then(v, from)
				if t.Audit != nil {
					audits = append(audits, *t.Audit)
				}
				if t.Trait != nil {
					traits = append(traits, *t.Trait)
				}
				notes = append(notes, t.Notifications...)
			}
			prev[v.Host] = stored{level: v.Level, vtime: micros(v.VTime), expiry: micros(v.Expiry), seq: v.Seq, measured: measured, had: true, hostKnown: true}
		}
		if err := verdicts.close(ctx); err != nil {
			return fmt.Errorf("write verdicts: %w", err)
		}
		if err := history.close(ctx); err != nil {
			return fmt.Errorf("append history: %w", err)
		}
		if err := s.appendAllTx(ctx, tx, audits); err != nil {
			return fmt.Errorf("audit transitions: %w", err)
		}
		if err := s.enqueueTraitsTx(ctx, tx, traits); err != nil {
			return fmt.Errorf("transitions: %w", err)
		}
		if err := s.enqueueAll(ctx, tx, notes); err != nil {
			return fmt.Errorf("transitions: %w", err)
		}
		// Other replicas re-read what changed: each host written, or all
		// of them after a large batch (cheaper than a notification a host).
		if len(recs) > lockEach {
			return s.notifyTx(ctx, tx, Change{Kind: ChangeVerdict})
		}
		notified := map[string]bool{}
		for i, r := range recs {
			if h := r.Verdict.Host; out[i].Written && !notified[h] {
				notified[h] = true
				if err := s.notifyTx(ctx, tx, Change{Kind: ChangeVerdict, Host: h}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %d verdicts: %w", len(recs), err)
	}
	return out, nil
}

// lockEach is the largest batch whose hosts are locked and read one by
// one; a larger one (a re-evaluation of the fleet) locks and reads every
// host at once.
const lockEach = 256

// lockStored locks the hosts of recs and reads their stored verdicts.
func (s *Store) lockStored(ctx context.Context, tx *sql.Tx, recs []Record, lockOne string) (map[string]stored, error) {
	prev := make(map[string]stored, len(recs))
	if len(recs) <= lockEach {
		// In name order, as the whole fleet is locked below, so that
		// two batches cannot deadlock.
		hosts := make([]string, 0, len(recs))
		for _, r := range recs {
			hosts = append(hosts, r.Verdict.Host)
		}
		slices.Sort(hosts)
		for _, host := range slices.Compact(hosts) {
			if err := s.lockHost(ctx, tx, host, lockOne, prev); err != nil {
				return nil, err
			}
		}
		return prev, nil
	}
	rows, err := tx.QueryContext(ctx, lockHosts+s.eng.forUpdate("h", false))
	if err != nil {
		return nil, fmt.Errorf("lock hosts: %w", err)
	}
	names, err := collectNames(rows)
	if err != nil {
		return nil, fmt.Errorf("lock hosts: %w", err)
	}
	for _, n := range names {
		prev[n] = stored{hostKnown: true}
	}
	rows, err = tx.QueryContext(ctx, `SELECT host, level, vtime, expiry, seq, measurements_hash FROM verdicts`)
	if err != nil {
		return nil, fmt.Errorf("read stored verdicts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			h, l string
			p    = stored{had: true, hostKnown: true}
		)
		if err := rows.Scan(&h, &l, &p.vtime, &p.expiry, &p.seq, &p.measured); err != nil {
			return nil, fmt.Errorf("read stored verdicts: %w", err)
		}
		p.level = verdict.Level(l)
		prev[h] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stored verdicts: %w", err)
	}
	return prev, nil
}

// lockHost locks host's row and reads its stored verdict into prev; a host
// that does not exist is left out.
func (s *Store) lockHost(ctx context.Context, tx *sql.Tx, host, lockOne string, prev map[string]stored) error {
	if !s.eng.rowLocks {
		// The transaction holds the database's write lock already: the
		// host and its verdict are read at once.
		var level sql.NullString
		var p stored
		var vtime, expiry, seq sql.NullInt64
		switch err := s.txQueryRow(ctx, tx, selectHostStored, host).Scan(&level, &vtime, &expiry, &seq, &p.measured); {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("read stored verdict: %w", err)
		}
		p.hostKnown, p.had = true, level.Valid
		p.level, p.vtime, p.expiry, p.seq = verdict.Level(level.String), vtime.Int64, expiry.Int64, seq.Int64
		prev[host] = p
		return nil
	}
	var one int
	switch err := s.txQueryRow(ctx, tx, lockOne, host).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("lock host: %w", err)
	}
	// Read after the lock was granted: a fresh snapshot under READ
	// COMMITTED.
	p, err := s.readStored(ctx, tx, host)
	if err != nil {
		return err
	}
	p.hostKnown = true
	prev[host] = p
	return nil
}

// readStored reads host's stored verdict in tx (had is false without one).
func (s *Store) readStored(ctx context.Context, tx *sql.Tx, host string) (stored, error) {
	var p stored
	var level string
	switch err := s.txQueryRow(ctx, tx, selectStored, host).Scan(&level, &p.vtime, &p.expiry, &p.seq, &p.measured); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return stored{}, fmt.Errorf("read stored verdict: %w", err)
	default:
		p.level, p.had = verdict.Level(level), true
	}
	return p, nil
}

// writeTransition writes a transition's audit entry and outbox rows in tx.
func (s *Store) writeTransition(ctx context.Context, tx *sql.Tx, t Transition) error {
	if t.Audit != nil {
		if err := s.appendTx(ctx, tx, *t.Audit); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if t.Trait != nil {
		if err := s.enqueueTraitsTx(ctx, tx, []TraitChange{*t.Trait}); err != nil {
			return err
		}
	}
	return s.enqueueAll(ctx, tx, t.Notifications)
}

// RemoveHost deletes the host with its verdicts, evidence, history and
// lease, and writes what then returns for its level becoming unknown (v,
// established at now, says why), in one transaction. A host that does not
// exist is ErrNotFound.
func (s *Store) RemoveHost(ctx context.Context, v verdict.Verdict, then Consequences) (prev verdict.Level, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// Lock the row before reading its verdict, as a recording does: a
		// verdict committed meanwhile is then the level the deletion ends.
		lock := `SELECT 1 FROM hosts h WHERE h.name = $1`
		if s.eng.rowLocks {
			lock += " FOR UPDATE OF h"
		}
		held := map[string]stored{}
		if err := s.lockHost(ctx, tx, v.Host, lock, held); err != nil {
			return err
		}
		p := held[v.Host]
		res, err := tx.ExecContext(ctx, `DELETE FROM hosts WHERE name = $1`, v.Host)
		if err == nil {
			err = mustAffect(res)
		}
		if err != nil {
			return err
		}
		prev = p.at(micros(v.VTime))
		if err := s.notifyTx(ctx, tx, Change{Kind: ChangeRemoved, Host: v.Host}); err != nil {
			return err
		}
		if then == nil {
			return nil
		}
		t := then(v, prev)
		if prev == verdict.Unknown {
			// Nothing moved for the relying parties; the trait change
			// stays, so a provider marked by hand loses the trait too.
			t.Notifications = nil
		}
		return s.writeTransition(ctx, tx, t)
	})
	if err != nil {
		return "", fmt.Errorf("remove host %s: %w", v.Host, err)
	}
	return prev, nil
}

// PutVerdict records v (and ev, when not nil) with no consequences and
// returns the level the host had (RecordVerdicts of one). A verdict not
// written (no such host, or a higher Seq stored) is ErrNotFound.
func (s *Store) PutVerdict(ctx context.Context, v verdict.Verdict, ev *EvidenceRecord) (verdict.Level, error) {
	out, err := s.RecordVerdicts(ctx, []Record{{Verdict: v, Evidence: ev}}, nil)
	if err != nil {
		return "", err
	}
	if !out[0].Written {
		return "", fmt.Errorf("put verdict for %s: %w", v.Host, ErrNotFound)
	}
	return out[0].Prev, nil
}
