package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Reference is one version of a named set of expected measurements for one
// component class (bios, launch, vmm, host_unique). Body is the reference
// as JSON, opaque to the store. A change is a new version; old versions
// stay readable so that a verdict naming one can be explained.
type Reference struct {
	Name      string
	Version   int // assigned by PutReference: 1, 2, … per name
	Class     string
	Body      []byte
	CreatedAt time.Time
	CreatedBy string
	Retired   bool
}

// Policy is one version of a named trust pool's rules (which classes are
// required, which references are approved). Body is JSON, opaque to the
// store.
type Policy struct {
	Name      string
	Version   int // assigned by PutPolicy
	Body      []byte
	CreatedAt time.Time
	CreatedBy string
}

// maxVersionRetries bounds the retries of a new version that lost a race
// for its number: each lost race means another writer's version went in.
const maxVersionRetries = 20

// PutReference stores r as the next version of r.Name (r.Version is
// ignored) and returns it as stored. Retiring a reference is a new version
// with Retired set. Audit entries given are appended in the same
// transaction (an empty Subject becomes "name@vN").
func (s *Store) PutReference(ctx context.Context, r Reference, audit ...Entry) (Reference, error) {
	if r.Name == "" || r.Class == "" || !json.Valid(r.Body) {
		return Reference{}, fmt.Errorf("put reference %q: %w", r.Name, invalid("name, class and a JSON body are required"))
	}
	r.CreatedAt = Truncate(r.CreatedAt)
	err := s.newVersion(ctx, "reference_values", r.Name, &r.Version, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO reference_values (name, version, class, body, created_at, created_by, retired)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			r.Name, r.Version, r.Class, r.Body, micros(r.CreatedAt), r.CreatedBy, r.Retired)
		if err != nil {
			return err
		}
		return s.appendAll(ctx, tx, r.Name, r.Version, audit)
	})
	if err != nil {
		return Reference{}, fmt.Errorf("put reference %s: %w", r.Name, err)
	}
	return r, nil
}

// PutPolicy stores p as the next version of p.Name (p.Version is ignored)
// and returns it as stored, with audit entries as PutReference.
func (s *Store) PutPolicy(ctx context.Context, p Policy, audit ...Entry) (Policy, error) {
	if p.Name == "" || !json.Valid(p.Body) {
		return Policy{}, fmt.Errorf("put policy %q: %w", p.Name, invalid("name and a JSON body are required"))
	}
	p.CreatedAt = Truncate(p.CreatedAt)
	err := s.newVersion(ctx, "policies", p.Name, &p.Version, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO policies (name, version, body, created_at, created_by)
			VALUES ($1, $2, $3, $4, $5)`,
			p.Name, p.Version, p.Body, micros(p.CreatedAt), p.CreatedBy)
		if err != nil {
			return err
		}
		return s.appendAll(ctx, tx, p.Name, p.Version, audit)
	})
	if err != nil {
		return Policy{}, fmt.Errorf("put policy %s: %w", p.Name, err)
	}
	return p, nil
}

// appendAll appends the audit entries of a new version inside its
// transaction.
func (s *Store) appendAll(ctx context.Context, tx *sql.Tx, name string, version int, audit []Entry) error {
	for _, e := range audit {
		if e.Subject == "" {
			e.Subject = fmt.Sprintf("%s@v%d", name, version)
		}
		if err := s.appendTx(ctx, tx, e); err != nil {
			return err
		}
	}
	return nil
}

// newVersion sets *version to the next version of name in table and runs
// insert in the same transaction. On PostgreSQL two writers may pick the same
// number; the loser's insert violates the primary key and is retried.
func (s *Store) newVersion(ctx context.Context, table, name string, version *int, insert func(*sql.Tx) error) error {
	var err error
	for range maxVersionRetries {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM `+table+` WHERE name = $1`, name).
				Scan(version); err != nil {
				return fmt.Errorf("next version: %w", err)
			}
			return s.eng.classify(insert(tx))
		})
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return err
}

const (
	referenceColumns = `name, version, class, body, created_at, created_by, retired`
	policyColumns    = `name, version, body, created_at, created_by`
	// latestOnly keeps the newest version of each name of table t.
	latestOnly = ` WHERE t.version = (SELECT MAX(version) FROM %s WHERE name = t.name)`
)

// GetReference returns the given version of the named reference (0: the
// latest), or ErrNotFound.
func (s *Store) GetReference(ctx context.Context, name string, version int) (Reference, error) {
	q := `SELECT ` + referenceColumns + ` FROM reference_values WHERE name = $1 AND version = $2`
	args := []any{name, version}
	if version == 0 {
		q, args = `SELECT `+referenceColumns+` FROM reference_values WHERE name = $1 ORDER BY version DESC LIMIT 1`, args[:1]
	}
	r, err := scanReference(s.rdb.QueryRowContext(ctx, q, args...))
	if err != nil {
		return Reference{}, fmt.Errorf("get reference %s version %d: %w", name, version, err)
	}
	return r, nil
}

