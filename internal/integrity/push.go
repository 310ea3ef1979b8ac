package integrity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// Push mode: the agent opens no port. It fetches a challenge
// (PushChallenge: the same single-use, host-bound, short-lived nonce a pull
// challenge carries), quotes and posts the evidence (PushEvidence), which
// is verified, appraised and recorded exactly like a pull attestation; the
// answer says when to come back: the host's due time in the schedule,
// which the server owns. Between pushes the agent long-polls (Wait), so the
// server can ask for a fresh quote at once.

// MaxOutstandingPush bounds the unanswered, unexpired challenges a push
// host may hold: more challenge requests are refused (problem.TooMany).
const MaxOutstandingPush = 4

// ErrNoPush is a push agent that did not post evidence in time.
var ErrNoPush = errors.New("the push agent did not post evidence")

// pushHub is what the service keeps of push agents: who is asked for a
// fresh quote, and who waits for their next verdict.
type pushHub struct {
	mu sync.Mutex // guards the maps
	// wake is closed when the server wants a fresh quote from the host; a
	// new one is made when the agent fetches a challenge.
	wake map[string]chan struct{}
	// waiters wait for the host's next pushed verdict (operators' attest).
	waiters map[string][]chan verdict.Verdict
}

func newPushHub() *pushHub {
	return &pushHub{wake: map[string]chan struct{}{}, waiters: map[string][]chan verdict.Verdict{}}
}

func (p *pushHub) wakeOf(host string) chan struct{} {
	c, ok := p.wake[host]
	if !ok {
		c = make(chan struct{})
		p.wake[host] = c
	}
	return c
}

// want asks host's agent for a fresh quote now (it need not be waiting:
// its next wait returns at once).
func (p *pushHub) want(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.wakeOf(host)
	select {
	case <-c:
	default:
		close(c)
	}
}

// fetched clears a want: the agent is fetching a challenge.
func (p *pushHub) fetched(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.wake[host]; ok {
		select {
		case <-c:
			delete(p.wake, host)
		default:
		}
	}
}

// await registers for host's next pushed verdict.
func (p *pushHub) await(host string) chan verdict.Verdict {
	c := make(chan verdict.Verdict, 1)
	p.mu.Lock()
	p.waiters[host] = append(p.waiters[host], c)
	p.mu.Unlock()
	return c
}

func (p *pushHub) cancel(host string, c chan verdict.Verdict) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.waiters[host]
	for i, w := range ws {
		if w == c {
			p.waiters[host] = append(ws[:i:i], ws[i+1:]...)
			break
		}
	}
	if len(p.waiters[host]) == 0 {
		delete(p.waiters, host)
	}
}

// deliver hands v to everyone waiting for host's next verdict.
func (p *pushHub) deliver(host string, v verdict.Verdict) {
	p.mu.Lock()
	ws := p.waiters[host]
	delete(p.waiters, host)
	p.mu.Unlock()
	for _, w := range ws {
		w <- v
	}
}

func (p *pushHub) forget(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.wake, host)
}

// pushHost is host, which must be active and in push mode: a pull host's
// agent is dialled, and cannot push instead.
func (s *Service) pushHost(ctx context.Context, host string) (store.Host, error) {
	h, err := s.store.GetHost(ctx, host)
	if err != nil {
		return store.Host{}, fmt.Errorf("push %s: %w", host, err)
	}
	return h, s.pushable(h)
}

// pushable says whether h may push: it must be active and in push mode.
func (s *Service) pushable(h store.Host) error {
	if h.State != store.HostActive {
		return problem.New(problem.Conflict, "host %s is %s, not active", h.Name, h.State)
	}
	if h.Mode != store.ModePush {
		return problem.New(problem.Conflict, "host %s is in %s mode: the server dials its agent", h.Name, h.Mode)
	}
	// A push host admitted since the last refresh of the host list is
	// known to the schedule from its first request on.
	s.sched.setPush(h.Name, true)
	return nil
}

