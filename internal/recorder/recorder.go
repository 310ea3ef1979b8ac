// Package recorder is the one way a verdict becomes a host's verdict. A
// recording is one store transaction: the verdict, ordered by the host's
// attestation sequence (never by wall time), its evidence, and for a level
// change its audit entry and its outbox rows (webhook notifications, the
// host's Placement trait change). Then, under the same per-host lock, the
// verdict cache follows, and listeners (trait sync, webhook delivery) are
// woken; they do no writes of their own that a crash could lose, and apply
// the outbox rows on whichever replica claims them.
//
// Expiry and deletion are transitions like any other: a verdict that
// expires becomes unknown through the recorder (a deadline queue, checked
// a few times a second), and so does a deleted host, atomically.
package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// Store is what the recorder needs from storage.
type Store interface {
	RecordVerdicts(ctx context.Context, recs []store.Record, then store.Consequences) ([]store.Recorded, error)
	RemoveHost(ctx context.Context, v verdict.Verdict, then store.Consequences) (verdict.Level, error)
	LatestVerdicts(ctx context.Context) ([]verdict.Verdict, error)
	GetVerdict(ctx context.Context, host string) (verdict.Verdict, error)
}

// Config configures a Recorder.
type Config struct {
	Store Store
	Now   func() time.Time
	// Notifications returns the webhook outbox rows of a transition
	// (package notify), or none.
	Notifications func(v verdict.Verdict, prev verdict.Level) []store.Notification
	// Traits writes the host's trait change for the Placement trait sync
	// with every level change and deletion (Placement configured).
	Traits bool
	// Tick is how often expiries are looked for (default 200 ms).
	Tick time.Duration
	// Metrics, when set, is told of every verdict written and of the
	// store's time (package metrics).
	Metrics Metrics
	Log     *slog.Logger
}

// Metrics receives what the recorder counts and times.
type Metrics interface {
	// Recorded is called for every verdict written; expired marks an
	// expiry.
	Recorded(v verdict.Verdict, expired bool)
	// StoreOp is the duration of one store operation.
	StoreOp(op string, d time.Duration, err error)
}

// stripeCount is how many locks the hosts are spread over.
const stripeCount = 64

// Recorder records verdicts. It is safe for concurrent use.
type Recorder struct {
	cfg   Config
	cache *Cache
	// stripes order one host's recordings: a store write and the cache
	// update that follows it happen under the host's stripe, so the cache
	// sees the store's order and a deletion cannot be undone by a
	// recording in flight.
	stripes [stripeCount]sync.Mutex
	seed    maphash.Seed
	queue   *deadlines
	group   group

	mu        sync.Mutex // guards listeners
	listeners []func(v verdict.Verdict, prev verdict.Level)
}

// New returns a recorder; call Load before serving.
func New(cfg Config) *Recorder {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Recorder{cfg: cfg, cache: NewCache(cfg.Now), seed: maphash.MakeSeed(), queue: newDeadlines()}
}

// Cache is the verdict cache relying parties read.
func (r *Recorder) Cache() *Cache { return r.cache }

// OnChange registers f to be woken after every level change is committed,
// here or by another replica (Follow) (in the recording or following
// goroutine: f must not block, and writes nothing that must not be lost).
func (r *Recorder) OnChange(f func(v verdict.Verdict, prev verdict.Level)) {
	r.mu.Lock()
	r.listeners = append(r.listeners, f)
	r.mu.Unlock()
}

// Load rebuilds the cache and the expiry queue from the store, so that a
// restarted server answers at once and expires on time what expired while
// it was down.
func (r *Recorder) Load(ctx context.Context) error {
	vs, err := r.cfg.Store.LatestVerdicts(ctx)
	if err != nil {
		return fmt.Errorf("load verdicts: %w", err)
	}
	for _, v := range vs {
		r.publish(v)
	}
	return nil
}

// Result is what became of a recorded verdict.
type Result = store.Recorded

// Record makes v (with the evidence it verified, if any) the host's
// verdict unless a verdict of a higher Seq stands. Concurrent recordings
// share transactions (group commit).
func (r *Recorder) Record(ctx context.Context, v verdict.Verdict, ev *store.EvidenceRecord) (Result, error) {
	return r.recordGrouped(ctx, store.Record{Verdict: v, Evidence: ev})
}

// RecordAll records recs in one transaction (a re-evaluation of the
// fleet, a batch of expiries).
func (r *Recorder) RecordAll(ctx context.Context, recs []store.Record) ([]Result, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	return r.record(ctx, recs)
}

