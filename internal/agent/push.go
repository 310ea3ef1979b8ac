package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
)

// Push mode: the agent opens no port. It fetches a challenge from the
// server, quotes, posts the evidence and is told when to come back; in
// between it long-polls, so the server can ask for a fresh quote at once.
// The first push is at start: a rebooted node is attested at once.

// WaitTimeout bounds one long-poll: the server holds it at most 55 s.
const WaitTimeout = 70 * time.Second

// Reconnection backoff: 1 s doubling to 60 s, each delay ±20 %, so that
// the nodes of a fleet do not all come back at once after a server restart.
const (
	backoffMin    = time.Second
	backoffMax    = 60 * time.Second
	backoffJitter = 0.2
)

// RetryDelay is the delay before retry n (0: the first), with jitter j in
// [-1, 1) scaling ±backoffJitter.
func RetryDelay(n int, j float64) time.Duration {
	d := backoffMax
	if n < 6 {
		d = min(backoffMin<<n, backoffMax)
	}
	return time.Duration(float64(d) * (1 + backoffJitter*j))
}

// pushVerdict is what the agent reads of the server's answer to its
// evidence; the rest (reasons, policy) is for the log.
type pushVerdict struct {
	Level   string  `json:"trust_lvl"`
	NextIn  float64 `json:"next_in"`
	Reasons []struct {
		Code string `json:"code"`
	} `json:"reasons"`
}

func (a *Agent) runPush(ctx context.Context) error {
	cert, err := a.ensureEnrolled(ctx, "")
	if err != nil {
		return err
	}
	a.server = a.serverClient(&cert)
	a.server.AllowUnknownFields = true // the verdict carries more than the agent reads
	waiter := a.serverClientTimeout(&cert, WaitTimeout)
	a.cfg.Log.Info("agent pushing evidence", "server", a.cfg.Server)
	failures := 0
	for {
		next, err := a.pushOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d := RetryDelay(failures, 2*rand.Float64()-1)
			failures++
			a.cfg.Log.Warn("push failed; retrying", "err", err, "in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		failures = 0
		a.waitUntil(ctx, waiter, next)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// pushOnce fetches a challenge, answers it and returns when the server
// wants the next push.
func (a *Agent) pushOnce(ctx context.Context) (time.Time, error) {
	host := evidence.PushHost{Host: a.cfg.Name}
	var c evidence.Challenge
	if err := a.post(ctx, "/v1/push/challenge", &host, &c); err != nil {
		return time.Time{}, fmt.Errorf("fetch challenge: %w", err)
	}
	if err := c.Validate(); err != nil {
		return time.Time{}, fmt.Errorf("challenge: %w", err)
	}
	ev, err := a.Evidence(&c)
	if err != nil {
		return time.Time{}, err
	}
	var v pushVerdict
	if err := a.post(ctx, "/v1/push/evidence", &evidence.PushEvidence{Host: a.cfg.Name, Nonce: c.Nonce, Evidence: ev}, &v); err != nil {
		return time.Time{}, fmt.Errorf("post evidence: %w", err)
	}
	codes := make([]string, 0, len(v.Reasons))
	for _, r := range v.Reasons {
		codes = append(codes, r.Code)
	}
	in := time.Duration(min(max(v.NextIn, 0), 24*3600) * float64(time.Second))
	a.cfg.Log.Info("pushed evidence", "trust_lvl", v.Level, "reasons", codes, "next_in", in.Round(time.Millisecond))
	return time.Now().Add(in), nil
}

// waitUntil long-polls until next, or until the server asks for a quote
// now, or the server cannot be reached (then the push that follows backs
// off).
func (a *Agent) waitUntil(ctx context.Context, waiter *httpjson.Client, next time.Time) {
	for time.Now().Before(next) {
		wctx, cancel := context.WithDeadline(ctx, next)
		var w evidence.PushWaitAnswer
		err := waiter.Do(wctx, http.MethodPost, "/v1/push/wait", &evidence.PushHost{Host: a.cfg.Name}, &w)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded) || !time.Now().Before(next):
			return // its turn
		case err != nil:
			// No long-poll (a proxy that cuts it, a server restarting):
			// push on schedule anyway; a push that fails backs off.
			a.cfg.Log.Debug("long-poll failed", "err", err)
			sleep(ctx, time.Until(next))
			return
		case w.Attest:
			a.cfg.Log.Info("the server asks for a fresh quote")
			return
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
