package recorder

import (
	"sync"
	"time"

	"trustpool/internal/deadline"
)

// deadlines is the expiry queue: at most one entry per host (its current
// verdict's expiry, with the verdict's Seq).
type deadlines struct {
	mu sync.Mutex // guards q
	q  *deadline.Queue[int64]
}

type due struct {
	host string
	seq  int64
	at   time.Time
}

func newDeadlines() *deadlines { return &deadlines{q: deadline.New[int64]()} }

func (d *deadlines) set(host string, seq int64, at time.Time) {
	d.mu.Lock()
	d.q.Set(host, at, seq)
	d.mu.Unlock()
}

func (d *deadlines) remove(host string) {
	d.mu.Lock()
	d.q.Remove(host)
	d.mu.Unlock()
}

// due takes out every deadline at or before now.
func (d *deadlines) due(now time.Time) []due {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []due
	for {
		it, ok := d.q.Pop(now)
		if !ok {
			return out
		}
		out = append(out, due{host: it.Key, seq: it.Value, at: it.At})
	}
}

// retry puts back deadlines whose expiry could not be recorded, unless the
// host got a new one meanwhile.
func (d *deadlines) retry(ds []due) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, x := range ds {
		if !d.q.Has(x.host) {
			d.q.Set(x.host, x.at, x.seq)
		}
	}
}
