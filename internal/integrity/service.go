// Package integrity is the attestation server's integrity service: it
// challenges every enrolled node on a schedule and at once when a node says
// hello after a boot, has the evidence appraised (package appraisal: verify,
// then policy, against the known-good set in force from package knowngood)
// and hands the verdict to the recorder (package recorder), which persists
// it and keeps the verdict cache that relying parties read. It owns what
// appraisal must not: nonces, schedules, backoff and the agent client.
// Relying parties never cause a quote: they only read the cache.
package integrity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"trustpool/internal/appraisal"
	"trustpool/internal/evidence"
	"trustpool/internal/knowngood"
	"trustpool/internal/recorder"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// Config tunes the schedule.
type Config struct {
	// Interval between two attestations of a host (default 30 s, inside
	// Nova's 60 s verdict cache).
	Interval time.Duration
	// Validity is how long a verdict stands before it reads as unknown
	// (default 3 × Interval, so one lost round does not empty the pool).
	Validity time.Duration
	// Timeout bounds one challenge round trip (default 10 s).
	Timeout time.Duration
	// Concurrency bounds challenges in flight (default 64).
	Concurrency int
	// Recorder records the verdicts; default one over the service's store.
	Recorder *recorder.Recorder
	// Appraised, when set, is told how long each verification and
	// appraisal of evidence took (package metrics).
	Appraised func(time.Duration)
	Now       func() time.Time
	Log       *slog.Logger
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	if c.Validity <= 0 {
		c.Validity = 3 * c.Interval
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Store is what the integrity service needs from storage.
type Store interface {
	recorder.Store
	ListHosts(ctx context.Context) ([]store.Host, error)
	GetHost(ctx context.Context, name string) (store.Host, error)
	NextSeq(ctx context.Context, host string) (int64, error)
	NumberAttestation(ctx context.Context, name string) (store.Host, int64, error)
	AllMeasurements(ctx context.Context, fn func(host string, measurements []byte, verifiedAt time.Time, seq int64) error) error
}

// Challenger obtains evidence from a host's agent.
type Challenger interface {
	Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error)
}

// collect is always quoted besides what the policy reads, so that the stored
// evidence can feed golden-host import and previews of future policies.
var collect = evidence.Selection{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 19}}

// Service is the integrity service.
type Service struct {
	cfg    Config
	store  Store
	agents Challenger
	rec    *recorder.Recorder
	nonces *nonces
	kg     atomic.Pointer[knowngood.Set]
	// kgMu orders recording verdicts against known-good changes: an
	// attestation records under the read lock, judged by the values in
	// force then; a change installs and re-evaluates under the write lock.
	// So no verdict judged by superseded values lands after a change.
	kgMu  sync.RWMutex
	sched *schedule
	// held, when set, are the hosts this replica holds leases on (Hold):
	// it attests only those. Unset, every active host is this server's.
	held atomic.Pointer[map[string]bool]
	push *pushHub

	mu  sync.Mutex // guards aks
	aks map[string]*verify.AK
}

// New builds the service. Call Load before serving relying parties.
func New(cfg Config, s Store, agents Challenger) *Service {
	cfg.defaults()
	rec := cfg.Recorder
	if rec == nil {
		rec = recorder.New(recorder.Config{Store: s, Now: cfg.Now, Log: cfg.Log})
	}
	svc := &Service{
		cfg: cfg, store: s, agents: agents, rec: rec, nonces: newNonces(),
		sched: newSchedule(cfg.Interval, cfg.Now), aks: map[string]*verify.AK{},
		push: newPushHub(),
	}
	svc.sched.pushDue = svc.push.want
	svc.sched.last = func(host string) (time.Time, bool) {
		v, ok := rec.Cache().Verdict(host)
		return v.VTime, ok && !v.VTime.IsZero()
	}
	return svc
}

// now is the clock at the store's precision (microseconds), so a verdict in
// the cache and the same verdict read back from the store are equal.
func (s *Service) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Microsecond) }

// Cache is the verdict cache relying parties read.
func (s *Service) Cache() *recorder.Cache { return s.rec.Cache() }

// Recorder is the recorder the service hands its verdicts to.
func (s *Service) Recorder() *recorder.Recorder { return s.rec }

// Load rebuilds the cache from the store, so a restarted server answers at
// once with the persisted verdicts that are still valid.
func (s *Service) Load(ctx context.Context) error { return s.rec.Load(ctx) }

