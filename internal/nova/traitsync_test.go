package nova

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/nova/placementtest"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// hostStore is the store a sync reads, in a temporary SQLite file: hosts
// whose verdicts are recorded as the recorder records them (a level change
// writes the host's trait change in the verdict's transaction). It is also
// the sync's Levels, kept in memory beside the store as the verdict cache
// is.
type hostStore struct {
	t  testing.TB
	st *store.Store

	mu     sync.Mutex // guards levels
	levels map[string]verdict.Verdict
}

func newHostStore(t testing.TB, levels map[string]verdict.Level) *hostStore {
	return openHostStore(t, "sqlite:"+filepath.Join(t.TempDir(), "trustpool.db"), levels)
}

// openHostStore is newHostStore on the database dsn names.
func openHostStore(t testing.TB, dsn string, levels map[string]verdict.Level) *hostStore {
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &hostStore{t: t, st: st, levels: map[string]verdict.Verdict{}}
	for _, h := range slices.Sorted(maps.Keys(levels)) {
		f.set(h, levels[h])
	}
	return f
}

// withTrait is the recorder's consequences with Placement configured.
func withTrait(v verdict.Verdict, _ verdict.Level) store.Transition {
	return store.Transition{Trait: &store.TraitChange{Host: v.Host, CreatedAt: v.VTime}}
}

// set records a verdict of level for host (valid for an hour), creating
// the host first.
func (f *hostStore) set(host string, level verdict.Level) {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.st.GetHost(ctx, host); errors.Is(err, store.ErrNotFound) {
		now := store.Truncate(time.Now())
		err = f.st.PutHost(ctx, store.Host{Name: host, State: store.HostActive, EKPublic: []byte("ek-" + host),
			AKPublic: []byte("ak-" + host), AKName: []byte("n-" + host), Mode: store.ModePull, Policy: "default",
			CreatedAt: now, UpdatedAt: now})
		if err != nil {
			f.t.Fatal(err)
		}
	}
	seq, err := f.st.NextSeq(ctx, host)
	if err != nil {
		f.t.Fatal(err)
	}
	now := store.Truncate(time.Now())
	v := verdict.Verdict{Host: host, Level: level, VTime: now, Expiry: now.Add(time.Hour), Seq: seq}
	if _, err := f.st.RecordVerdicts(ctx, []store.Record{{Verdict: v}}, withTrait); err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.levels[host] = v
	f.mu.Unlock()
}

func (f *hostStore) Level(host string) verdict.Level {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.levels[host].At(time.Now())
}

// newSync is NewTraitSync over f, failing the test on error.
func newSync(t testing.TB, cfg TraitSyncConfig, f *hostStore) *TraitSync {
	t.Helper()
	s, err := NewTraitSync(cfg, f, f.st)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testLogger writes the sync's log into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// runSync runs s.Run until the test ends and checks that it stopped cleanly.
func runSync(t *testing.T, s *TraitSync) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		<-tick.C
	}
}

// hostStore creates one provider per name and returns name → UUID.
func providers(t *testing.T, p *placementtest.Server, names ...string) map[string]string {
	uuids := make(map[string]string, len(names))
	for _, n := range names {
		uuids[n] = p.CreateProvider(t, n)
	}
	return uuids
}

