package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/integrity"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/nova/placementtest"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/store/pgtest"
)

// hookLog is a webhook receiver that keeps every delivery.
type hookLog struct {
	mu  sync.Mutex     // guards got and ids
	got map[string]int // "host @vtime previous→level" → deliveries
	ids map[string]int // X-Trustpool-Delivery → deliveries
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p notify.Payload
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got[fmt.Sprintf("%s @%s %s→%s", p.Host, p.VTime.UTC().Format("2006-01-02T15:04:05.000000Z"), p.Previous, p.TrustLvl)]++
	h.ids[r.Header.Get(notify.HeaderDelivery)]++
}

// transitions returns, for each host, its delivered transitions in the
// order of their vtime, and the keys or IDs delivered more than once.
func (h *hookLog) transitions() (map[string][]string, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	by := map[string][]string{}
	var twice []string
	for _, k := range slices.Sorted(maps.Keys(h.got)) {
		f := strings.Fields(k)
		by[f[0]] = append(by[f[0]], f[2])
		if h.got[k] > 1 {
			twice = append(twice, k)
		}
	}
	for id, n := range h.ids {
		if n > 1 {
			twice = append(twice, "delivery "+id)
		}
	}
	return by, twice
}

// TestReplicasApplyOutboxOnce runs three servers on one real PostgreSQL
// database with one real Placement and one webhook receiver: every level
// change, whichever replica records it (attestation, re-evaluation after a
// golden import, expiry), is delivered to the receiver once and written to
// Placement once, also when Placement was unreachable at the time; the
// trait goes at expiry; and the reconcile at start ran on one replica.
func TestReplicasApplyOutboxOnce(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)
	pl := placementtest.Start(t)
	const nodes = 4
	w := placementtest.NewWire(pl.Client.Transport)
	hooks := &hookLog{got: map[string]int{}, ids: map[string]int{}}
	receiver := httptest.NewServer(hooks)
	t.Cleanup(receiver.Close)

	// Validity is short and the interval long: nothing re-attests on its
	// own, so the trusted verdicts expire.
	const validity = 20 * time.Second
	first := t.TempDir()
	var rs []*env
	for i, name := range []string{"a", "b", "c"} {
		dir := first
		if i > 0 {
			dir = shareCredentials(t, first)
		}
		rs = append(rs, startServerIn(t, dir, func(c *server.Config) {
			c.DSN, c.Replica, c.LeaseTime = dsn, name, 3*time.Second
			c.Integrity = integrity.Config{Interval: time.Hour, Validity: validity, Log: c.Log}
			c.Placement = &nova.TraitSyncConfig{Endpoint: pl.URL, Token: pl.Token, Interval: time.Hour,
				HTTPClient: &http.Client{Transport: w, Timeout: 10 * time.Second}, Poll: 100 * time.Millisecond}
			c.Webhooks = &notify.Config{Targets: []string{receiver.URL}, Poll: 100 * time.Millisecond}
		}))
	}
	a := rs[0]
	fl := newFleet(t, a.srv.URL(), a.srv.CAPEM(), api.NewClient(a.srv.URL(), a.srv.CAPEM(), a.token), nodes)
	rp := map[string]string{}
	gen0 := map[string]int{}
	var hosts []string
	for _, nd := range fl.Nodes() {
		rp[nd.Name] = pl.CreateProvider(t, nd.Name)
		_, gen0[nd.Name] = pl.Traits(t, rp[nd.Name])
		hosts = append(hosts, nd.Name)
	}
	if n, err := fl.Enroll(t.Context()); err != nil || n != nodes {
		t.Fatalf("enrolled %d of %d: %v", n, nodes, err)
	}

	st, err := store.Open(t.Context(), dsn) // the test's own look at the outboxes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	applied := func() bool {
		d, err := st.OutboxDepth(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return d == store.Depth{}
	}
	query := "resources=VCPU:1&required=" + nova.DefaultTrait
	candidates := func(want ...string) func() bool {
		uuids := providers(rp, want...)
		return func() bool { return slices.Equal(pl.Candidates(t, query), uuids) }
	}
	check := func(what string, levels []string, writes int) {
		t.Helper()
		waitFor(t, "every outbox row applied: "+what, applied)
		by, twice := hooks.transitions()
		if len(twice) > 0 {
			t.Errorf("%s: delivered more than once: %q", what, twice)
		}
		puts, _, _ := w.Counts()
		for _, h := range hosts {
			if got := by[h]; !slices.Equal(got, levels) {
				t.Errorf("%s: %s's webhooks %q, want %q", what, h, got, levels)
			}
			if puts[rp[h]] != writes {
				t.Errorf("%s: %s's trait written %d times, want %d", what, h, puts[rp[h]], writes)
			}
			if _, gen := pl.Traits(t, rp[h]); gen != gen0[h]+writes {
				t.Errorf("%s: %s's provider generation %d, want %d", what, h, gen, gen0[h]+writes)
			}
		}
	}

	// Each replica attests some hosts: the lease holder or not, a verdict
	// is recorded by the replica that took it. No policy yet: untrusted.
	for i, h := range hosts {
		rs[i%len(rs)].attest(h)
	}
	check("first attestations", []string{"unknown→untrusted"}, 0)
	if _, _, listings := w.Counts(); listings != 1 {
		t.Errorf("%d full Placement listings at start, want 1: one replica reconciles", listings)
	}

	// The golden import on b re-evaluates the fleet: every replica follows
	// the change, and each host turns trusted once. Placement is
	// unreachable meanwhile: the trait changes wait in the outbox and are
	// applied once it is back (the reconcile is an hour away).
	w.Down.Store(true)
	b := rs[1]
	if code, body := b.call("POST", "/v1/golden", map[string]string{"host": hosts[0]}); code != http.StatusOK {
		t.Fatalf("golden import: %d %s", code, body)
	}
	waitFor(t, "the webhooks delivered and the trait changes waiting", func() bool {
		d, err := st.OutboxDepth(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return d == store.Depth{Traits: nodes}
	})
	w.Down.Store(false)
	waitFor(t, "every host trusted in Placement", candidates(hosts...))
	check("golden import", []string{"unknown→untrusted", "untrusted→trusted"}, 1)

	// Nothing attests again: the verdicts expire (through whichever
	// replica's recorder gets there first), the trait goes, and the
	// receiver hears of it once.
	waitFor(t, "every trait removed at expiry", candidates())
	check("expiry", []string{"unknown→untrusted", "untrusted→trusted", "trusted→unknown"}, 2)
}

// shareCredentials makes a state directory for another replica of the
// server whose state directory is first: the replicas share the CA and the
// bootstrap credentials, copied before the replica starts.
func shareCredentials(t *testing.T, first string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "ca-key.pem", server.AdminTokenFile, server.NovaBlobFile} {
		b, err := os.ReadFile(filepath.Join(first, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