// SetKnownGood installs the known-good values and re-evaluates every host's
// stored evidence against them at once, without new quotes; push agents
// are then asked for a fresh quote within a tenth of an interval (their
// next wait returns). It returns the hosts whose level changed.
func (s *Service) SetKnownGood(ctx context.Context, kg *knowngood.Set) ([]knowngood.Change, error) {
	s.kgMu.Lock()
	defer s.kgMu.Unlock()
	first := s.kg.Load() == nil
	s.kg.Store(kg)
	changes, err := s.reevaluate(ctx)
	if err == nil && !first {
		s.sched.pushSoon()
	}
	return changes, err
}

// KnownGood returns the values in force (nil before the first SetKnownGood).
func (s *Service) KnownGood() *knowngood.Set { return s.kg.Load() }

// Hello asks for an immediate attestation of host, as after a reboot.
func (s *Service) Hello(host string) { s.sched.soon(host) }

// Overdue counts the hosts whose attestation is due for longer than a
// challenge's timeout without a worker to take it: the server is not
// keeping up (their verdicts will expire, honestly, to unknown).
func (s *Service) Overdue() int { return s.sched.overdue(s.cfg.Timeout) }

// Run attests every active host once an interval, each keeping its place
// in the interval, and at once after a hello, with at most Concurrency
// challenges in flight and at most one per host, until ctx ends. The host
// list is read again every interval.
func (s *Service) Run(ctx context.Context) error {
	refresh := func() {
		hosts, err := s.store.ListHosts(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Log.Error("list hosts", "err", err)
			}
			return
		}
		active := make([]string, 0, len(hosts))
		held := s.held.Load()
		for _, h := range hosts {
			if h.State == store.HostActive && (held == nil || (*held)[h.Name]) {
				active = append(active, h.Name)
				s.sched.setPush(h.Name, h.Mode == store.ModePush)
			}
		}
		s.sched.keep(active)
		s.nonces.sweep(s.now())
		if n := s.Overdue(); n > 0 {
			s.cfg.Log.Warn("attestation is falling behind", "overdue_hosts", n, "hosts", len(active), "concurrency", s.cfg.Concurrency)
		}
	}
	refresh()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range s.cfg.Concurrency {
		wg.Go(func() { s.work(ctx) })
	}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			refresh()
		}
	}
}