// trustedCandidates returns the names, among uuids, of the providers that
// Placement offers to a flavor with trait:CUSTOM_TRUSTED_HOST=required.
func trustedCandidates(t *testing.T, p *placementtest.Server, uuids map[string]string) []string {
	offered := p.Candidates(t, "resources=VCPU:1&required="+DefaultTrait)
	var names []string
	for name, u := range uuids {
		if slices.Contains(offered, u) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func candidatesAre(t *testing.T, p *placementtest.Server, uuids map[string]string, want ...string) func() bool {
	return func() bool { return slices.Equal(trustedCandidates(t, p, uuids), want) }
}

func TestTraitSyncAgainstPlacement(t *testing.T) {
	p := placementtest.Start(t)
	cfg := func(t *testing.T) TraitSyncConfig {
		return TraitSyncConfig{Endpoint: p.URL, Token: p.Token, HTTPClient: p.Client, Interval: time.Hour, Coalesce: 10 * time.Millisecond, Logger: testLogger(t)}
	}

	t.Run("start, changes, explicit Reconcile", func(t *testing.T) {
		rp := providers(t, p, "a1", "a2", "a3", "a4")
		// Other traits must survive every change of ours; a3 was marked by
		// hand although it is untrusted.
		p.SetTraits(t, rp["a1"], "HW_CPU_X86_AVX2", "CUSTOM_RACK_A")
		p.SetTraits(t, rp["a3"], "CUSTOM_RACK_B", DefaultTrait)
		levels := newHostStore(t, map[string]verdict.Level{"a1": verdict.Trusted, "a2": verdict.Trusted, "a3": verdict.Untrusted, "ghost": verdict.Trusted})
		s := newSync(t, cfg(t), levels)
		runSync(t, s)
		waitFor(t, "the start reconcile to mark a1, a2 only", candidatesAre(t, p, rp, "a1", "a2"))
		if got, _ := p.Traits(t, rp["a1"]); !slices.Equal(got, []string{"CUSTOM_RACK_A", DefaultTrait, "HW_CPU_X86_AVX2"}) {
			t.Errorf("a1 traits = %q", got)
		}
		if got, _ := p.Traits(t, rp["a3"]); !slices.Equal(got, []string{"CUSTOM_RACK_B"}) {
			t.Errorf("a3 traits = %q", got)
		}

		steps := []struct {
			host  string
			level verdict.Level
			want  []string
		}{
			{"a2", verdict.Untrusted, []string{"a1"}},
			{"a3", verdict.Trusted, []string{"a1", "a3"}},
			{"a1", verdict.Unknown, []string{"a3"}}, // verdict expired
			{"a4", verdict.Trusted, []string{"a3", "a4"}},
			{"ghost", verdict.Untrusted, []string{"a3", "a4"}}, // no provider: nothing to do
			{"a1", verdict.Trusted, []string{"a1", "a3", "a4"}},
		}
		for _, st := range steps {
			levels.set(st.host, st.level)
			s.Wake()
			waitFor(t, st.host+" "+string(st.level)+" to show in Placement", candidatesAre(t, p, rp, st.want...))
		}
		if got, _ := p.Traits(t, rp["a1"]); !slices.Equal(got, []string{"CUSTOM_RACK_A", DefaultTrait, "HW_CPU_X86_AVX2"}) {
			t.Errorf("a1 traits after the changes = %q", got)
		}

		// Drift by hand: the trait removed from trusted a1, added to
		// untrusted a2. No change is written for that: an explicit
		// Reconcile finds both and repairs them (Run, whose next reconcile
		// is an hour away, may be the one that applies the repair).
		p.SetTraits(t, rp["a1"], "CUSTOM_RACK_A")
		p.SetTraits(t, rp["a2"], DefaultTrait, "CUSTOM_RACK_A")
		if err := s.Reconcile(context.Background()); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		waitFor(t, "the reconcile's repair of a1 and a2", candidatesAre(t, p, rp, "a1", "a3", "a4"))
		if got, _ := p.Traits(t, rp["a2"]); !slices.Equal(got, []string{"CUSTOM_RACK_A"}) {
			t.Errorf("a2 traits = %q", got)
		}
	})

	t.Run("periodic reconcile repairs drift", func(t *testing.T) {
		rp := providers(t, p, "b1", "b2")
		levels := newHostStore(t, map[string]verdict.Level{"b1": verdict.Trusted, "b2": verdict.Untrusted})
		c := cfg(t)
		c.Interval = 100 * time.Millisecond
		s := newSync(t, c, levels)
		runSync(t, s)
		waitFor(t, "b1 marked", candidatesAre(t, p, rp, "b1"))
		// Each repair below can only come from a periodic pass: nothing
		// calls Changed or Reconcile, and the start pass is over.
		for range 2 {
			p.SetTraits(t, rp["b1"])
			p.SetTraits(t, rp["b2"], DefaultTrait)
			waitFor(t, "the periodic reconcile to repair b1 and b2", candidatesAre(t, p, rp, "b1"))
		}
	})

	t.Run("409 generation conflict is re-read and retried", func(t *testing.T) {
		rp := providers(t, p, "c1")
		p.SetTraits(t, rp["c1"], "HW_CPU_X86_AVX2")
		levels := newHostStore(t, map[string]verdict.Level{"c1": verdict.Trusted})
		rt := &interferer{t: t, p: p, uuid: rp["c1"], remaining: 1, next: p.Client.Transport}
		c := cfg(t)
		c.HTTPClient = &http.Client{Transport: rt}
		s := newSync(t, c, levels)
		if err := s.Reconcile(context.Background()); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		if rt.conflicts != 1 {
			t.Errorf("saw %d conflicts, want 1", rt.conflicts)
		}
		// The other writer's change and the original traits are preserved.
		if got, _ := p.Traits(t, rp["c1"]); !slices.Equal(got, []string{"CUSTOM_OTHER_WRITER", DefaultTrait, "HW_CPU_X86_AVX2"}) {
			t.Errorf("c1 traits = %q", got)
		}
	})

	t.Run("409 retries are bounded", func(t *testing.T) {
		rp := providers(t, p, "d1")
		levels := newHostStore(t, map[string]verdict.Level{"d1": verdict.Trusted})
		rt := &interferer{t: t, p: p, uuid: rp["d1"], remaining: 100, next: p.Client.Transport}
		c := cfg(t)
		c.HTTPClient = &http.Client{Transport: rt}
		s := newSync(t, c, levels)
		err := s.Reconcile(context.Background())
		if err == nil || !strings.Contains(err.Error(), "still conflicting after 5 attempts") {
			t.Fatalf("Reconcile = %v, want a bounded-conflict error", err)
		}
		if rt.conflicts != maxConflictAttempts {
			t.Errorf("saw %d conflicts, want %d", rt.conflicts, maxConflictAttempts)
		}
		if got, _ := p.Traits(t, rp["d1"]); slices.Contains(got, DefaultTrait) {
			t.Errorf("d1 traits = %q after failing", got)
		}
	})

	t.Run("custom trait name", func(t *testing.T) {
		rp := providers(t, p, "e1", "e2")
		c := cfg(t)
		c.Trait = "CUSTOM_ISECL_TRUSTED"
		s := newSync(t, c, newHostStore(t, map[string]verdict.Level{"e1": verdict.Trusted}))
		if err := s.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		offered := p.Candidates(t, "resources=VCPU:1&required=CUSTOM_ISECL_TRUSTED")
		if !slices.Contains(offered, rp["e1"]) || slices.Contains(offered, rp["e2"]) {
			t.Errorf("candidates with CUSTOM_ISECL_TRUSTED = %q, want e1 (%s) and not e2", offered, rp["e1"])
		}
	})

	t.Run("forbidden trait selects the other hosts", func(t *testing.T) {
		rp := providers(t, p, "f1", "f2")
		s := newSync(t, cfg(t), newHostStore(t, map[string]verdict.Level{"f1": verdict.Trusted, "f2": verdict.Untrusted}))
		if err := s.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		offered := p.Candidates(t, "resources=VCPU:1&required=!"+DefaultTrait)
		if slices.Contains(offered, rp["f1"]) || !slices.Contains(offered, rp["f2"]) {
			t.Errorf("candidates forbidding %s = %q, want f2 (%s) and not f1", DefaultTrait, offered, rp["f2"])
		}
	})

	t.Run("rejected token fails Run at start", func(t *testing.T) {
		c := cfg(t)
		c.Token = "someone:project" // noauth2: a non-admin user, refused by policy
		s := newSync(t, c, newHostStore(t, nil))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := s.Run(ctx)
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("Run = %v, want a 403 error before the deadline", err)
		}
	})

	t.Run("Keystone password auth and catalog", func(t *testing.T) {
		ks := fakeKeystone(t, p.URL)
		rp := providers(t, p, "g1")
		c := TraitSyncConfig{
			Keystone: &KeystoneAuth{AuthURL: ks.URL + "/v3", Username: "trustpool", Password: "pw", Project: "service", Region: "RegionOne", Interface: "internal"},
			Interval: time.Hour, Logger: testLogger(t),
		}
		s := newSync(t, c, newHostStore(t, map[string]verdict.Level{"g1": verdict.Trusted}))
		if err := s.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := trustedCandidates(t, p, rp); !slices.Equal(got, []string{"g1"}) {
			t.Errorf("trusted candidates %q, want g1", got)
		}
		c.Keystone.Password = "wrong"
		s = newSync(t, c, newHostStore(t, nil))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "keystone authentication") {
			t.Fatalf("Run with a wrong password = %v, want a keystone authentication error", err)
		}
	})
}

