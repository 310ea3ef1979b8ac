package recorder

import (
	"context"
	"sync"

	"trustpool/internal/store"
)

// maxGroup bounds the recordings one transaction takes from the queue.
const maxGroup = 256

// group commits concurrent recordings together: while one transaction is
// written, the recordings that arrive queue, and the first of them then
// writes everything queued in one transaction. Alone, a recording is
// written at once; under load the fleet's attestations share transactions
// (one begin, one commit, one WAL write) instead of queueing on the one
// SQLite writer or on PostgreSQL's commit flush one by one.
type group struct {
	mu      sync.Mutex // guards the fields below
	writing bool       // a transaction is being written
	queue   []*pending
}

// pending is a recording waiting for its transaction.
type pending struct {
	rec  store.Record
	done chan struct{} // closed when res and err are set, or lead is
	lead bool          // this recording writes the next transaction
	res  Result
	err  error
	// alone: the shared transaction failed, and the recording is retried
	// in a transaction of its own, so that one host's failure is its own.
	alone bool
}

// recordGrouped records one verdict, in a transaction it may share.
func (r *Recorder) recordGrouped(ctx context.Context, rec store.Record) (Result, error) {
	p := &pending{rec: rec, done: make(chan struct{})}
	g := &r.group
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.writing {
		g.mu.Unlock()
		<-p.done // the writer before ours always hands on
		if !p.lead {
			if p.alone {
				return r.recordOne(ctx, rec)
			}
			return p.res, p.err
		}
		g.mu.Lock()
	}
	g.writing = true
	batch := g.take()
	g.mu.Unlock()

	recs := make([]store.Record, len(batch))
	for i, q := range batch {
		recs[i] = q.rec
	}
	out, err := r.record(ctx, recs)
	for i, q := range batch {
		switch {
		case err != nil && len(batch) > 1:
			q.alone = true
		case err != nil:
			q.err = err
		default:
			q.res = out[i]
		}
	}

	g.mu.Lock()
	if len(g.queue) > 0 {
		next := g.queue[0]
		next.lead = true
		close(next.done)
	} else {
		g.writing = false
	}
	g.mu.Unlock()
	for _, q := range batch {
		if q != p {
			close(q.done)
		}
	}
	if p.alone {
		return r.recordOne(ctx, rec)
	}
	return p.res, p.err
}

// take removes from the queue the recordings of the next transaction: the
// head (the writer itself) and those after it, one per host, so that a
// transaction never holds two attestations of one host; the others keep
// their place.
func (g *group) take() []*pending {
	var batch, rest []*pending
	hosts := map[string]bool{}
	for _, q := range g.queue {
		h := q.rec.Verdict.Host
		if len(batch) == maxGroup || hosts[h] {
			rest = append(rest, q)
			continue
		}
		hosts[h] = true
		batch = append(batch, q)
	}
	g.queue = rest
	return batch
}

// recordOne records rec in a transaction of its own.
func (r *Recorder) recordOne(ctx context.Context, rec store.Record) (Result, error) {
	out, err := r.record(ctx, []store.Record{rec})
	if err != nil {
		return Result{}, err
	}
	return out[0], nil
}
