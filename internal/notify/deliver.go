package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"trustpool/internal/store"
)

// Header names of every delivery.
const (
	// HeaderDelivery carries the outbox ID: the same for every attempt of
	// one notification, so receivers can drop duplicates.
	HeaderDelivery = "X-Trustpool-Delivery"
	// HeaderSignature carries "sha256=<hex HMAC-SHA256 of the body>" when a
	// secret is configured.
	HeaderSignature = "X-Trustpool-Signature"
)

// Run delivers due notifications until ctx is done, then returns nil. Each
// target has its own worker, so a slow or dead receiver delays only its own
// notifications. Run must not be called again before it returns.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("notify: Run is already running")
	}
	defer n.running.Store(false)
	defer n.reset()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, t := range n.targets {
		wg.Go(func() { n.work(ctx, t) })
	}
	tick := time.NewTicker(n.cfg.Poll)
	defer tick.Stop()
	for {
		n.dispatch(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-n.wake:
		}
	}
}

// reset forgets what the stopped workers had queued: the outbox still holds
// it, claimed until the hold lapses, and a later Run picks it up again.
func (n *Notifier) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.targets {
		t.queue = nil
	}
	clear(n.inflight)
	n.queued.Store(0)
}

// dispatch claims due notifications and queues each to its target's worker.
// Everything claimed is queued (a claimed notification left aside would be
// delayed by a whole hold and overtaken by later ones); the claims stop at
// maxInflight.
func (n *Notifier) dispatch(ctx context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		limit := min(dueBatch, maxInflight-len(n.inflight))
		if limit <= 0 {
			return
		}
		due, err := n.store.Due(ctx, n.now(), n.hold, limit)
		if err != nil {
			if ctx.Err() == nil {
				n.cfg.Log.Error("read webhook outbox", "err", err)
			}
			return
		}
		for _, nt := range due {
			if _, ok := n.inflight[nt.ID]; ok {
				continue // still queued or being sent: Due just renewed its claim
			}
			t, ok := n.targets[nt.Target]
			if !ok {
				n.drop(ctx, nt)
				continue
			}
			t.queue = append(t.queue, nt)
			n.inflight[nt.ID] = struct{}{}
			n.queued.Store(int64(len(n.inflight)))
			select {
			case t.ready <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
		if len(due) < limit {
			return
		}
	}
}

// drop discards a notification for a target that is no longer configured:
// the operator removed that webhook.
func (n *Notifier) drop(ctx context.Context, nt store.Notification) {
	if err := n.store.MarkDelivered(ctx, nt.ID); err != nil {
		n.cfg.Log.Error("drop webhook notification", "id", nt.ID, "err", err)
		return
	}
	n.cfg.Log.Warn("dropped webhook notification for a target no longer configured", "id", nt.ID, "target", nt.Target)
}

// work delivers a target's queued notifications one at a time, in the order
// they were queued.
func (n *Notifier) work(ctx context.Context, t *target) {
	for ctx.Err() == nil {
		nt, ok := n.next(t)
		if !ok {
			select {
			case <-ctx.Done():
			case <-t.ready:
			}
			continue
		}
		record := n.attempt(ctx, t, nt)
		n.finish(ctx, nt.ID, record)
	}
}

// next takes the first notification off t's queue.
func (n *Notifier) next(t *target) (store.Notification, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(t.queue) == 0 {
		return store.Notification{}, false
	}
	nt := t.queue[0]
	t.queue[0] = store.Notification{} // let the body be collected
	t.queue = t.queue[1:]
	return nt, true
}

// finish writes the outcome of an attempt and forgets the notification, as
// one step under mu: a concurrent dispatch either sees it in flight and the
// outbox before the outcome (whose write then replaces the claim Due just
// renewed), or the outbox after it. Without this, a claim renewed by Due
// would overwrite a retry time and upset the order.
func (n *Notifier) finish(ctx context.Context, id int64, record func(context.Context) error) {
	// The outcome of an attempt is recorded even while Run is stopping.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	if record != nil {
		if err := record(ctx); err != nil {
			// Retried when the claim lapses: at least once, not exactly once.
			n.cfg.Log.Error("record webhook outcome", "id", id, "err", err)
		}
	}
	delete(n.inflight, id)
	n.queued.Store(int64(len(n.inflight)))
}

// attempt makes one delivery attempt of nt, unless an earlier failure holds
// it back, and returns how to record the outcome (nil: leave the claim to
// lapse).
func (n *Notifier) attempt(ctx context.Context, t *target, nt store.Notification) func(context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	if now := n.now(); t.blocks(nt, now, n.hold) {
		// Keep the order: due again at the same time as the earlier failed
		// one, which the outbox hands out first (it has the lower ID), even
		// when that time has passed already.
		next, msg := t.failingUntil, fmt.Sprintf("not attempted: notification %d to this target failed first: %s", t.failing, t.lastErr)
		return func(ctx context.Context) error { return n.store.MarkFailed(ctx, nt.ID, next, truncate(msg)) }
	}
	err := n.post(ctx, nt)
	if n.cfg.Attempted != nil && (err == nil || ctx.Err() == nil) {
		n.cfg.Attempted(err == nil)
	}
	if err == nil {
		if nt.ID == t.failing {
			t.failing = 0
		}
		return func(ctx context.Context) error { return n.store.MarkDelivered(ctx, nt.ID) }
	}
	if ctx.Err() != nil {
		return nil // stopped mid-request: the claim lapses and it is retried
	}
	next := n.now().Add(backoff(nt.Attempts, n.cfg.MaxBackoff, rand.Float64()))
	t.failing, t.failingUntil, t.lastErr = nt.ID, next, truncate(err.Error())
	n.cfg.Log.Warn("webhook delivery failed", "id", nt.ID, "target", nt.Target,
		"attempt", nt.Attempts+1, "retry_at", next, "err", err)
	msg := t.lastErr
	return func(ctx context.Context) error { return n.store.MarkFailed(ctx, nt.ID, next, msg) }
}

// post sends one notification; only a 2xx answer counts as delivered.
func (n *Notifier) post(ctx context.Context, nt store.Notification) error {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, nt.Target, bytes.NewReader(nt.Body))
	if err != nil {
		return fmt.Errorf("build webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "trustpool-webhook")
	req.Header.Set(HeaderDelivery, strconv.FormatInt(nt.ID, 10))
	if len(n.cfg.Secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(n.cfg.Secret, nt.Body))
	}
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	// Read a little of the answer so the connection can be reused; its
	// content is the receiver's business and is not parsed.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post webhook: receiver answered %q", resp.Status)
	}
	return nil
}

// backoff is the wait after a delivery that has failed attempts times
// before: 1 s, 2 s, 4 s … capped at maxWait, then shortened by up to 20 %
// (jitter in [0, 1)) so that failures do not retry in lockstep.
func backoff(attempts int, maxWait time.Duration, jitter float64) time.Duration {
	d := maxWait
	if attempts < 32 {
		d = min(time.Second<<attempts, maxWait)
	}
	return (d - time.Duration(float64(d)*0.2*jitter)).Truncate(time.Microsecond)
}
