// Package placementtest runs a private OpenStack Placement service for
// integration tests: Debian's placement-api (python3-placement) on 127.0.0.1,
// with a SQLite database in the test's temporary directory and noauth2, so no
// Keystone is needed. The service is stopped when the test ends.
//
// When placement-api or placement-manage is missing the test is skipped,
// unless the environment has CI=true: then it fails, so CI cannot pass by
// skipping what it must run.
package placementtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Microversion is the Placement microversion the helpers speak: the newest of
// Debian 12's placement-api 8.0.0.
const Microversion = "1.39"

// Server is one running Placement service.
type Server struct {
	// URL is the service's base URL, ending in a slash.
	URL string
	// Token is noauth2's admin token, sent as X-Auth-Token.
	Token string
	// Client talks to the service directly (no proxy).
	Client *http.Client
}

// Start runs a fresh Placement service for t and returns once it answers.
func Start(t testing.TB) *Server {
	t.Helper()
	var bins [2]string
	for i, name := range []string{"placement-api", "placement-manage"} {
		path, err := exec.LookPath(name)
		if err != nil {
			msg := fmt.Sprintf("%s not found (Debian: apt-get install placement-api python3-placement): %v", name, err)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		bins[i] = path
	}
	dir := t.TempDir()
	conf := fmt.Sprintf("[placement_database]\nconnection = sqlite:///%s\n\n[api]\nauth_strategy = noauth2\n",
		filepath.Join(dir, "placement.db"))
	if err := os.WriteFile(filepath.Join(dir, "placement.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "OS_PLACEMENT_CONFIG_DIR="+dir)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sync := exec.CommandContext(ctx, bins[1], "--config-file", filepath.Join(dir, "placement.conf"), "db", "sync")
	sync.Env, sync.Dir = env, dir
	if out, err := sync.CombinedOutput(); err != nil {
		t.Fatalf("placement-manage db sync: %v\n%s", err, out)
	}

	s := &Server{Token: "admin", Client: &http.Client{
		Transport: &http.Transport{Proxy: nil},
		Timeout:   30 * time.Second,
	}}
	// A free port can be taken by someone else between our probe and the
	// service's bind; try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.URL = "http://127.0.0.1:" + strconv.Itoa(port) + "/"
		if lastErr = s.run(t, bins[0], port, env, dir); lastErr == nil {
			return s
		}
	}
	t.Fatalf("start placement-api: %v", lastErr)
	return nil
}

// run starts placement-api on port and waits until it answers GET /.
func (s *Server) run(t testing.TB, bin string, port int, env []string, dir string) error {
	logPath := filepath.Join(dir, fmt.Sprintf("placement-api-%d.log", port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--host", "127.0.0.1")
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := s.Client.Get(s.URL)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("placement-api exited (%v):\n%s", err, tail(logPath))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("placement-api did not answer on %s within 60 s:\n%s", s.URL, tail(logPath))
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("placement-api log:\n%s", tail(logPath))
		}
	})
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Request sends a JSON request to path (relative to URL, e.g.
// "resource_providers") as noauth2's admin at Microversion, and returns the
// status and body. out, when not nil, receives the decoded body of a 2xx.
func (s *Server) Request(t testing.TB, method, path string, body, out any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+strings.TrimPrefix(path, "/"), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", s.Token)
	req.Header.Set("OpenStack-API-Version", "placement "+Microversion)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	if out != nil && res.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return res.StatusCode, raw
}

// must is Request that fails the test unless the status is want.
func (s *Server) must(t testing.TB, want int, method, path string, body, out any) {
	t.Helper()
	if status, raw := s.Request(t, method, path, body, out); status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, raw)
	}
}

// CreateProvider creates a root resource provider named name, as
// nova-compute does for a compute node, with 8 VCPU and 16 GiB of memory,
// and returns its UUID.
func (s *Server) CreateProvider(t testing.TB, name string) string {
	t.Helper()
	var rp struct {
		UUID       string `json:"uuid"`
		Generation int    `json:"generation"`
	}
	s.must(t, http.StatusOK, http.MethodPost, "resource_providers", map[string]string{"name": name}, &rp)
	s.must(t, http.StatusOK, http.MethodPut, "resource_providers/"+rp.UUID+"/inventories", map[string]any{
		"resource_provider_generation": rp.Generation,
		"inventories": map[string]any{
			"VCPU":      map[string]int{"total": 8},
			"MEMORY_MB": map[string]int{"total": 16384},
		},
	}, nil)
	return rp.UUID
}

// Traits returns a provider's traits (sorted) and generation.
func (s *Server) Traits(t testing.TB, uuid string) ([]string, int) {
	t.Helper()
	var got struct {
		Traits     []string `json:"traits"`
		Generation int      `json:"resource_provider_generation"`
	}
	s.must(t, http.StatusOK, http.MethodGet, "resource_providers/"+uuid+"/traits", nil, &got)
	slices.Sort(got.Traits)
	return got.Traits, got.Generation
}

// SetTraits replaces a provider's traits, as an operator or another service
// would, creating custom traits first; it retries generation conflicts.
func (s *Server) SetTraits(t testing.TB, uuid string, traits ...string) {
	t.Helper()
	for _, tr := range traits {
		if strings.HasPrefix(tr, "CUSTOM_") {
			if status, raw := s.Request(t, http.MethodPut, "traits/"+tr, nil, nil); status != http.StatusCreated && status != http.StatusNoContent {
				t.Fatalf("create trait %s: status %d: %s", tr, status, raw)
			}
		}
	}
	for range 5 {
		_, gen := s.Traits(t, uuid)
		status, raw := s.Request(t, http.MethodPut, "resource_providers/"+uuid+"/traits",
			map[string]any{"resource_provider_generation": gen, "traits": append([]string{}, traits...)}, nil)
		if status == http.StatusOK {
			return
		}
		if status != http.StatusConflict {
			t.Fatalf("set traits of %s: status %d: %s", uuid, status, raw)
		}
	}
	t.Fatalf("set traits of %s: generation kept conflicting", uuid)
}

// Candidates returns the UUIDs (sorted) of the providers that
// GET /allocation_candidates?{query} offers, e.g.
// "resources=VCPU:1&required=CUSTOM_TRUSTED_HOST".
func (s *Server) Candidates(t testing.TB, query string) []string {
	t.Helper()
	var got struct {
		Summaries map[string]json.RawMessage `json:"provider_summaries"`
	}
	s.must(t, http.StatusOK, http.MethodGet, "allocation_candidates?"+query, nil, &got)
	uuids := make([]string, 0, len(got.Summaries))
	for u := range got.Summaries {
		uuids = append(uuids, u)
	}
	slices.Sort(uuids)
	return uuids
}

// Wire is an http.RoundTripper to put between Placement's clients and the
// service: it counts the trait writes Placement accepted, the look-ups of
// a provider by name and the full listings of providers (a reconcile lists
// every provider once), and cuts the service off while Down is set.
type Wire struct {
	next http.RoundTripper
	// Down, while set, fails every request before it leaves, as an
	// unreachable Placement does.
	Down atomic.Bool

	mu       sync.Mutex     // guards writes, lookups and the listings
	writes   map[string]int // provider UUID → accepted trait writes
	lookups  map[string]int // name → GET /resource_providers?name=
	listings int            // GET /resource_providers with no filter
	required int            // GET /resource_providers?required=: a reconcile's second listing
}

// NewWire returns a Wire in front of next (the server's Client.Transport).
func NewWire(next http.RoundTripper) *Wire {
	return &Wire{next: next, writes: map[string]int{}, lookups: map[string]int{}}
}

// RoundTrip implements http.RoundTripper.
func (w *Wire) RoundTrip(req *http.Request) (*http.Response, error) {
	if w.Down.Load() {
		return nil, errors.New("placement unreachable (cut off by the test)")
	}
	res, err := w.next.RoundTrip(req)
	if err != nil {
		return res, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	p, q := req.URL.Path, req.URL.Query()
	switch {
	case req.Method == http.MethodPut && strings.HasSuffix(p, "/traits") && res.StatusCode == http.StatusOK:
		w.writes[strings.TrimSuffix(strings.TrimPrefix(p, "/resource_providers/"), "/traits")]++
	case req.Method == http.MethodGet && p == "/resource_providers" && q.Has("name"):
		w.lookups[q.Get("name")]++
	case req.Method == http.MethodGet && p == "/resource_providers" && len(q) == 0:
		w.listings++
	case req.Method == http.MethodGet && p == "/resource_providers" && q.Has("required"):
		w.required++
	}
	return res, err
}

// Counts returns the trait writes by provider UUID, the look-ups by name
// and the full listings so far.
func (w *Wire) Counts() (writes, lookups map[string]int, listings int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.writes), maps.Clone(w.lookups), w.listings
}

// TraitListings is how many listings of the providers with a required
// trait were answered: a reconcile's second and last look at Placement,
// after which it decides from the levels alone.
func (w *Wire) TraitListings() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.required
}
