package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// Notification is a webhook delivery waiting in the outbox. It is written
// in the same moment as the change it reports and delivered afterwards, at
// least once: receivers must tolerate duplicates (ID identifies one).
type Notification struct {
	ID          int64 // assigned by Enqueue
	Target      string
	Body        []byte
	Attempts    int       // failed deliveries so far
	NextAttempt time.Time // when it is due
	LastError   string
	CreatedAt   time.Time
}

const notificationColumns = `id, target, body, attempts, next_attempt, last_error, created_at`

// Enqueue adds n to the outbox, due at n.NextAttempt (at n.CreatedAt when
// that is zero), and returns its ID.
func (s *Store) Enqueue(ctx context.Context, n Notification) (int64, error) {
	return enqueue(ctx, s.wdb, n)
}

// The INSERT of notifications: one, or many a statement (rowBatch).
const (
	notificationInsert = `INSERT INTO outbox (target, body, attempts, next_attempt, last_error, created_at) VALUES `
	insertNotification = notificationInsert + `($1, $2, $3, $4, $5, $6)`
)

func enqueue(ctx context.Context, db querier, n Notification) (int64, error) {
	args, err := notificationArgs(nil, n)
	if err != nil {
		return 0, err
	}
	var id int64
	if err := db.QueryRowContext(ctx, insertNotification+` RETURNING id`, args...).Scan(&id); err != nil {
		return 0, fmt.Errorf("enqueue notification for %s: %w", n.Target, err)
	}
	return id, nil
}

// notificationArgs appends n's row to args.
func notificationArgs(args []any, n Notification) ([]any, error) {
	if n.Target == "" {
		return nil, fmt.Errorf("enqueue notification: %w", invalid("empty target"))
	}
	if n.NextAttempt.IsZero() {
		n.NextAttempt = n.CreatedAt
	}
	return append(args, n.Target, n.Body, n.Attempts, micros(n.NextAttempt), n.LastError, micros(n.CreatedAt)), nil
}

// enqueueAll adds ns to the outbox in tx, in order (their IDs increase in
// the order given).
func (s *Store) enqueueAll(ctx context.Context, tx *sql.Tx, ns []Notification) error {
	if len(ns) == 0 {
		return nil
	}
	rows := s.newRowBatch(tx, insertNotification, notificationInsert, "(?, ?, ?, ?, ?, ?)", "", false)
	var args []any
	for _, n := range ns {
		var err error
		if args, err = notificationArgs(args[:0], n); err != nil {
			return err
		}
		if err := rows.add(ctx, "", args...); err != nil {
			return fmt.Errorf("enqueue notifications: %w", err)
		}
	}
	if err := rows.close(ctx); err != nil {
		return fmt.Errorf("enqueue notifications: %w", err)
	}
	return nil
}

// Due returns up to limit notifications due at now, oldest ID first, and
// holds them until now+hold: another caller (another replica) does not get
// them again before then. The deliverer then calls MarkDelivered or
// MarkFailed; a deliverer that dies leaves them to be retried after hold.
// The returned NextAttempt is the end of the hold.
func (s *Store) Due(ctx context.Context, now time.Time, hold time.Duration, limit int) ([]Notification, error) {
	if err := limitOK(limit); err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	if hold <= 0 {
		return nil, fmt.Errorf("due notifications: %w", invalid("hold %v must be positive", hold))
	}
	rows, err := s.wdb.QueryContext(ctx, `UPDATE outbox SET next_attempt = $2
		WHERE id IN (SELECT id FROM outbox WHERE next_attempt <= $1 ORDER BY next_attempt, id LIMIT $3`+
		s.eng.forUpdate("outbox", true)+`)
		RETURNING `+notificationColumns,
		micros(now), micros(now.Add(hold)), limit)
	if err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	ns, err := collect(rows, func(r scanner) (Notification, error) {
		var n Notification
		var next, created int64
		err := r.Scan(&n.ID, &n.Target, &n.Body, &n.Attempts, &next, &n.LastError, &created)
		n.NextAttempt, n.CreatedAt = fromMicros(next), fromMicros(created)
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("due notifications: %w", err)
	}
	slices.SortFunc(ns, func(a, b Notification) int { return cmp.Compare(a.ID, b.ID) })
	return ns, nil
}

// MarkDelivered removes a delivered notification, or returns ErrNotFound.
func (s *Store) MarkDelivered(ctx context.Context, id int64) error {
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM outbox WHERE id = $1`, id)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("mark notification %d delivered: %w", id, err)
	}
	return nil
}

// MarkFailed records a failed delivery and when to try again, or returns
// ErrNotFound.
func (s *Store) MarkFailed(ctx context.Context, id int64, nextAttempt time.Time, lastErr string) error {
	res, err := s.wdb.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt = $2, last_error = $3
		WHERE id = $1`, id, micros(nextAttempt), lastErr)
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("mark notification %d failed: %w", id, err)
	}
	return nil
}
