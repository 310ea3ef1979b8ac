package recorder

import (
	"container/heap"
	"sync"
	"time"
)

// deadlines is the expiry queue: at most one entry per host (its current
// verdict's expiry), ordered by time, so that finding what expired costs
// only what expired.
type deadlines struct {
	mu     sync.Mutex // guards h and byHost
	h      deadlineHeap
	byHost map[string]*deadline
}

type deadline struct {
	host  string
	seq   int64
	at    time.Time
	index int // in the heap
}

func newDeadlines() *deadlines { return &deadlines{byHost: map[string]*deadline{}} }

// set makes (seq, at) host's deadline.
func (q *deadlines) set(host string, seq int64, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if d := q.byHost[host]; d != nil {
		d.seq, d.at = seq, at
		heap.Fix(&q.h, d.index)
		return
	}
	d := &deadline{host: host, seq: seq, at: at}
	q.byHost[host] = d
	heap.Push(&q.h, d)
}

func (q *deadlines) remove(host string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if d := q.byHost[host]; d != nil {
		heap.Remove(&q.h, d.index)
		delete(q.byHost, host)
	}
}

// due takes out every deadline at or before now.
func (q *deadlines) due(now time.Time) []deadline {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []deadline
	for len(q.h) > 0 && !q.h[0].at.After(now) {
		d := heap.Pop(&q.h).(*deadline)
		delete(q.byHost, d.host)
		out = append(out, *d)
	}
	return out
}

// retry puts back deadlines whose expiry could not be recorded, unless the
// host got a new one meanwhile.
func (q *deadlines) retry(ds []deadline) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range ds {
		if q.byHost[d.host] == nil {
			n := &deadline{host: d.host, seq: d.seq, at: d.at}
			q.byHost[d.host] = n
			heap.Push(&q.h, n)
		}
	}
}

type deadlineHeap []*deadline

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlineHeap) Push(x any) {
	d := x.(*deadline)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}