// interferer is a RoundTripper that plays another writer: before each of
// the first `remaining` trait writes to one provider, it changes that
// provider's traits itself, so the write carries a stale generation.
type interferer struct {
	t         *testing.T
	p         *placementtest.Server
	uuid      string
	next      http.RoundTripper
	remaining int
	conflicts int // 409 answers seen
}

func (i *interferer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.URL.Path == "/resource_providers/"+i.uuid+"/traits" && i.remaining > 0 {
		i.remaining--
		traits, _ := i.p.Traits(i.t, i.uuid)
		if !slices.Contains(traits, "CUSTOM_OTHER_WRITER") {
			traits = append(traits, "CUSTOM_OTHER_WRITER")
		} else {
			traits = slices.DeleteFunc(traits, func(s string) bool { return s == "CUSTOM_OTHER_WRITER" })
		}
		i.p.SetTraits(i.t, i.uuid, traits...)
	}
	res, err := i.next.RoundTrip(req)
	if err == nil && res.StatusCode == http.StatusConflict {
		i.conflicts++
	}
	return res, err
}

// fakeKeystone answers Keystone v3 password authentication for
// trustpool/pw in project service (domain Default) with noauth2's admin
// token and a catalog whose internal placement endpoint is placementURL.
// Keystone itself is not packaged for this test environment; Placement is
// real.
func fakeKeystone(t *testing.T, placementURL string) *httptest.Server {
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v3/auth/tokens" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Auth struct {
				Identity struct {
					Methods  []string `json:"methods"`
					Password struct {
						User struct {
							Name     string `json:"name"`
							Password string `json:"password"`
							Domain   struct {
								Name string `json:"name"`
							} `json:"domain"`
						} `json:"user"`
					} `json:"password"`
				} `json:"identity"`
				Scope struct {
					Project struct {
						Name   string `json:"name"`
						Domain struct {
							Name string `json:"name"`
						} `json:"domain"`
					} `json:"project"`
				} `json:"scope"`
			} `json:"auth"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, scope := req.Auth.Identity, req.Auth.Scope.Project
		if !slices.Equal(id.Methods, []string{"password"}) || id.Password.User.Name != "trustpool" || id.Password.User.Password != "pw" ||
			id.Password.User.Domain.Name != "Default" || scope.Name != "service" || scope.Domain.Name != "Default" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":401,"title":"Unauthorized","message":"The request you have made requires authentication."}}`))
			return
		}
		w.Header().Set("X-Subject-Token", "admin")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"methods":    []string{"password"},
			"catalog": []map[string]any{{
				"type": "placement", "name": "placement", "id": "p",
				"endpoints": []map[string]any{
					{"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": "http://127.0.0.1:9/", "id": "e1"},
					{"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": placementURL, "id": "e2"},
				},
			}},
		}})
	}))
	t.Cleanup(ks.Close)
	return ks
}

