package nova

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/resourceproviders"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/traits"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// Defaults for TraitSyncConfig.
const (
	DefaultTrait    = "CUSTOM_TRUSTED_HOST"
	DefaultInterval = 5 * time.Minute
	DefaultCoalesce = 100 * time.Millisecond
	DefaultPoll     = time.Second
)

// placementMicroversion is the newest microversion of Debian 12's Placement
// (8.0.0); traits need 1.6 or later.
const placementMicroversion = "1.39"

// maxConflictAttempts bounds the read-modify-write of one provider's traits
// when Placement keeps answering 409 (another writer bumped the generation).
const maxConflictAttempts = 5

// traitRE is Placement's rule for custom trait names.
var traitRE = regexp.MustCompile(`^CUSTOM_[A-Z0-9_]{1,248}$`)

// Levels reads a host's trust level now, fail-closed (verdict.Verdict.At):
// missing or expired reads Unknown. It must not block on a node, and must be
// safe for concurrent use (Run and Reconcile may read at the same time).
type Levels interface {
	Level(host string) verdict.Level
}

// KeystoneAuth is password authentication against Keystone (v3), for real
// deployments. The Placement endpoint comes from the service catalog unless
// TraitSyncConfig.Endpoint is set.
type KeystoneAuth struct {
	AuthURL       string // e.g. https://keystone.example:5000/v3
	Username      string
	Password      string
	Project       string // project name the token is scoped to
	UserDomain    string // default "Default"
	ProjectDomain string // default "Default"
	Region        string // catalog region; empty means any
	Interface     string // catalog interface: public (default), internal or admin
}

// TraitSyncConfig configures TraitSync. Exactly one of Token and Keystone
// must be set.
type TraitSyncConfig struct {
	// Endpoint is Placement's URL, e.g. http://placement.example:8778/.
	// Required with Token; with Keystone it overrides the catalog.
	Endpoint string
	// Token is a static token sent as X-Auth-Token (noauth2: "admin").
	Token string
	// Keystone is password authentication for real deployments.
	Keystone *KeystoneAuth
	// Trait is the custom trait on trusted hosts' providers; default
	// CUSTOM_TRUSTED_HOST.
	Trait string
	// Interval is how often every provider is reconciled, repairing any
	// drift (a trait set or removed by hand, a missed change); default 5 min.
	Interval time.Duration
	// Coalesce is how long Wake calls are collected before the changes are
	// applied together; default 100 ms.
	Coalesce time.Duration
	// Poll is how often the outbox is looked at without a Wake (a retry
	// due, a change another replica wrote); default 1 s.
	Poll time.Duration
	// Owner names this sync in its claims on changes and on the
	// reconcile's run: unique among the replicas (the server passes its
	// replica name); default host name and process ID.
	Owner string
	// Now is the clock verdicts' expiries and claims are read on; default
	// time.Now.
	Now func() time.Time
	// HTTPClient is used for Placement and Keystone; default: one with a 30 s
	// timeout, so a hung Placement never stalls the sync for good.
	HTTPClient *http.Client
	// Logger receives what the sync did and what failed; default: discarded.
	Logger *slog.Logger
	// Failed, when set, is told of every failed pass: "reconcile" (every
	// provider) or "changes" (the outbox's changes).
	Failed func(pass string)
}

// Validate reports every problem with the configuration at once.
func (c TraitSyncConfig) Validate() error {
	var errs []error
	switch {
	case c.Token == "" && c.Keystone == nil:
		errs = append(errs, errors.New("placement: set a token or Keystone credentials"))
	case c.Token != "" && c.Keystone != nil:
		errs = append(errs, errors.New("placement: set a token or Keystone credentials, not both"))
	case c.Token != "" && c.Endpoint == "":
		errs = append(errs, errors.New("placement: a static token needs the Placement endpoint URL"))
	}
	if c.Endpoint != "" {
		if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("placement: endpoint %q is not an http(s) URL", c.Endpoint))
		}
	}
	if k := c.Keystone; k != nil {
		if u, err := url.Parse(k.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("keystone: auth URL %q is not an http(s) URL", k.AuthURL))
		}
		for _, f := range []struct{ name, value string }{{"username", k.Username}, {"password", k.Password}, {"project", k.Project}} {
			if f.value == "" {
				errs = append(errs, fmt.Errorf("keystone: %s is required", f.name))
			}
		}
		switch k.Interface {
		case "", "public", "internal", "admin":
		default:
			errs = append(errs, fmt.Errorf("keystone: interface %q is not public, internal or admin", k.Interface))
		}
	}
	if c.Trait != "" && !traitRE.MatchString(c.Trait) {
		errs = append(errs, fmt.Errorf("placement: trait %q must match %s", c.Trait, traitRE))
	}
	if c.Interval < 0 || c.Coalesce < 0 || c.Poll < 0 {
		errs = append(errs, errors.New("placement: interval, coalesce and poll must not be negative"))
	}
	return errors.Join(errs...)
}