// work attests what the schedule says is due, until ctx ends.
func (s *Service) work(ctx context.Context) {
	for ctx.Err() == nil {
		host, due, wait := s.sched.take()
		if host == "" {
			if wait == 0 {
				wait = s.cfg.Interval // nothing scheduled: until the next refresh at most
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-s.sched.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		s.sched.signal() // more may be due: another worker looks
		v, err := s.attestPull(ctx, host)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("attestation failed", "host", host, "err", err)
		}
		s.sched.done(host, due, err == nil && !unreachable(v))
	}
}

// attestPull is a worker's attestation of a host the schedule says is
// due: dialled, unless it turned push meanwhile (then nothing: it comes).
func (s *Service) attestPull(ctx context.Context, host string) (verdict.Verdict, error) {
	h, seq, err := s.numberedHost(ctx, host)
	if err != nil || h.Mode == store.ModePush {
		return verdict.Verdict{}, err
	}
	return s.attest(ctx, h, seq, s.dial)
}

// unreachable reports whether v says no evidence could be had.
func unreachable(v verdict.Verdict) bool {
	return len(v.Reasons) > 0 && (v.Reasons[0].Code == verdict.CodeUnreachable || v.Reasons[0].Code == verdict.CodeAgentError)
}

// Attest challenges host once and records the verdict. An error means no
// decision could be made at all (the host is unknown to the store, or the
// store failed); a host that fails attestation gets an untrusted verdict.
// A pull host is dialled; a push host's agent is asked (through its
// long-poll) for a fresh quote, and Attest waits a challenge's timeout for
// the verdict of the evidence it posts.
func (s *Service) Attest(ctx context.Context, host string) (verdict.Verdict, error) {
	h, seq, err := s.numberedHost(ctx, host)
	if err != nil {
		return verdict.Verdict{}, err
	}
	if h.Mode == store.ModePush {
		return s.attestPush(ctx, h)
	}
	return s.attest(ctx, h, seq, s.dial)
}

// answerFunc obtains the evidence answering a challenge of h: the nonce it
// answers and the evidence (pull: issue a challenge and dial the agent;
// push: what the agent posted). An error is an agent that could not be
// had (ErrAgent: it answered, wrongly).
type answerFunc func(ctx context.Context, h store.Host) (nonce []byte, ev *evidence.Evidence, err error)

// numberedHost reads host, which must be active, and numbers a new
// attestation of it: the attestation's number orders its verdict against
// every other of this host, whatever the clocks do and whichever finishes
// first.
func (s *Service) numberedHost(ctx context.Context, host string) (store.Host, int64, error) {
	h, seq, err := s.store.NumberAttestation(ctx, host)
	if err != nil {
		return store.Host{}, 0, fmt.Errorf("attest %s: %w", host, err)
	}
	if h.State != store.HostActive {
		return store.Host{}, 0, fmt.Errorf("attest %s: host is %s, not active", host, h.State)
	}
	return h, seq, nil
}

// challenge is a fresh challenge for h: a single-use nonce bound to h,
// expiring after a challenge's timeout, and the PCRs to quote.
func (s *Service) challenge(h store.Host) *evidence.Challenge {
	return &evidence.Challenge{
		Nonce:     s.nonces.issue(h.Name, s.now().Add(s.cfg.Timeout)),
		Selection: s.challengeSelection(h),
	}
}

// challengeSelection is what h is asked to quote: what its policy reads
// under the values in force, and what is always collected.
func (s *Service) challengeSelection(h store.Host) []evidence.Selection {
	return appraisal.Selection(s.kg.Load(), hostOf(h), collect)
}

// dial is pull mode's answer: the server challenges the agent at h.URL.
func (s *Service) dial(ctx context.Context, h store.Host) ([]byte, *evidence.Evidence, error) {
	ch := s.challenge(h)
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ev, err := s.agents.Challenge(cctx, h, ch)
	return ch.Nonce, ev, err
}

// attest is attestation seq of h, whichever way its evidence comes: the
// answer, verification (the nonce consumed), appraisal and the recorder.
func (s *Service) attest(ctx context.Context, h store.Host, seq int64, answer answerFunc) (verdict.Verdict, error) {
	host := h.Name
	ak, err := s.akOf(h)
	if err != nil {
		return s.record(ctx, s.fail(host, seq, verdict.Untrusted, verdict.Reason{Code: verdict.CodeAKNotActivated,
			Message: fmt.Sprintf("stored attestation key is unusable: %v", err)}), nil)
	}
	nonce, ev, err := answer(ctx, h)
	if err != nil {
		code := verdict.CodeUnreachable
		if errors.Is(err, ErrAgent) {
			code = verdict.CodeAgentError
		}
		return s.record(ctx, s.fail(host, seq, verdict.Unknown, verdict.Reason{Code: code, Message: err.Error()}), nil)
	}
	s.kgMu.RLock()
	defer s.kgMu.RUnlock()
	// Judge by the values in force now: they may have changed while the
	// agent answered. A policy that now reads PCRs the challenge did not ask
	// for fails closed (pcr-not-quoted) until the next round.
	v, rec := s.Verify(h, ak, nonce, s.kg.Load(), ev)
	v.Seq = seq
	return s.record(ctx, v, rec)
}

// Verify checks evidence answering the challenge with nonce and appraises
// it under h's policy in kg. It consumes the nonce: the same challenge never
// verifies twice.
func (s *Service) Verify(h store.Host, ak *verify.AK, nonce []byte, kg *knowngood.Set, ev *evidence.Evidence) (verdict.Verdict, *store.EvidenceRecord) {
	now := s.now()
	if !s.nonces.consume(nonce, h.Name, now) {
		return s.fail(h.Name, 0, verdict.Untrusted, verdict.Reason{Code: verdict.CodeNonceReused,
			Message: "the challenge's nonce was already used, expired or issued to another host"}), nil
	}
	start := time.Now()
	v, rec := appraisal.Appraise(appraisal.Input{
		Host: hostOf(h), AK: ak, Nonce: nonce, KnownGood: kg, Evidence: ev, Now: now, Validity: s.cfg.Validity,
	})
	if s.cfg.Appraised != nil {
		s.cfg.Appraised(time.Since(start))
	}
	if rec == nil {
		return v, nil
	}
	return v, &store.EvidenceRecord{Host: rec.Host, Evidence: rec.Evidence, Nonce: rec.Nonce, Measurements: rec.Measurements, VerifiedAt: rec.VerifiedAt}
}

// hostOf is what an appraisal knows of h.
func hostOf(h store.Host) appraisal.Host {
	return appraisal.Host{Name: h.Name, Policy: h.Policy, Labels: h.Labels}
}

func (s *Service) fail(host string, seq int64, level verdict.Level, reasons ...verdict.Reason) verdict.Verdict {
	v := appraisal.Fail(host, level, s.now(), s.cfg.Validity, reasons...)
	v.Seq = seq
	return v
}

// record hands v (with the evidence that verified, if any) to the
// recorder, and returns the host's verdict: v, or the newer verdict that
// stands when v lost the race to a later attestation.
func (s *Service) record(ctx context.Context, v verdict.Verdict, rec *store.EvidenceRecord) (verdict.Verdict, error) {
	res, err := s.rec.Record(ctx, v, rec)
	switch {
	case err != nil:
		return v, err
	case res.Gone:
		return v, fmt.Errorf("attest %s: the host was deleted meanwhile: %w", v.Host, store.ErrNotFound)
	case !res.Written:
		if cur, ok := s.Cache().Verdict(v.Host); ok {
			return cur, nil
		}
	}
	return v, nil
}

// Reevaluate applies the known-good values in force to every host's latest
// verified evidence and returns the hosts whose level changed.
func (s *Service) Reevaluate(ctx context.Context) ([]knowngood.Change, error) {
	s.kgMu.Lock()
	defer s.kgMu.Unlock()
	return s.reevaluate(ctx)
}

func (s *Service) reevaluate(ctx context.Context) ([]knowngood.Change, error) {
	vs, changes, err := s.plan(ctx, s.kg.Load())
	if err != nil {
		return nil, err
	}
	recs := make([]store.Record, len(vs))
	for i, v := range vs {
		recs[i] = store.Record{Verdict: v}
	}
	out, err := s.rec.RecordAll(ctx, recs)
	if err != nil {
		return nil, fmt.Errorf("re-evaluate: %w", err)
	}
	applied := map[string]bool{}
	for i, v := range vs {
		if out[i].Written {
			applied[v.Host] = true
		}
	}
	// Hosts attested while the change was computed keep that verdict.
	changes = slices.DeleteFunc(changes, func(c knowngood.Change) bool { return !applied[c.Host] })
	return changes, nil
}

// Preview evaluates every host's latest verified evidence under kg without
// installing it, and returns the hosts whose level would change: exactly
// what SetKnownGood(kg) would then do.
func (s *Service) Preview(ctx context.Context, kg *knowngood.Set) ([]knowngood.Change, error) {
	_, changes, err := s.plan(ctx, kg)
	return changes, err
}

// plan computes the verdicts kg gives every host with stored evidence whose
// latest verdict came from that evidence (a later failed verification
// stands), and the level changes they make.
func (s *Service) plan(ctx context.Context, kg *knowngood.Set) ([]verdict.Verdict, []knowngood.Change, error) {
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("re-evaluate: %w", err)
	}
	byName := make(map[string]store.Host, len(hosts))
	for _, h := range hosts {
		byName[h.Name] = h
	}
	var (
		vs      = make([]verdict.Verdict, 0, len(hosts))
		changes []knowngood.Change
		now     = s.now()
	)
	err = s.store.AllMeasurements(ctx, func(host string, mb []byte, verifiedAt time.Time, seq int64) error {
		h, ok := byName[host]
		if !ok {
			return nil
		}
		cur, _ := s.Cache().Verdict(host)
		if cur.Seq > seq {
			return nil // a later attestation failed verification: that verdict stands
		}
		if !verifiedAt.Add(s.cfg.Validity).After(now) {
			return nil // judged again, it would have expired already
		}
		v, err := appraisal.JudgeStored(hostOf(h), kg, mb, verifiedAt, s.cfg.Validity)
		if err != nil {
			return fmt.Errorf("re-evaluate: %w", err)
		}
		v.Seq = seq
		vs = append(vs, v)
		if from, to := cur.At(now), v.At(now); from != to {
			changes = append(changes, knowngood.Change{Host: host, From: from, To: to, Policy: v.Policy, Reasons: v.Reasons})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return vs, changes, nil
}

func (s *Service) akOf(h store.Host) (*verify.AK, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ak := s.aks[h.Name]; ak != nil && ak.Is(h.AKPublic) {
		return ak, nil
	}
	ak, err := verify.ParseAK(h.AKPublic)
	if err != nil {
		return nil, err
	}
	s.aks[h.Name] = ak
	return ak, nil
}

// Remove deletes host as actor through the recorder (it reads as unknown
// at once, with its audit entry and transition) and forgets what the
// service kept of it.
func (s *Service) Remove(ctx context.Context, host, actor string) error {
	if err := s.rec.Remove(ctx, host, actor); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.aks, host)
	s.mu.Unlock()
	s.sched.remove(host)
	s.push.forget(host)
	s.nonces.forget(host) // its challenges die with it
	if f, ok := s.agents.(interface{ Forget(host string) }); ok {
		f.Forget(host) // its connections, made with a certificate now revoked
	}
	return nil
}