// record writes recs under their hosts' stripes, publishes what was
// written, then wakes the listeners.
func (r *Recorder) record(ctx context.Context, recs []store.Record) ([]Result, error) {
	unlock := r.lock(recs)
	start := time.Now()
	out, err := r.cfg.Store.RecordVerdicts(ctx, recs, r.consequences)
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.StoreOp("record_verdicts", time.Since(start), err)
	}
	if err == nil {
		for i, rec := range recs {
			if out[i].Written {
				r.publish(rec.Verdict)
				if r.cfg.Metrics != nil {
					r.cfg.Metrics.Recorded(rec.Verdict, rec.Expire)
				}
			}
		}
	}
	unlock()
	if err != nil {
		return nil, fmt.Errorf("record %d verdicts (%s…): %w", len(recs), recs[0].Verdict.Host, err)
	}
	r.wake(recs, out)
	return out, nil
}

// Remove deletes host as actor: in one transaction the host, its verdicts
// and evidence go, with an audit entry and, when the host was not unknown
// already, its transition to unknown for the webhooks. The cache forgets
// it at once, and no recording in flight can bring it back.
func (r *Recorder) Remove(ctx context.Context, host, actor string) error {
	now := r.now()
	gone := verdict.Verdict{Host: host, Level: verdict.Unknown, VTime: now, Expiry: now,
		Reasons: []verdict.Reason{{Code: verdict.CodeDeleted, Message: "the host was deleted by " + actor}}}
	mu := r.stripe(host)
	mu.Lock()
	start := time.Now()
	prev, err := r.cfg.Store.RemoveHost(ctx, gone, func(v verdict.Verdict, prev verdict.Level) store.Transition {
		t := r.consequences(v, prev)
		t.Audit = &store.Entry{Time: now, Actor: actor, Action: "host.delete", Subject: host}
		return t
	})
	if r.cfg.Metrics != nil {
		r.cfg.Metrics.StoreOp("remove_host", time.Since(start), err)
	}
	if err == nil {
		r.cache.remove(host)
		r.queue.remove(host)
	}
	mu.Unlock()
	if err != nil {
		return err
	}
	if prev != verdict.Unknown {
		r.notify(gone, prev)
	}
	return nil
}

// Run expires verdicts on time until ctx ends: a verdict past its expiry
// becomes unknown through Record, with its audit entry, webhooks and trait
// removal, within Tick of its expiry.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.ExpireDue(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("expire verdicts", "err", err)
		}
	}
}

// ExpireDue records the expiry of every verdict past its expiry now.
func (r *Recorder) ExpireDue(ctx context.Context) error {
	due := r.queue.due(r.now())
	if len(due) == 0 {
		return nil
	}
	recs := make([]store.Record, 0, len(due))
	for _, d := range due {
		v, ok := r.cache.Verdict(d.host)
		if !ok || v.Seq != d.seq || !v.Expiry.Equal(d.at) || v.Level == verdict.Unknown {
			continue // replaced since it was queued
		}
		recs = append(recs, store.Record{Expire: true, Verdict: verdict.Verdict{
			Host: v.Host, Level: verdict.Unknown, VTime: v.Expiry, Expiry: v.Expiry, Policy: v.Policy, Seq: v.Seq,
			Reasons: []verdict.Reason{{Code: verdict.CodeExpired, Message: fmt.Sprintf(
				"the %s verdict of %s expired at %s", v.Level, v.VTime.UTC().Format(time.RFC3339), v.Expiry.UTC().Format(time.RFC3339))}},
		}})
	}
	if len(recs) == 0 {
		return nil
	}
	_, err := r.record(ctx, recs)
	if err != nil {
		r.queue.retry(due)
	}
	return err
}

// changeDetail is a level change's audit detail. The fields are in the
// order of their names, as the map that wrote it before did, so that every
// entry reads alike (a struct encodes faster: a re-evaluation audits the
// fleet).
type changeDetail struct {
	From    verdict.Level    `json:"from"`
	Reasons []verdict.Reason `json:"reasons"`
	Seq     int64            `json:"seq"`
	To      verdict.Level    `json:"to"`
	VTime   time.Time        `json:"vtime"`
}

// consequences is the audit entry and the outbox rows of a level change.
func (r *Recorder) consequences(v verdict.Verdict, prev verdict.Level) store.Transition {
	detail, _ := json.Marshal(changeDetail{From: prev, Reasons: v.Reasons, Seq: v.Seq, To: v.Level, VTime: v.VTime.UTC()})
	t := store.Transition{Audit: &store.Entry{Time: r.now(), Actor: "system", Action: "verdict.change", Subject: v.Host, Detail: detail}}
	if r.cfg.Notifications != nil {
		t.Notifications = r.cfg.Notifications(v, prev)
	}
	if r.cfg.Traits {
		t.Trait = &store.TraitChange{Host: v.Host, CreatedAt: t.Audit.Time}
	}
	return t
}