func TestTraitSyncConfigValidate(t *testing.T) {
	ks := &KeystoneAuth{AuthURL: "https://keystone.example:5000/v3", Username: "u", Password: "p", Project: "service"}
	tests := []struct {
		name string
		cfg  TraitSyncConfig
		errs []string // substrings the error must contain; none means valid
	}{
		{"token", TraitSyncConfig{Endpoint: "http://127.0.0.1:8778/", Token: "admin"}, nil},
		{"keystone from catalog", TraitSyncConfig{Keystone: ks}, nil},
		{"keystone with endpoint", TraitSyncConfig{Keystone: ks, Endpoint: "https://placement.example/"}, nil},
		{"no credentials", TraitSyncConfig{Endpoint: "http://x/"}, []string{"token or Keystone"}},
		{"both credentials", TraitSyncConfig{Endpoint: "http://x/", Token: "t", Keystone: ks}, []string{"not both"}},
		{"token without endpoint", TraitSyncConfig{Token: "admin"}, []string{"needs the Placement endpoint"}},
		{"bad endpoint", TraitSyncConfig{Endpoint: "placement:8778", Token: "admin"}, []string{"not an http(s) URL"}},
		{"keystone incomplete", TraitSyncConfig{Keystone: &KeystoneAuth{AuthURL: "keystone", Interface: "private"}},
			[]string{"auth URL", "username is required", "password is required", "project is required", "interface"}},
		{"lower-case trait", TraitSyncConfig{Endpoint: "http://x/", Token: "t", Trait: "CUSTOM_trusted"}, []string{"must match"}},
		{"standard trait", TraitSyncConfig{Endpoint: "http://x/", Token: "t", Trait: "HW_CPU_X86_AVX2"}, []string{"must match"}},
		{"negative interval", TraitSyncConfig{Endpoint: "http://x/", Token: "t", Interval: -1}, []string{"negative"}},
		{"negative poll", TraitSyncConfig{Endpoint: "http://x/", Token: "t", Poll: -1}, []string{"negative"}},
	}
	f := newHostStore(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				if _, err := NewTraitSync(tt.cfg, f, f.st); err != nil {
					t.Fatalf("NewTraitSync = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors %q", tt.errs)
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate = %v, missing %q", err, want)
				}
			}
			if _, err := NewTraitSync(tt.cfg, f, f.st); err == nil {
				t.Error("NewTraitSync accepted an invalid config")
			}
		})
	}
}
