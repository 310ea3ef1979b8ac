// Package integrity is the attestation server's integrity service: it
// challenges every enrolled node on a schedule and at once when a node says
// hello after a boot, verifies the evidence (package verify), evaluates it
// against the known-good database (package policy) and hands the verdict to
// the recorder (package recorder), which persists it and keeps the verdict
// cache that relying parties read. Relying parties never cause a quote:
// they only read the cache.
package integrity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/policy"
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
	Now      func() time.Time
	Log      *slog.Logger
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
	AllMeasurements(ctx context.Context, fn func(host string, measurements []byte, verifiedAt time.Time, seq int64) error) error
}

// Challenger obtains evidence from a host's agent.
type Challenger interface {
	Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error)
}

// KnownGood is the policies in force and the references they may approve.
type KnownGood struct {
	Policies map[string]*policy.Policy
	Refs     map[string]*policy.Reference
}

// PolicyFor is h's policy (policy.For), or nil.
func (kg *KnownGood) PolicyFor(h store.Host) *policy.Policy {
	if kg == nil {
		return nil
	}
	return policy.For(kg.Policies, h.Policy, h.Labels)
}

// Change is a host whose level a known-good change moves.
type Change struct {
	Host    string           `json:"host"`
	From    verdict.Level    `json:"from"`
	To      verdict.Level    `json:"to"`
	Policy  string           `json:"policy,omitempty"`
	Reasons []verdict.Reason `json:"reasons,omitempty"`
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
	kg     atomic.Pointer[KnownGood]
	// kgMu orders recording verdicts against known-good changes: an
	// attestation records under the read lock, judged by the values in
	// force then; a change installs and re-evaluates under the write lock.
	// So no verdict judged by superseded values lands after a change.
	kgMu  sync.RWMutex
	hello chan string

	mu      sync.Mutex // guards aks, backoff
	aks     map[string]*akEntry
	backoff map[string]backoff
}

type akEntry struct {
	public []byte
	ak     *verify.AK
}

type backoff struct {
	failures int
	until    time.Time
}

// New builds the service. Call Load before serving relying parties.
func New(cfg Config, s Store, agents Challenger) *Service {
	cfg.defaults()
	rec := cfg.Recorder
	if rec == nil {
		rec = recorder.New(recorder.Config{Store: s, Now: cfg.Now, Log: cfg.Log})
	}
	return &Service{
		cfg: cfg, store: s, agents: agents, rec: rec, nonces: newNonces(),
		hello: make(chan string, 1024), aks: map[string]*akEntry{}, backoff: map[string]backoff{},
	}
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
// stored evidence against them at once, without new quotes. It returns the
// hosts whose level changed.
func (s *Service) SetKnownGood(ctx context.Context, kg *KnownGood) ([]Change, error) {
	s.kgMu.Lock()
	defer s.kgMu.Unlock()
	s.kg.Store(kg)
	return s.reevaluate(ctx)
}

// KnownGood returns the values in force (nil before the first SetKnownGood).
func (s *Service) KnownGood() *KnownGood { return s.kg.Load() }

// Hello asks for an immediate attestation of host, as after a reboot.
func (s *Service) Hello(host string) {
	select {
	case s.hello <- host:
	default: // a full queue means a round is due anyway
	}
}

// Run attests every active host each interval and every host that says
// hello, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	attest := func(host string, delay time.Duration) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if delay > 0 {
				t := time.NewTimer(delay)
				defer t.Stop()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if _, err := s.Attest(ctx, host); err != nil && ctx.Err() == nil {
				s.cfg.Log.Warn("attestation failed", "host", host, "err", err)
			}
		}()
	}
	round := func() {
		hosts, err := s.store.ListHosts(ctx)
		if err != nil {
			s.cfg.Log.Error("list hosts", "err", err)
			return
		}
		now := s.now()
		s.nonces.sweep(now)
		for _, h := range hosts {
			if h.State != store.HostActive || s.backingOff(h.Name, now) {
				continue
			}
			// Spread the round over the first half of the interval.
			attest(h.Name, rand.N(s.cfg.Interval/2+1))
		}
	}
	round()
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			round()
		case host := <-s.hello:
			s.clearBackoff(host)
			attest(host, 0)
		}
	}
}

func (s *Service) backingOff(host string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.backoff[host].until)
}

func (s *Service) clearBackoff(host string) {
	s.mu.Lock()
	delete(s.backoff, host)
	s.mu.Unlock()
}

// noteReachable records the outcome of contacting host; an unreachable host
// is retried after 1, 2, 4… intervals (at most 8).
func (s *Service) noteReachable(host string, ok bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		delete(s.backoff, host)
		return
	}
	b := s.backoff[host]
	b.failures++
	b.until = now.Add(s.cfg.Interval * time.Duration(min(1<<(b.failures-1), 8)) / 2)
	s.backoff[host] = b
}