// publish puts a verdict the store holds into the cache and the expiry
// queue.
func (r *Recorder) publish(v verdict.Verdict) {
	r.cache.set(v)
	if v.Level == verdict.Unknown {
		r.queue.remove(v.Host)
	} else {
		r.queue.set(v.Host, v.Seq, v.Expiry)
	}
}

// wake tells the listeners about the level changes among recs.
func (r *Recorder) wake(recs []store.Record, out []store.Recorded) {
	for i, o := range out {
		if o.Written && o.Changed {
			r.notify(recs[i].Verdict, o.Prev)
		}
	}
}

func (r *Recorder) notify(v verdict.Verdict, prev verdict.Level) {
	r.mu.Lock()
	ls := slices.Clone(r.listeners)
	r.mu.Unlock()
	for _, f := range ls {
		f(v, prev)
	}
}

// lock takes the stripes of recs' hosts, in stripe order, so that two
// batches never wait for each other in a cycle.
func (r *Recorder) lock(recs []store.Record) (unlock func()) {
	if len(recs) == 1 {
		mu := r.stripe(recs[0].Verdict.Host)
		mu.Lock()
		return mu.Unlock
	}
	var held [stripeCount]bool
	for _, rec := range recs {
		held[r.stripeIndex(rec.Verdict.Host)] = true
	}
	for i := range r.stripes {
		if held[i] {
			r.stripes[i].Lock()
		}
	}
	return func() {
		for i := range r.stripes {
			if held[i] {
				r.stripes[i].Unlock()
			}
		}
	}
}

func (r *Recorder) stripe(host string) *sync.Mutex { return &r.stripes[r.stripeIndex(host)] }

func (r *Recorder) stripeIndex(host string) uint64 {
	return maphash.String(r.seed, host) % uint64(len(r.stripes))
}

// now is the clock at the store's precision.
func (r *Recorder) now() time.Time { return store.Truncate(r.cfg.Now()) }

// Follow brings the cache up to what another replica committed (the
// store's change feed): the verdict of one host, or every verdict after a
// batch or a lost feed; a host removed elsewhere leaves the cache.
// Consequences were written by the replica that recorded the change.
func (r *Recorder) Follow(ctx context.Context, c store.Change) error {
	switch {
	case c.Kind == store.ChangeRemoved:
		mu := r.stripe(c.Host)
		mu.Lock()
		cur, had := r.cache.Verdict(c.Host)
		r.cache.remove(c.Host)
		r.queue.remove(c.Host)
		mu.Unlock()
		if had && cur.Level != verdict.Unknown {
			r.notify(verdict.Verdict{Host: c.Host, Level: verdict.Unknown, VTime: r.now()}, cur.Level)
		}
		return nil
	case c.Kind == store.ChangeVerdict && c.Host != "":
		v, err := r.cfg.Store.GetVerdict(ctx, c.Host)
		if err != nil {
			return fmt.Errorf("follow %s: %w", c.Host, err)
		}
		r.adopt([]verdict.Verdict{v})
		return nil
	case c.Kind == store.ChangeVerdict || c.Kind == store.ChangeLost:
		vs, err := r.cfg.Store.LatestVerdicts(ctx)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		r.adopt(vs)
		if c.Kind == store.ChangeLost { // deletions may have been missed too
			have := make(map[string]bool, len(vs))
			for _, v := range vs {
				have[v.Host] = true
			}
			for _, v := range r.cache.Snapshot() {
				if !have[v.Host] {
					r.Follow(ctx, store.Change{Kind: store.ChangeRemoved, Host: v.Host})
				}
			}
		}
	}
	return nil
}

// adopt publishes stored verdicts that are not older than the cache's,
// and wakes the listeners for those that change a host's level: the
// outbox rows are the recording replica's, but any replica's listeners
// may be the ones to act (the Kubernetes controller's leader, a trait
// sync or webhook deliverer claiming the rows).
func (r *Recorder) adopt(vs []verdict.Verdict) {
	for _, v := range vs {
		mu := r.stripe(v.Host)
		mu.Lock()
		cur, ok := r.cache.Verdict(v.Host)
		newer := !ok || cur.Seq <= v.Seq
		if newer {
			r.publish(v)
		}
		mu.Unlock()
		prev := verdict.Unknown
		if ok {
			prev = cur.Level
		}
		if newer && v.Level != prev {
			r.notify(v, prev)
		}
	}
}
