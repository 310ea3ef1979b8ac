package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// rows returns n copies of row, a VALUES tuple with ? for each parameter,
// joined by commas and numbered for the engine: $1, $2 … in order on
// PostgreSQL; left as ? on SQLite, where modernc's driver looks each $N up
// by its name, at a cost that grows with the statement's parameter count
// (quadratic in the rows of a multi-row statement). The caller passes the
// arguments row by row.
func (e engine) rows(row string, n int) string {
	var b strings.Builder
	b.Grow(n * (len(row) + 16))
	k := 0
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		if e.name == "sqlite" {
			b.WriteString(row)
			continue
		}
		for _, c := range []byte(row) {
			if c != '?' {
				b.WriteByte(c)
				continue
			}
			k++
			b.WriteString("$" + strconv.Itoa(k))
		}
	}
	return b.String()
}

// batchRows is how many rows one multi-row statement writes.
const batchRows = 128

// rowBatch writes the rows of one INSERT in multi-row statements of
// batchRows rows (one statement prepared for the transaction), so that a
// transaction writing thousands of rows (a re-evaluation of the fleet)
// runs a few dozen statements instead of thousands. A batch of one row
// runs single, the statement warm prepared.
type rowBatch struct {
	s    *Store
	tx   *sql.Tx
	one  string // the single-row statement, $N numbered
	head string // INSERT INTO t (columns) VALUES
	row  string // one row's tuple with ? parameters
	tail string // ON CONFLICT …, or empty
	cols int    // parameters a row
	// keyed: a key appears at most once a statement (an upsert may not
	// touch a row twice), so a repeated key writes what is pending first.
	keyed bool

	keys map[string]bool // the pending rows' keys
	args []any           // the pending rows' parameters
	full *sql.Stmt       // the batchRows-row statement, prepared for tx
}

func (s *Store) newRowBatch(tx *sql.Tx, one, head, row, tail string, keyed bool) *rowBatch {
	return &rowBatch{s: s, tx: tx, one: one, head: head, row: row, tail: tail, keyed: keyed,
		cols: strings.Count(row, "?"), keys: map[string]bool{}}
}

// add queues one row (key: its conflict key, when keyed).
func (b *rowBatch) add(ctx context.Context, key string, args ...any) error {
	if len(args) != b.cols {
		return fmt.Errorf("%s: %d arguments for %d columns", b.head, len(args), b.cols)
	}
	if b.keyed {
		if b.keys[key] {
			if err := b.flush(ctx); err != nil {
				return err
			}
		}
		b.keys[key] = true
	}
	b.args = append(b.args, args...)
	if len(b.args) == batchRows*b.cols {
		return b.flush(ctx)
	}
	return nil
}

// flush writes the pending rows.
func (b *rowBatch) flush(ctx context.Context) error {
	n := len(b.args) / b.cols
	var err error
	switch {
	case n == 0:
		return nil
	case n == 1:
		_, err = b.s.txExec(ctx, b.tx, b.one, b.args...)
	case n == batchRows:
		if b.full == nil {
			if b.full, err = b.tx.PrepareContext(ctx, b.head+b.s.eng.rows(b.row, n)+b.tail); err != nil {
				return err
			}
		}
		_, err = b.full.ExecContext(ctx, b.args...)
	default:
		_, err = b.tx.ExecContext(ctx, b.head+b.s.eng.rows(b.row, n)+b.tail, b.args...)
	}
	clear(b.keys)
	b.args = b.args[:0]
	return err
}

// close flushes and releases the prepared statement.
func (b *rowBatch) close(ctx context.Context) error {
	err := b.flush(ctx)
	if b.full != nil {
		err = errors.Join(err, b.full.Close())
	}
	return err
}