// Attest challenges host once and records the verdict. An error means no
// decision could be made at all (the host is unknown to the store, or the
// store failed); a host that fails attestation gets an untrusted verdict.
func (s *Service) Attest(ctx context.Context, host string) (verdict.Verdict, error) {
	h, err := s.store.GetHost(ctx, host)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("attest %s: %w", host, err)
	}
	if h.State != store.HostActive {
		return verdict.Verdict{}, fmt.Errorf("attest %s: host is %s, not active", host, h.State)
	}
	// The attestation's number orders its verdict against every other of
	// this host, whatever the clocks do and whichever finishes first.
	seq, err := s.store.NextSeq(ctx, host)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("attest %s: %w", host, err)
	}
	ak, err := s.akOf(h)
	if err != nil {
		return s.record(ctx, s.fail(host, seq, verdict.Untrusted, verdict.Reason{Code: verdict.CodeAKNotActivated,
			Message: fmt.Sprintf("stored attestation key is unusable: %v", err)}), nil)
	}
	kg := s.kg.Load()
	required := required(kg, kg.PolicyFor(h))
	now := s.now()
	ch := &evidence.Challenge{
		Nonce:     s.nonces.issue(host, now.Add(s.cfg.Timeout)),
		Selection: merge(append(slices.Clone(required), collect)),
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	ev, err := s.agents.Challenge(cctx, h, ch)
	cancel()
	s.noteReachable(host, err == nil, now)
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
	v, rec := s.Verify(h, ak, ch.Nonce, s.kg.Load(), ev)
	v.Seq = seq
	return s.record(ctx, v, rec)
}

// Verify checks evidence answering the challenge with nonce and evaluates it
// under h's policy in kg. It consumes the nonce: the same challenge never
// verifies twice.
func (s *Service) Verify(h store.Host, ak *verify.AK, nonce []byte, kg *KnownGood, ev *evidence.Evidence) (verdict.Verdict, *store.EvidenceRecord) {
	host, pol := h.Name, kg.PolicyFor(h)
	now := s.now()
	if !s.nonces.consume(nonce, host, now) {
		return s.fail(host, 0, verdict.Untrusted, verdict.Reason{Code: verdict.CodeNonceReused,
			Message: "the challenge's nonce was already used, expired or issued to another host"}), nil
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: required(kg, pol), Evidence: ev})
	if !res.OK() {
		return s.fail(host, 0, verdict.Untrusted, res.Reasons...), nil
	}
	evJSON, _ := json.Marshal(ev)
	mJSON, _ := json.Marshal(res.Measurements)
	rec := &store.EvidenceRecord{Host: host, Evidence: evJSON, Nonce: nonce, Measurements: mJSON, VerifiedAt: now}
	return s.evaluate(host, kg, pol, &res.Measurements, now), rec
}

// evaluate turns verified measurements into a verdict established at vtime.
func (s *Service) evaluate(host string, kg *KnownGood, pol *policy.Policy, m *verify.Measurements, vtime time.Time) verdict.Verdict {
	v := verdict.Verdict{Host: host, VTime: vtime, Expiry: vtime.Add(s.cfg.Validity)}
	if pol == nil {
		v.Level = verdict.Untrusted
		v.Reasons = []verdict.Reason{{Code: verdict.CodeNoPolicy,
			Message: "no policy applies to this host: import a golden host or add references and a policy"}}
		return v
	}
	r := policy.Evaluate(pol, kg.Refs, m)
	v.Level, v.Reasons = r.Level, r.Reasons
	v.Policy = policy.Label(pol, approvedRefs(pol, kg.Refs))
	return v
}

