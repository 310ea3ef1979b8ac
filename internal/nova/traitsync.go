package nova

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/resourceproviders"
	"github.com/gophercloud/gophercloud/v2/openstack/placement/v1/traits"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"trustpool/internal/verdict"
)

// Defaults for TraitSyncConfig.
const (
	DefaultTrait    = "CUSTOM_TRUSTED_HOST"
	DefaultInterval = 5 * time.Minute
	DefaultCoalesce = 100 * time.Millisecond
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
	// Coalesce is how long Changed calls are collected before they are
	// synced together; default 100 ms.
	Coalesce time.Duration
	// HTTPClient is used for Placement and Keystone; default: one with a 30 s
	// timeout, so a hung Placement never stalls the sync for good.
	HTTPClient *http.Client
	// Logger receives what the sync did and what failed; default: discarded.
	Logger *slog.Logger
	// Failed, when set, is told of every failed pass: "reconcile" (every
	// provider) or "changes" (the hosts Changed named).
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
	if c.Interval < 0 || c.Coalesce < 0 {
		errs = append(errs, errors.New("placement: interval and coalesce must not be negative"))
	}
	return errors.Join(errs...)
}

// TraitSync keeps Placement's view of trust equal to trustpool's: the custom
// trait is on the resource provider of every trusted host (provider name =
// the hypervisor host name, as nova-compute names it) and on no other
// provider. Other traits on a provider are never touched.
type TraitSync struct {
	cfg    TraitSyncConfig // defaults applied
	levels Levels
	log    *slog.Logger
	http   *http.Client

	mu sync.Mutex                 // guards sc
	sc *gophercloud.ServiceClient // nil until the first successful connect

	pmu     sync.Mutex          // guards pending
	pending map[string]struct{} // hosts whose level changed since the last sync
	kick    chan struct{}       // capacity 1: wakes Run when pending grows
}

// NewTraitSync checks cfg and returns a TraitSync reading levels from l. It
// does no I/O: Keystone and Placement are first contacted by Run or Reconcile.
func NewTraitSync(cfg TraitSyncConfig, l Levels) (*TraitSync, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
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
	s := &TraitSync{cfg: cfg, levels: l, log: cfg.Logger, http: cfg.HTTPClient,
		pending: make(map[string]struct{}), kick: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.http == nil {
		s.http = &http.Client{Timeout: 30 * time.Second}
	}
	return s, nil
}

// Changed tells the sync that host's level may have changed. It never blocks;
// Run syncs the host within Coalesce (plus the Placement round trips).
func (s *TraitSync) Changed(host string) {
	s.pmu.Lock()
	s.pending[host] = struct{}{}
	s.pmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // Run is already due to look at pending
	}
}

// Run makes sure the trait exists, reconciles every provider, then syncs
// changed hosts as Changed reports them and reconciles everything again every
// Interval. Failures are logged and retried with backoff. Run returns an
// error only when Placement (or Keystone) rejects the configuration at start
// (bad credentials, a trait name it refuses); it returns nil when ctx ends.
func (s *TraitSync) Run(ctx context.Context) error {
	if err := s.start(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	backoff := time.Duration(0)
	fullDue := true
	for {
		failed := false
		if fullDue {
			err := s.Reconcile(ctx)
			fullDue = err != nil
			failed = s.logFailure(ctx, "reconcile", err)
		}
		if s.logFailure(ctx, "changes", s.syncPending(ctx)) {
			failed = true
		}
		if ctx.Err() != nil {
			return nil
		}
		var retry <-chan time.Time
		if failed {
			backoff = min(max(2*backoff, time.Second), s.cfg.Interval)
			retry = time.After(backoff)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			fullDue = true
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
		backoff = min(2*backoff, s.cfg.Interval)
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
// lists every provider and the providers that have the trait, and fixes each
// one whose state differs from its host's level now.
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
	var errs []error
	for _, rp := range all {
		if s.wanted(rp.Name) == has[rp.UUID] {
			continue
		}
		if err := s.syncProvider(ctx, sc, rp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *TraitSync) wanted(host string) bool { return s.levels.Level(host) == verdict.Trusted }

// syncPending syncs every host reported by Changed; hosts that fail go back
// into the pending set for the next attempt.
func (s *TraitSync) syncPending(ctx context.Context) error {
	s.pmu.Lock()
	hosts := make([]string, 0, len(s.pending))
	for h := range s.pending {
		hosts = append(hosts, h)
	}
	clear(s.pending)
	s.pmu.Unlock()
	if len(hosts) == 0 {
		return nil
	}
	sc, err := s.client(ctx)
	if err != nil {
		s.requeue(hosts...)
		return err
	}
	var errs []error
	for _, host := range hosts {
		if err := s.syncHost(ctx, sc, host); err != nil {
			s.requeue(host)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *TraitSync) requeue(hosts ...string) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, h := range hosts {
		s.pending[h] = struct{}{}
	}
}

// syncHost finds the provider named host and syncs it. A host without a
// provider (not a Nova compute node, or not registered yet) is left to the
// periodic reconcile.
func (s *TraitSync) syncHost(ctx context.Context, sc *gophercloud.ServiceClient, host string) error {
	rps, err := listProviders(ctx, sc, resourceproviders.ListOpts{Name: host})
	if err != nil {
		return fmt.Errorf("find resource provider of %s: %w", host, err)
	}
	if len(rps) == 0 {
		s.log.Debug("no resource provider for host", "host", host)
	}
	for _, rp := range rps {
		if err := s.syncProvider(ctx, sc, rp); err != nil {
			return err
		}
	}
	return nil
}

// syncProvider adds or removes the trait on one provider with Placement's
// optimistic concurrency: read traits and generation, write them back with
// the trait changed; on 409 (the provider changed in between) read again.
// The level is read again on every attempt, so the write uses the newest.
func (s *TraitSync) syncProvider(ctx context.Context, sc *gophercloud.ServiceClient, rp resourceproviders.ResourceProvider) error {
	for attempt := 1; ; attempt++ {
		want := s.wanted(rp.Name)
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