// TraitSync keeps Placement's view of trust equal to trustpool's: the custom
// trait is on the resource provider of every trusted host (provider name =
// the hypervisor host name, as nova-compute names it) and on no other
// provider. Other traits on a provider are never touched.
//
// It applies the store's trait outbox: every level change writes the host's
// trait change in the verdict's own transaction, so a change made while
// Placement is unreachable, or while no sync runs, is applied when one can.
// A change is claimed by one sync at a time (on any replica), applied from
// the host's stored verdict, and removed; a failure is retried with
// backoff. The full reconcile, the safety net for drift (a trait set or
// removed by hand), runs on one replica per Interval: it writes a change for
// every provider whose trait disagrees with the verdict cache, and the
// changes are applied the same way.
type TraitSync struct {
	cfg    TraitSyncConfig // defaults applied
	levels Levels
	outbox Outbox
	log    *slog.Logger
	http   *http.Client
	hold   time.Duration // how long a claim on changes lasts

	mu sync.Mutex                 // guards sc
	sc *gophercloud.ServiceClient // nil until the first successful connect

	kick chan struct{} // capacity 1: wakes Run when changes were written
}

// Outbox is the trait outbox and the job claims the sync needs (package
// store).
type Outbox interface {
	ClaimTraitChanges(ctx context.Context, owner string, now time.Time, hold time.Duration, limit int) ([]store.TraitChange, error)
	TraitApplied(ctx context.Context, owner string, c store.TraitChange) error
	TraitFailed(ctx context.Context, owner string, c store.TraitChange, next time.Time, lastErr string) error
	ReleaseTraitChanges(ctx context.Context, owner string, hosts []string) error
	EnqueueTraitChanges(ctx context.Context, hosts []string, at time.Time) error
	ClaimRun(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error)
	ReleaseRun(ctx context.Context, job, owner string) error
}

// Tuning of the outbox's consumption. Changes are claimed claimBatch at a
// time; a claim lasts at least minHold; a change that fails is retried
// after 1 s, 2 s, 4 s … up to maxRetryWait; outcomes are written within
// markTimeout even while Run stops.
const (
	reconcileJob = "placement-reconcile"
	claimBatch   = 16
	minHold      = 30 * time.Second
	maxRetryWait = time.Minute
	markTimeout  = 5 * time.Second
	maxErrLen    = 512
)