func (s *Service) fail(host string, seq int64, level verdict.Level, reasons ...verdict.Reason) verdict.Verdict {
	now := s.now()
	return verdict.Verdict{Host: host, Level: level, VTime: now, Expiry: now.Add(s.cfg.Validity), Reasons: reasons, Seq: seq}
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
func (s *Service) Reevaluate(ctx context.Context) ([]Change, error) {
	s.kgMu.Lock()
	defer s.kgMu.Unlock()
	return s.reevaluate(ctx)
}

func (s *Service) reevaluate(ctx context.Context) ([]Change, error) {
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
	changes = slices.DeleteFunc(changes, func(c Change) bool { return !applied[c.Host] })
	return changes, nil
}

// Preview evaluates every host's latest verified evidence under kg without
// installing it, and returns the hosts whose level would change: exactly
// what SetKnownGood(kg) would then do.
func (s *Service) Preview(ctx context.Context, kg *KnownGood) ([]Change, error) {
	_, changes, err := s.plan(ctx, kg)
	return changes, err
}

// plan computes the verdicts kg gives every host with stored evidence whose
// latest verdict came from that evidence (a later failed verification
// stands), and the level changes they make.
func (s *Service) plan(ctx context.Context, kg *KnownGood) ([]verdict.Verdict, []Change, error) {
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
		changes []Change
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
		pol := kg.PolicyFor(h)
		v, err := s.judgeStored(host, kg, pol, mb, verifiedAt)
		if err != nil {
			return err
		}
		v.Seq = seq
		vs = append(vs, v)
		if from, to := cur.At(now), v.At(now); from != to {
			changes = append(changes, Change{Host: host, From: from, To: to, Policy: v.Policy, Reasons: v.Reasons})
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return vs, changes, nil
}

// storedPCRs reads only the PCR values of stored measurements, which
// encoding/json writes first: most verdicts are decided by PCR values
// alone, and scanning fifty events per host would dominate re-evaluating a
// fleet. ok is false when the document does not start that way.
func storedPCRs(mb []byte) (pcrs map[evidence.Bank]map[int][]byte, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(mb))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	if t, err := dec.Token(); err != nil || t != "pcrs" {
		return nil, false
	}
	if err := dec.Decode(&pcrs); err != nil {
		return nil, false
	}
	return pcrs, true
}

// judgeStored evaluates stored measurements, decoding their events only when
// the policy has event rules or the host fails (to explain which event).
func (s *Service) judgeStored(host string, kg *KnownGood, pol *policy.Policy, mb []byte, vtime time.Time) (verdict.Verdict, error) {
	if pcrs, ok := storedPCRs(mb); ok && (pol == nil || !policy.NeedsEvents(pol, kg.Refs)) {
		if v := s.evaluate(host, kg, pol, &verify.Measurements{PCRs: pcrs}, vtime); v.Level == verdict.Trusted || pol == nil {
			return v, nil
		}
	}
	var m verify.Measurements
	if err := json.Unmarshal(mb, &m); err != nil {
		return verdict.Verdict{}, fmt.Errorf("re-evaluate %s: stored measurements: %w", host, err)
	}
	return s.evaluate(host, kg, pol, &m, vtime), nil
}

func (s *Service) akOf(h store.Host) (*verify.AK, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.aks[h.Name]; e != nil && string(e.public) == string(h.AKPublic) {
		return e.ak, nil
	}
	ak, err := verify.ParseAK(h.AKPublic)
	if err != nil {
		return nil, err
	}
	s.aks[h.Name] = &akEntry{public: h.AKPublic, ak: ak}
	return ak, nil
}

// required is what pol reads: the selection a quote must cover.
func required(kg *KnownGood, pol *policy.Policy) []evidence.Selection {
	if pol == nil {
		return nil
	}
	return policy.Selection(pol, kg.Refs)
}

func approvedRefs(pol *policy.Policy, refs map[string]*policy.Reference) []*policy.Reference {
	var out []*policy.Reference
	for _, c := range pol.Require {
		for _, n := range pol.Approved[c] {
			if r := refs[n]; r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// merge unions PCR selections per bank.
func merge(sels []evidence.Selection) []evidence.Selection {
	want := map[evidence.Bank][]int{}
	for _, s := range sels {
		for _, p := range s.PCRs {
			if !slices.Contains(want[s.Bank], p) {
				want[s.Bank] = append(want[s.Bank], p)
			}
		}
	}
	var out []evidence.Selection
	for _, b := range evidence.Banks {
		if p := want[b]; len(p) > 0 {
			slices.Sort(p)
			out = append(out, evidence.Selection{Bank: b, PCRs: p})
		}
	}
	return out
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
	delete(s.backoff, host)
	s.mu.Unlock()
	if f, ok := s.agents.(interface{ Forget(host string) }); ok {
		f.Forget(host) // its connections, made with a certificate now revoked
	}
	return nil
}

// With returns kg with c applied; kg is not modified.
func (kg *KnownGood) With(c *policy.Change) *KnownGood {
	next := &KnownGood{Policies: map[string]*policy.Policy{}, Refs: map[string]*policy.Reference{}}
	if kg != nil {
		maps.Copy(next.Policies, kg.Policies)
		maps.Copy(next.Refs, kg.Refs)
	}
	for _, r := range c.References {
		next.Refs[r.Name] = r
	}
	for _, p := range c.Policies {
		next.Policies[p.Name] = p
	}
	for _, n := range c.Retire {
		delete(next.Refs, n)
	}
	return next
}

// InForce says whether a reference of that name is in force.
func (kg *KnownGood) InForce(name string) bool { return kg != nil && kg.Refs[name] != nil }