// ListReferences returns the latest version of every reference, retired
// ones included, ordered by name.
func (s *Store) ListReferences(ctx context.Context) ([]Reference, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+referenceColumns+` FROM reference_values t`+
		fmt.Sprintf(latestOnly, "reference_values")+` ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	rs, err := collect(rows, scanReference)
	if err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	return rs, nil
}

// GetPolicy returns the given version of the named policy (0: the latest),
// or ErrNotFound.
func (s *Store) GetPolicy(ctx context.Context, name string, version int) (Policy, error) {
	q := `SELECT ` + policyColumns + ` FROM policies WHERE name = $1 AND version = $2`
	args := []any{name, version}
	if version == 0 {
		q, args = `SELECT `+policyColumns+` FROM policies WHERE name = $1 ORDER BY version DESC LIMIT 1`, args[:1]
	}
	p, err := scanPolicy(s.rdb.QueryRowContext(ctx, q, args...))
	if err != nil {
		return Policy{}, fmt.Errorf("get policy %s version %d: %w", name, version, err)
	}
	return p, nil
}

// ListPolicies returns the latest version of every policy, ordered by name.
func (s *Store) ListPolicies(ctx context.Context) ([]Policy, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+policyColumns+` FROM policies t`+
		fmt.Sprintf(latestOnly, "policies")+` ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	ps, err := collect(rows, scanPolicy)
	if err != nil {
		return nil, fmt.Errorf("list policies: %w", err)
	}
	return ps, nil
}

func scanReference(r scanner) (Reference, error) {
	var ref Reference
	var created int64
	err := r.Scan(&ref.Name, &ref.Version, &ref.Class, &ref.Body, &created, &ref.CreatedBy, &ref.Retired)
	if errors.Is(err, sql.ErrNoRows) {
		return Reference{}, ErrNotFound
	}
	ref.CreatedAt = fromMicros(created)
	return ref, err
}

func scanPolicy(r scanner) (Policy, error) {
	var p Policy
	var created int64
	err := r.Scan(&p.Name, &p.Version, &p.Body, &created, &p.CreatedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Policy{}, ErrNotFound
	}
	p.CreatedAt = fromMicros(created)
	return p, err
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// KnownGoodItem is one new version a known-good change writes: a
// reference (a retirement is one with Retired set) or a policy, and the
// audit entry that records it (an empty Subject becomes "name@vN").
type KnownGoodItem struct {
	Reference *Reference
	Policy    *Policy
	Audit     Entry
}

// ApplyKnownGood writes every item of one known-good change, each as the
// next version of its name, with its audit entry, in one transaction: the
// change is in force entirely or not at all, also after a restart. It
// sets each item's Version (and CreatedAt to the store's precision). On
// PostgreSQL a writer that lost the race for a version number retries the
// whole change.
func (s *Store) ApplyKnownGood(ctx context.Context, items []KnownGoodItem) error {
	if len(items) == 0 {
		return fmt.Errorf("apply known-good change: %w", invalid("the change is empty"))
	}
	var err error
	for range maxVersionRetries {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			for i := range items {
				if err := s.putItemTx(ctx, tx, &items[i]); err != nil {
					return s.eng.classify(err)
				}
			}
			return s.notifyTx(ctx, tx, Change{Kind: ChangeKnownGood})
		})
		if !errors.Is(err, ErrConflict) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("apply known-good change: %w", err)
	}
	return nil
}

// putItemTx writes one item of ApplyKnownGood inside its transaction; a
// later version of the same name in the same change sees this one.
func (s *Store) putItemTx(ctx context.Context, tx *sql.Tx, it *KnownGoodItem) error {
	var name string
	var version *int
	switch r, p := it.Reference, it.Policy; {
	case (r == nil) == (p == nil):
		return invalid("a known-good item is one reference or one policy")
	case r != nil:
		if r.Name == "" || r.Class == "" || !json.Valid(r.Body) {
			return fmt.Errorf("reference %q: %w", r.Name, invalid("name, class and a JSON body are required"))
		}
		r.CreatedAt = Truncate(r.CreatedAt)
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM reference_values WHERE name = $1`, r.Name).
			Scan(&r.Version); err != nil {
			return fmt.Errorf("reference %s: next version: %w", r.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO reference_values (name, version, class, body, created_at, created_by, retired)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			r.Name, r.Version, r.Class, r.Body, micros(r.CreatedAt), r.CreatedBy, r.Retired); err != nil {
			return fmt.Errorf("reference %s: %w", r.Name, err)
		}
		name, version = r.Name, &r.Version
	default:
		if p.Name == "" || !json.Valid(p.Body) {
			return fmt.Errorf("policy %q: %w", p.Name, invalid("name and a JSON body are required"))
		}
		p.CreatedAt = Truncate(p.CreatedAt)
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM policies WHERE name = $1`, p.Name).
			Scan(&p.Version); err != nil {
			return fmt.Errorf("policy %s: next version: %w", p.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO policies (name, version, body, created_at, created_by)
			VALUES ($1, $2, $3, $4, $5)`,
			p.Name, p.Version, p.Body, micros(p.CreatedAt), p.CreatedBy); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
		name, version = p.Name, &p.Version
	}
	return s.appendAll(ctx, tx, name, *version, []Entry{it.Audit})
}
