package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"trustpool/internal/verdict"
)

// Replicas sharing a PostgreSQL database follow each other's writes
// through a change feed: a transaction that records verdicts, removes a
// host or applies a known-good change sends a notification on commit
// (PostgreSQL NOTIFY, delivered only if the transaction commits), and
// every replica listens (Listen). On SQLite there is one server and no
// feed.

// Kinds of change in the feed.
const (
	ChangeVerdict   = 'v' // Host's verdict changed ("" Host: any host's)
	ChangeRemoved   = 'd' // Host was deleted
	ChangeKnownGood = 'k' // the known-good database changed
	ChangeLost      = '*' // the feed was interrupted: re-read everything
)

// Change is one entry of the feed.
type Change struct {
	Kind byte
	Host string
}

const channel = "trustpool_changes"

// notifyTx queues c on commit of tx (PostgreSQL only).
func (s *Store) notifyTx(ctx context.Context, tx *sql.Tx, c Change) error {
	if !s.eng.rowLocks {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, string(c.Kind)+c.Host); err != nil {
		return fmt.Errorf("notify replicas: %w", err)
	}
	return nil
}

// Listen calls fn with every change other transactions commit, until ctx
// ends (it then returns nil). A lost connection is re-made with backoff
// and reported as ChangeLost, since changes may have been missed. On
// SQLite it only waits for ctx.
func (s *Store) Listen(ctx context.Context, fn func(Change)) error {
	if !s.eng.rowLocks {
		<-ctx.Done()
		return nil
	}
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := s.listenOnce(ctx, fn, !first)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
		}
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, fn func(Change), lost bool) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("listen for changes: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return fmt.Errorf("listen for changes: %w", err)
	}
	if lost {
		fn(Change{Kind: ChangeLost})
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("listen for changes: %w", err)
		}
		if n.Payload == "" {
			continue
		}
		fn(Change{Kind: n.Payload[0], Host: strings.Clone(n.Payload[1:])})
	}
}

// GetVerdict returns host's stored verdict, or ErrNotFound.
func (s *Store) GetVerdict(ctx context.Context, host string) (verdict.Verdict, error) {
	vs, err := s.queryVerdicts(ctx, 1, `SELECT `+verdictColumns+` FROM verdicts WHERE host = $1`, host)
	if err == nil && len(vs) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("verdict of %s: %w", host, err)
	}
	return vs[0], nil
}
