package integrity

import (
	"math/rand/v2"
	"sync"
	"time"

	"trustpool/internal/deadline"
)

// schedule is the attestation timetable: every active host is due once,
// hosts are spread over the interval and keep their place in it, and a
// host is never due while its attestation is in flight. Workers take what
// is due (next) and give it back (done); nothing here is a goroutine per
// host.
type schedule struct {
	interval time.Duration
	now      func() time.Time
	wake     chan struct{} // something became due earlier than the workers wait for

	mu       sync.Mutex // guards the fields below
	q        *deadline.Queue[struct{}]
	inflight map[string]bool // host → a hello came while in flight: due again at once
	failures map[string]int  // consecutive unreachable answers
}

func newSchedule(interval time.Duration, now func() time.Time) *schedule {
	return &schedule{interval: interval, now: now, wake: make(chan struct{}, 1),
		q: deadline.New[struct{}](), inflight: map[string]bool{}, failures: map[string]int{}}
}

// keep makes the active hosts exactly those: a new host is due at a random
// point of the coming interval (so a fleet does not come due at once), a
// host no longer active is dropped.
func (q *schedule) keep(hosts []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	want := make(map[string]bool, len(hosts))
	now := q.now()
	for _, h := range hosts {
		want[h] = true
		if _, busy := q.inflight[h]; !q.q.Has(h) && !busy {
			q.q.Set(h, now.Add(rand.N(q.interval+1)), struct{}{})
		}
	}
	var gone []string
	q.q.Keys(func(h string) {
		if !want[h] {
			gone = append(gone, h)
		}
	})
	for _, h := range gone {
		q.q.Remove(h)
	}
}

// soon makes host due now (a hello after a boot), or once its attestation
// in flight ends.
func (q *schedule) soon(host string) {
	q.mu.Lock()
	if _, busy := q.inflight[host]; busy {
		q.inflight[host] = true
	} else {
		delete(q.failures, host)
		q.q.Set(host, q.now(), struct{}{})
	}
	q.mu.Unlock()
	q.signal()
}

func (q *schedule) remove(host string) {
	q.mu.Lock()
	q.q.Remove(host)
	delete(q.inflight, host)
	delete(q.failures, host)
	q.mu.Unlock()
}

// take returns a host due now, marked in flight, with the time it was due;
// or, when none is due, how long until the next one (0: none scheduled).
func (q *schedule) take() (host string, due time.Time, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	it, ok := q.q.Pop(now)
	if !ok {
		if next, ok := q.q.Next(); ok {
			return "", time.Time{}, next.At.Sub(now)
		}
		return "", time.Time{}, 0
	}
	q.inflight[it.Key] = false
	return it.Key, it.At, 0
}

// done gives host back after an attestation that began when it was due at
// due: due again an interval on (its place in the interval kept), at once
// when a hello came meanwhile, later and later while it is unreachable
// (half an interval, doubling, at most four intervals).
func (q *schedule) done(host string, due time.Time, reachable bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	again, ok := q.inflight[host]
	delete(q.inflight, host)
	if !ok {
		return // removed meanwhile
	}
	now := q.now()
	next := due.Add(q.interval)
	if !next.After(now) { // fell behind: the next place of its own after now
		next = due.Add(q.interval * (now.Sub(due)/q.interval + 1))
	}
	if reachable {
		delete(q.failures, host)
	} else {
		q.failures[host]++
		next = now.Add(q.interval * time.Duration(min(1<<(q.failures[host]-1), 8)) / 2)
	}
	if again {
		next = now
	}
	q.q.Set(host, next, struct{}{})
}

// overdue counts the hosts due more than grace ago that no worker took.
func (q *schedule) overdue(grace time.Duration) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.q.CountBefore(q.now().Add(-grace))
}

func (q *schedule) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