// NewTraitSync checks cfg and returns a TraitSync that applies the changes
// in o and reconciles against the levels l reads. It does no I/O: Keystone
// and Placement are first contacted by Run or Reconcile.
func NewTraitSync(cfg TraitSyncConfig, l Levels, o Outbox) (*TraitSync, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if l == nil || o == nil {
		return nil, errors.New("placement: trait sync needs levels and an outbox")
	}
	if cfg.Trait == "" {
		cfg.Trait = DefaultTrait
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Owner == "" {
		hn, _ := os.Hostname()
		cfg.Owner = fmt.Sprintf("%s-%d", hn, os.Getpid())
	}
	s := &TraitSync{cfg: cfg, levels: l, outbox: o, log: cfg.Logger, http: cfg.HTTPClient, kick: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.http == nil {
		s.http = &http.Client{Timeout: 30 * time.Second}
	}
	timeout := s.http.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	s.hold = max(minHold, 2*timeout)
	return s, nil
}

// Wake tells the sync that trait changes were written. It never blocks;
// Run applies them within Coalesce (plus the Placement round trips).
func (s *TraitSync) Wake() {
	select {
	case s.kick <- struct{}{}:
	default: // Run is already due to look at the outbox
	}
}

// Run makes sure the trait exists, then applies the outbox's changes as
// Wake reports them and every Poll (a retry due, a change another replica
// wrote), and reconciles every provider when it wins the Interval's run of
// the reconcile among the replicas (at once at start, unless another
// replica reconciled within the Interval). Failures are logged and retried
// with backoff. Run returns an error only when Placement (or Keystone)
// rejects the configuration at start (bad credentials, a trait name it
// refuses); it returns nil when ctx ends.
func (s *TraitSync) Run(ctx context.Context) error {
	if err := s.start(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	defer s.stop(ctx)
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	// Ask for the reconcile's run a few times per Interval, so that it runs
	// every Interval to a quarter, whichever replica runs it.
	ask := time.NewTicker(max(s.cfg.Interval/4, time.Millisecond))
	defer ask.Stop()
	backoff := time.Duration(0)
	askNow, reconciling := true, false
	for {
		failed := false
		if askNow && !reconciling {
			var err error
			if reconciling, err = s.outbox.ClaimRun(ctx, reconcileJob, s.cfg.Owner, s.cfg.Now(), s.cfg.Interval); err != nil && ctx.Err() == nil {
				s.log.Error("placement reconcile: ask for the run", "err", err)
			}
		}
		askNow = false
		if reconciling {
			err := s.Reconcile(ctx)
			reconciling = err != nil // this replica's run until it succeeds
			failed = s.logFailure(ctx, "reconcile", err)
		}
		if s.logFailure(ctx, "changes", s.Drain(ctx)) {
			failed = true
		}
		if ctx.Err() != nil {
			return nil
		}
		var retry <-chan time.Time
		if failed && reconciling {
			backoff = min(max(2*backoff, time.Second), s.cfg.Interval)
			retry = time.After(backoff)
		} else if !failed {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ask.C:
			askNow = true
		case <-poll.C:
		case <-retry:
		case <-s.kick:
			// Collect the rest of a burst (a rack rebooting) into one pass.
			t := time.NewTimer(s.cfg.Coalesce)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

// stop gives the reconcile back if this replica ran it last, so that the
// replica (or server) that runs next reconciles at once.
func (s *TraitSync) stop(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if err := s.outbox.ReleaseRun(ctx, reconcileJob, s.cfg.Owner); err != nil {
		s.log.Warn("placement reconcile: give the run back", "err", err)
	}
}

// logFailure logs and counts err of a pass unless it is nil or ctx has
// ended (a shutdown is not a failure), and reports whether it was a failure.
func (s *TraitSync) logFailure(ctx context.Context, pass string, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	msg := "placement trait sync failed"
	if pass == "reconcile" {
		msg = "placement reconcile failed"
	}
	s.log.Error(msg, "err", err)
	if s.cfg.Failed != nil {
		s.cfg.Failed(pass)
	}
	return true
}

// start connects and creates the trait, retrying transient failures until
// ctx ends; a 4xx answer other than 409/429 means a wrong configuration.
func (s *TraitSync) start(ctx context.Context) error {
	backoff := time.Second
	for {
		err := s.ensureTrait(ctx)
		if err == nil {
			return nil
		}
		if permanent(err) {
			return fmt.Errorf("start placement trait sync: %w", err)
		}
		s.log.Warn("placement not ready, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRetryWait)
	}
}

func permanent(err error) bool {
	var code gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &code) {
		return false
	}
	return code.Actual >= 400 && code.Actual < 500 && code.Actual != http.StatusConflict && code.Actual != http.StatusTooManyRequests
}

// Reconcile puts the trait on exactly the providers of trusted hosts: it
// lists every provider and the providers that have the trait, writes a
// trait change for each one whose state differs from its host's level now,
// and applies the outbox's due changes before it returns.
func (s *TraitSync) Reconcile(ctx context.Context) error {
	if err := s.ensureTrait(ctx); err != nil {
		return err
	}
	sc, err := s.client(ctx)
	if err != nil {
		return err
	}
	all, err := listProviders(ctx, sc, resourceproviders.ListOpts{})
	if err != nil {
		return fmt.Errorf("list resource providers: %w", err)
	}
	tagged, err := listProviders(ctx, sc, resourceproviders.ListOpts139{Required: []string{s.cfg.Trait}})
	if err != nil {
		return fmt.Errorf("list resource providers with %s: %w", s.cfg.Trait, err)
	}
	has := make(map[string]bool, len(tagged))
	for _, rp := range tagged {
		has[rp.UUID] = true
	}
	var drift []string
	for _, rp := range all {
		if (s.levels.Level(rp.Name) == verdict.Trusted) != has[rp.UUID] {
			drift = append(drift, rp.Name)
		}
	}
	if len(drift) > 0 {
		s.log.Info("placement reconcile found drift", "providers", len(drift))
		if err := s.outbox.EnqueueTraitChanges(ctx, drift, s.cfg.Now()); err != nil {
			return err
		}
	}
	return s.Drain(ctx)
}

// Drain applies the outbox's due changes, claimBatch at a time, until none
// is due that another sync has not claimed. A change that fails is put off
// with backoff; the failures are returned together.
func (s *TraitSync) Drain(ctx context.Context) error {
	var errs []error
	for ctx.Err() == nil {
		cs, err := s.outbox.ClaimTraitChanges(ctx, s.cfg.Owner, s.cfg.Now(), s.hold, claimBatch)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, s.apply(ctx, cs)...)
		if len(cs) < claimBatch {
			break
		}
	}
	return errors.Join(errs...)
}

// apply applies claimed changes one at a time and records each outcome.
func (s *TraitSync) apply(ctx context.Context, cs []store.TraitChange) []error {
	if len(cs) == 0 {
		return nil
	}
	sc, clientErr := s.client(ctx) // without a client every change fails alike
	var errs []error
	for i, c := range cs {
		err := clientErr
		if err == nil {
			err = s.applyOne(ctx, sc, c)
		}
		switch {
		case err == nil:
			s.finish(ctx, func(ctx context.Context) error { return s.outbox.TraitApplied(ctx, s.cfg.Owner, c) })
			continue
		case ctx.Err() != nil: // stopping: this change and the rest are due again at once
			s.finish(ctx, func(ctx context.Context) error {
				return s.outbox.ReleaseTraitChanges(ctx, s.cfg.Owner, hostsOf(cs[i:]))
			})
			return errs
		}
		next := s.cfg.Now().Add(retryWait(c.Attempts))
		msg := truncate(err.Error())
		s.finish(ctx, func(ctx context.Context) error { return s.outbox.TraitFailed(ctx, s.cfg.Owner, c, next, msg) })
		errs = append(errs, fmt.Errorf("%s (attempt %d, again at %s): %w", c.Host, c.Attempts+1, next.Format(time.RFC3339), err))
	}
	return errs
}

// applyOne makes c.Host's providers carry the trait iff its verdict is
// trusted now. No write outlives the claim: after it another sync may hold
// the change.
func (s *TraitSync) applyOne(ctx context.Context, sc *gophercloud.ServiceClient, c store.TraitChange) error {
	now := s.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, c.ClaimedUntil.Sub(now)-time.Second)
	defer cancel()
	return s.syncHost(ctx, sc, c.Host, c.Trusted(now))
}

// finish writes an outcome, even while Run stops.
func (s *TraitSync) finish(ctx context.Context, write func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if err := write(ctx); err != nil {
		// The claim lapses and the change is applied again: at least once.
		s.log.Error("placement trait sync: record outcome", "err", err)
	}
}

func hostsOf(cs []store.TraitChange) []string {
	hs := make([]string, len(cs))
	for i, c := range cs {
		hs[i] = c.Host
	}
	return hs
}

// retryWait is the wait after a change has failed attempts times before:
// 1 s, 2 s, 4 s … up to maxRetryWait.
func retryWait(attempts int) time.Duration {
	if attempts >= 6 {
		return maxRetryWait
	}
	return min(time.Second<<attempts, maxRetryWait)
}

// truncate bounds an error kept in the outbox: Placement's answers are not
// ours to size.
func truncate(s string) string {
	if len(s) <= maxErrLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrLen], "") + "…"
}

// syncHost finds the provider named host and syncs it. A host without a
// provider (not a Nova compute node, or not registered yet) has nothing to
// mark; the periodic reconcile marks its provider once it exists.
func (s *TraitSync) syncHost(ctx context.Context, sc *gophercloud.ServiceClient, host string, want bool) error {
	rps, err := listProviders(ctx, sc, resourceproviders.ListOpts{Name: host})
	if err != nil {
		return fmt.Errorf("find resource provider of %s: %w", host, err)
	}
	if len(rps) == 0 {
		s.log.Debug("no resource provider for host", "host", host)
	}
	for _, rp := range rps {
		if err := s.syncProvider(ctx, sc, rp, want); err != nil {
			return err
		}
	}
	return nil
}

// syncProvider adds or removes the trait on one provider with Placement's
// optimistic concurrency: read traits and generation, write them back with
// the trait changed; on 409 (the provider changed in between) read again.
func (s *TraitSync) syncProvider(ctx context.Context, sc *gophercloud.ServiceClient, rp resourceproviders.ResourceProvider, want bool) error {
	for attempt := 1; ; attempt++ {
		cur, err := resourceproviders.GetTraits(ctx, sc, rp.UUID).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return nil // deleted meanwhile: nothing left to mark
		}
		if err != nil {
			return fmt.Errorf("read traits of resource provider %s (%s): %w", rp.Name, rp.UUID, err)
		}
		if slices.Contains(cur.Traits, s.cfg.Trait) == want {
			return nil
		}
		next := make([]string, 0, len(cur.Traits)+1)
		for _, t := range cur.Traits {
			if t != s.cfg.Trait {
				next = append(next, t)
			}
		}
		if want {
			next = append(next, s.cfg.Trait)
		}
		_, err = resourceproviders.UpdateTraits(ctx, sc, rp.UUID, resourceproviders.UpdateTraitsOpts{
			ResourceProviderGeneration: cur.ResourceProviderGeneration,
			Traits:                     next,
		}).Extract()
		switch {
		case err == nil:
			s.log.Info("placement trait updated", "host", rp.Name, "provider", rp.UUID, "trait", s.cfg.Trait, "set", want)
			return nil
		case !gophercloud.ResponseCodeIs(err, http.StatusConflict):
			return fmt.Errorf("write traits of resource provider %s (%s): %w", rp.Name, rp.UUID, err)
		case attempt == maxConflictAttempts:
			return fmt.Errorf("write traits of resource provider %s (%s): generation still conflicting after %d attempts: %w", rp.Name, rp.UUID, attempt, err)
		}
	}
}

// ensureTrait creates the custom trait; Placement answers 204 when it exists.
func (s *TraitSync) ensureTrait(ctx context.Context) error {
	sc, err := s.client(ctx)
	if err != nil {
		return err
	}
	if err := traits.Create(ctx, sc, s.cfg.Trait).ExtractErr(); err != nil {
		return fmt.Errorf("create trait %s: %w", s.cfg.Trait, err)
	}
	return nil
}

func listProviders(ctx context.Context, sc *gophercloud.ServiceClient, opts resourceproviders.ListOptsBuilder) ([]resourceproviders.ResourceProvider, error) {
	var rps []resourceproviders.ResourceProvider
	err := resourceproviders.List(sc, opts).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		page, err := resourceproviders.ExtractResourceProviders(p)
		rps = append(rps, page...)
		return true, err
	})
	return rps, err
}

