package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"trustpool/internal/agent"
	"trustpool/internal/evidence"
)

// Push mode, as internal/agent/push.go runs it: a node opens no port. It
// fetches a challenge (POST /v1/push/challenge), quotes, posts the evidence
// (POST /v1/push/evidence) and is told when to come back (next_in); in
// between it long-polls (POST /v1/push/wait), so the server can ask for a
// fresh quote at once. Each node runs its loop in a goroutine of its own
// (test equipment), started by its first hello and ended by Close; a hello
// is an immediate push, made by the loop so that a node never pushes twice
// at once.

// A node's long-poll and reconnection backoff are the agent's.
const waitTimeout = agent.WaitTimeout

func retryDelay(n int) time.Duration { return agent.RetryDelay(n, 2*rand.Float64()-1) }

// pushVerdict is what a node reads of the answer to its evidence.
type pushVerdict struct {
	Level  string  `json:"trust_lvl"`
	NextIn float64 `json:"next_in"`
}

// helloPush starts nd's push loop on its first hello, asks the loop for a
// push now and waits for its outcome.
func (f *Fleet) helloPush(ctx context.Context, nd *Node) error {
	f.loopsMu.Lock()
	if f.closed {
		f.loopsMu.Unlock()
		return fmt.Errorf("hello from %s: the fleet is closed", nd.Name)
	}
	nd.started.Do(func() { f.loops.Go(func() { f.runPush(nd) }) })
	f.loopsMu.Unlock()
	reply := make(chan error, 1)
	select {
	case nd.kick <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		if err != nil {
			return fmt.Errorf("hello from %s: %w", nd.Name, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runPush is a node's push loop: it pushes when the server said to come
// back, when the server's long-poll asks for a quote, or on a hello; after
// a failure it backs off as the agent does.
func (f *Fleet) runPush(nd *Node) {
	ctx := f.ctx
	var next time.Time // zero: nothing scheduled yet (the loop waits for its first hello)
	failures := 0
	for {
		reply, ok := f.waitPush(ctx, nd, next, failures == 0)
		if !ok {
			return
		}
		n, err := f.pushOnce(ctx, nd)
		if reply != nil {
			reply <- err
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.failed.Add(1)
			f.cfg.Log.Debug("fleet: push failed; retrying", "node", nd.Name, "err", err)
			next = time.Now().Add(retryDelay(failures))
			failures++
			continue
		}
		failures, next = 0, n
	}
}

// pushOnce fetches a challenge, answers it and returns when the server
// wants the next push.
func (f *Fleet) pushOnce(ctx context.Context, nd *Node) (time.Time, error) {
	c := nd.api.Load()
	start := time.Now()
	var ch evidence.Challenge
	if err := c.Do(ctx, http.MethodPost, "/v1/push/challenge", &evidence.PushHost{Host: nd.Name}, &ch); err != nil {
		return time.Time{}, fmt.Errorf("fetch challenge: %w", err)
	}
	if err := ch.Validate(); err != nil {
		return time.Time{}, fmt.Errorf("challenge: %w", err)
	}
	got := time.Now()
	ev, err := nd.evidence(&ch)
	if err != nil {
		return time.Time{}, err
	}
	answer := time.Since(got)
	var v pushVerdict
	if err := c.Do(ctx, http.MethodPost, "/v1/push/evidence", &evidence.PushEvidence{Host: nd.Name, Nonce: ch.Nonce, Evidence: ev}, &v); err != nil {
		return time.Time{}, fmt.Errorf("post evidence: %w", err)
	}
	f.answered.Add(1)
	f.sample(nd, start, answer, time.Since(start))
	in := time.Duration(min(max(v.NextIn, 0), 24*3600) * float64(time.Second))
	return time.Now().Add(in), nil
}

// waitPush waits until nd should push: until next (long-polling when poll,
// sleeping otherwise), or until the server asks for a quote now, or a hello
// (then it returns the hello's reply channel). A zero next waits for a
// hello only. It reports false when ctx ended.
func (f *Fleet) waitPush(ctx context.Context, nd *Node, next time.Time, poll bool) (chan error, bool) {
	for {
		select {
		case r := <-nd.kick:
			return r, true
		case <-ctx.Done():
			return nil, false
		default:
		}
		if next.IsZero() {
			select {
			case r := <-nd.kick:
				return r, true
			case <-ctx.Done():
				return nil, false
			}
		}
		if !time.Now().Before(next) {
			return nil, true
		}
		if !poll {
			return f.sleepPush(ctx, nd, next)
		}
		// The long-poll, cut short by a hello.
		wctx, cancel := context.WithDeadline(ctx, next)
		var reply chan error
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case reply = <-nd.kick:
				cancel()
			case <-wctx.Done():
			}
		}()
		var w evidence.PushWaitAnswer
		err := nd.wait.Load().Do(wctx, http.MethodPost, "/v1/push/wait", &evidence.PushHost{Host: nd.Name}, &w)
		cancel()
		<-watched
		switch {
		case reply != nil:
			return reply, true
		case ctx.Err() != nil:
			return nil, false
		case errors.Is(err, context.DeadlineExceeded) || !time.Now().Before(next):
			return nil, true // its turn
		case err != nil:
			// No long-poll: push on schedule anyway, as the agent does.
			f.cfg.Log.Debug("fleet: long-poll failed", "node", nd.Name, "err", err)
			return f.sleepPush(ctx, nd, next)
		case w.Attest:
			return nil, true
		}
	}
}

// sleepPush sleeps until next, or until a hello.
func (f *Fleet) sleepPush(ctx context.Context, nd *Node, next time.Time) (chan error, bool) {
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	select {
	case r := <-nd.kick:
		return r, true
	case <-ctx.Done():
		return nil, false
	case <-t.C:
		return nil, true
	}
}