// PushChallenge issues a challenge to host's push agent (authenticated by
// the caller). At most MaxOutstandingPush may be unanswered at once.
func (s *Service) PushChallenge(ctx context.Context, host string) (*evidence.Challenge, error) {
	h, err := s.pushHost(ctx, host)
	if err != nil {
		return nil, err
	}
	now := s.now()
	nonce, ok := s.nonces.issueAtMost(h.Name, now.Add(s.cfg.Timeout), now, MaxOutstandingPush)
	if !ok {
		return nil, problem.New(problem.TooMany, "host %s holds %d unanswered challenges: answer one, or wait %s", h.Name, MaxOutstandingPush, s.cfg.Timeout)
	}
	s.push.fetched(h.Name)
	return &evidence.Challenge{Nonce: nonce, Selection: s.challengeSelection(h)}, nil
}

// PushResult is the server's answer to pushed evidence.
type PushResult struct {
	Verdict verdict.Verdict
	// Next is when the host is due again: its agent pushes then (or
	// earlier, when its long-poll says so).
	Next time.Time
}

// PushEvidence verifies and records evidence that host's push agent posted
// in answer to the challenge with nonce, like a pull attestation (the nonce
// must have been issued to host, unexpired and unused), and reschedules
// the host.
func (s *Service) PushEvidence(ctx context.Context, host string, nonce []byte, ev *evidence.Evidence) (PushResult, error) {
	h, seq, err := s.store.NumberAttestation(ctx, host)
	if err != nil {
		return PushResult{}, fmt.Errorf("push %s: %w", host, err)
	}
	if err := s.pushable(h); err != nil {
		return PushResult{}, err
	}
	v, err := s.attest(ctx, h, seq, func(context.Context, store.Host) ([]byte, *evidence.Evidence, error) {
		return nonce, ev, nil
	})
	if err != nil {
		return PushResult{}, err
	}
	next := s.sched.pushed(h.Name)
	s.push.deliver(h.Name, v)
	return PushResult{Verdict: v, Next: next}, nil
}

// Wait holds until the server wants a fresh quote from host's push agent
// (true), or max passes or ctx ends (false).
func (s *Service) Wait(ctx context.Context, host string, max time.Duration) bool {
	s.push.mu.Lock()
	c := s.push.wakeOf(host)
	s.push.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// attestPush asks h's push agent for a fresh quote and waits a challenge's
// timeout for the verdict of what it posts. An agent that does not post in
// time gets an unknown verdict, as an unreachable pull agent does.
func (s *Service) attestPush(ctx context.Context, h store.Host) (verdict.Verdict, error) {
	c := s.push.await(h.Name)
	defer s.push.cancel(h.Name, c)
	s.push.want(h.Name)
	t := time.NewTimer(2 * s.cfg.Timeout) // its long-poll answer, a challenge, a quote
	defer t.Stop()
	select {
	case v := <-c:
		return v, nil
	case <-ctx.Done():
		return verdict.Verdict{}, fmt.Errorf("attest %s: %w", h.Name, ctx.Err())
	case <-t.C:
	}
	// Numbered now: this unknown is newer than any verdict posted meanwhile.
	seq, err := s.store.NextSeq(ctx, h.Name)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("attest %s: %w", h.Name, err)
	}
	return s.attest(ctx, h, seq, func(context.Context, store.Host) ([]byte, *evidence.Evidence, error) {
		return nil, nil, fmt.Errorf("challenge %s: %w within %s of the request", h.Name, ErrNoPush, 2*s.cfg.Timeout)
	})
}

// SetMode tells the schedule host's mode after an admin switched it.
func (s *Service) SetMode(host string, mode store.HostMode) {
	s.sched.setPush(host, mode == store.ModePush)
	if mode == store.ModePush {
		s.push.want(host) // a waiting agent, if any, pushes now
	}
}