// client returns the Placement client, connecting (and, with Keystone,
// authenticating) on first use. gophercloud re-authenticates by itself when
// the Keystone token expires.
func (s *TraitSync) client(ctx context.Context) (*gophercloud.ServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sc != nil {
		return s.sc, nil
	}
	var pc *gophercloud.ProviderClient
	if k := s.cfg.Keystone; k != nil {
		var err error
		if pc, err = openstack.NewClient(k.AuthURL); err != nil {
			return nil, fmt.Errorf("keystone client for %s: %w", k.AuthURL, err)
		}
		pc.HTTPClient = *s.http
		pc.UserAgent.Prepend("trustpool")
		opts := gophercloud.AuthOptions{
			IdentityEndpoint: k.AuthURL,
			Username:         k.Username,
			Password:         k.Password,
			DomainName:       cmp.Or(k.UserDomain, "Default"),
			AllowReauth:      true,
			Scope:            &gophercloud.AuthScope{ProjectName: k.Project, DomainName: cmp.Or(k.ProjectDomain, "Default")},
		}
		if err := openstack.Authenticate(ctx, pc, opts); err != nil {
			return nil, fmt.Errorf("keystone authentication as %s at %s: %w", k.Username, k.AuthURL, err)
		}
	} else {
		pc = &gophercloud.ProviderClient{HTTPClient: *s.http}
		pc.UseTokenLock()
		pc.SetToken(s.cfg.Token)
		pc.UserAgent.Prepend("trustpool")
	}
	var sc *gophercloud.ServiceClient
	if s.cfg.Endpoint != "" {
		sc = &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: gophercloud.NormalizeURL(s.cfg.Endpoint), Type: "placement"}
	} else {
		var err error
		eo := gophercloud.EndpointOpts{Region: s.cfg.Keystone.Region, Availability: gophercloud.Availability(cmp.Or(s.cfg.Keystone.Interface, "public"))}
		if sc, err = openstack.NewPlacementV1(pc, eo); err != nil {
			return nil, fmt.Errorf("find placement in the keystone catalog: %w", err)
		}
	}
	sc.Microversion = placementMicroversion
	s.sc = sc
	return sc, nil
}
