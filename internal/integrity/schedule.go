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
	push     map[string]bool // hosts in push mode
	awaiting map[string]time.Time
	pushDue  func(host string) // called (under mu) when a push host comes due
	// last is when host's current verdict was established, if it has one:
	// a host new to the schedule (after a restart, or taken over from a
	// replica that died) is due an interval after it, not at a random
	// point of the coming interval.
	last func(host string) (time.Time, bool)
}

func newSchedule(interval time.Duration, now func() time.Time) *schedule {
	return &schedule{interval: interval, now: now, wake: make(chan struct{}, 1),
		q: deadline.New[struct{}](), inflight: map[string]bool{}, failures: map[string]int{},
		push: map[string]bool{}, awaiting: map[string]time.Time{}, pushDue: func(string) {}}
}

// setPush records whether host is in push mode.
func (q *schedule) setPush(host string, push bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if push {
		q.push[host] = true
		return
	}
	delete(q.push, host)
	if at, ok := q.awaiting[host]; ok { // a worker dials it from now on
		delete(q.awaiting, host)
		q.q.Set(host, at, struct{}{})
	}
}

// keep makes the active hosts exactly those. A new host is due an
// interval after its last verdict (at once, spread over a tenth of an
// interval, if that is past); one never attested, at a random point of
// the coming interval, so that a fleet does not come due at once. A host
// no longer active is dropped.
func (q *schedule) keep(hosts []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	want := make(map[string]bool, len(hosts))
	now := q.now()
	for _, h := range hosts {
		want[h] = true
		_, waiting := q.awaiting[h]
		if _, busy := q.inflight[h]; !q.q.Has(h) && !busy && !waiting {
			q.q.Set(h, q.placeNew(h, now), struct{}{})
		}
	}
	var gone []string
	q.q.Keys(func(h string) {
		if !want[h] {
			gone = append(gone, h)
		}
	})
	for h := range q.awaiting {
		if !want[h] {
			gone = append(gone, h)
		}
	}
	for _, h := range gone {
		q.q.Remove(h)
		delete(q.awaiting, h)
	}
}

func (q *schedule) placeNew(host string, now time.Time) time.Time {
	if q.last != nil {
		if at, ok := q.last(host); ok {
			if due := at.Add(q.interval); due.After(now) {
				return due
			}
			return now.Add(rand.N(q.interval/10 + 1))
		}
	}
	return now.Add(rand.N(q.interval + 1))
}

// soon makes host due now (a hello after a boot), or once its attestation
// in flight ends.
func (q *schedule) soon(host string) {
	q.mu.Lock()
	if _, busy := q.inflight[host]; busy {
		q.inflight[host] = true
	} else {
		delete(q.failures, host)
		delete(q.awaiting, host)
		q.q.Set(host, q.now(), struct{}{})
	}
	q.mu.Unlock()
	q.signal()
}

func (q *schedule) remove(host string) {
	q.mu.Lock()
	q.q.Remove(host)
	delete(q.awaiting, host)
	delete(q.push, host)
	delete(q.inflight, host)
	delete(q.failures, host)
	q.mu.Unlock()
}

// pushSoon makes every push host that is not already asked due within a
// tenth of an interval (spread, so that a fleet does not push at once):
// after a known-good change, push agents quote afresh as pull agents are
// challenged on their schedule.
func (q *schedule) pushSoon() {
	q.mu.Lock()
	now := q.now()
	for h := range q.push {
		if _, asked := q.awaiting[h]; !asked {
			q.q.Set(h, now.Add(rand.N(q.interval/10+1)), struct{}{})
		}
	}
	q.mu.Unlock()
	q.signal()
}

// take returns a host due now, marked in flight, with the time it was due;
// or, when none is due, how long until the next one (0: none scheduled).
func (q *schedule) take() (host string, due time.Time, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for {
		it, ok := q.q.Pop(now)
		if !ok {
			if next, ok := q.q.Next(); ok {
				return "", time.Time{}, next.At.Sub(now)
			}
			return "", time.Time{}, 0
		}
		if q.push[it.Key] { // its agent comes to us
			q.awaiting[it.Key] = it.At
			q.pushDue(it.Key)
			continue
		}
		q.inflight[it.Key] = false
		return it.Key, it.At, 0
	}
}

// pushed records that host's agent posted evidence now and returns when
// it is due next: its place in the interval kept when it came due and
// waited, an interval from now when it came early (a hello, an
// operator's request).
func (q *schedule) pushed(host string) time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	due, ok := q.awaiting[host]
	if !ok || due.After(now) {
		due = now
	}
	delete(q.awaiting, host)
	q.q.Remove(host)
	q.inflight[host] = false
	return q.doneLocked(host, due, true)
}

// done gives host back after an attestation that began when it was due at
// due: due again an interval on (its place in the interval kept), at once
// when a hello came meanwhile, later and later while it is unreachable
// (half an interval, doubling, at most four intervals).
func (q *schedule) done(host string, due time.Time, reachable bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.doneLocked(host, due, reachable)
}

func (q *schedule) doneLocked(host string, due time.Time, reachable bool) time.Time {
	again, ok := q.inflight[host]
	delete(q.inflight, host)
	if !ok {
		return time.Time{} // removed meanwhile
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
	return next
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
