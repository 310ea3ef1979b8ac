package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/filter"
	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/httpjson"
	"trustpool/internal/integrity"
	"trustpool/internal/nova"
	"trustpool/internal/server"
	"trustpool/internal/store/pgtest"
	"trustpool/internal/verdict"
)

// TestReplicaPartitionedFromDatabase: a replica on PostgreSQL whose
// database stops answering, as across a network partition (every
// PostgreSQL process stopped with SIGSTOP: connections stay open, nothing
// answers, nothing is refused), stops serving trusted once its verdicts
// expire: PollHosts, /v1/filter and /v1/pool say no host is trusted. Once
// the database answers again it re-attests its hosts and serves them as
// trusted again.
func TestReplicaPartitionedFromDatabase(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)
	const (
		nodes    = 4
		interval = time.Second
		validity = 4 * time.Second
	)
	e := startServerWith(t, func(c *server.Config) {
		c.DSN, c.Replica, c.LeaseTime = dsn, "a", 2*time.Second
		c.Integrity = integrity.Config{Interval: interval, Validity: validity, Timeout: 2 * time.Second, Log: c.Log}
	})
	admin := api.NewClient(e.srv.URL(), e.srv.CAPEM(), e.token)
	ctx := t.Context()
	fl := newFleet(t, e.srv.URL(), e.srv.CAPEM(), admin, nodes)
	if n, err := fl.Enroll(ctx); err != nil || n != nodes {
		t.Fatalf("enrolled %d of %d: %v", n, nodes, err)
	}
	var hosts []string
	for _, nd := range fl.Nodes() {
		hosts = append(hosts, nd.Name)
	}
	waitFor(t, "verified evidence of the golden host", func() bool {
		var bundle map[string]any
		return admin.Do(ctx, "GET", "/v1/hosts/"+hosts[0]+"/evidence", nil, &bundle) == nil
	})
	if err := admin.Do(ctx, "POST", "/v1/golden", map[string]string{"host": hosts[0]}, nil); err != nil {
		t.Fatal(err)
	}

	// The relying parties' three views, each asked with a deadline. The
	// pool lists the hosts from the store: without it the pool is a 503,
	// which says nothing is trusted too; the schedulers' paths answer from
	// the verdicts held.
	const unavailable = "503 (the store did not answer)"
	views := func() map[string]string {
		got := map[string]string{}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		levels := func(view string, err error, trusted []string) {
			var se *httpjson.StatusError
			switch {
			case view == "/v1/pool" && errors.As(err, &se) && se.Code == http.StatusServiceUnavailable:
				got[view] = unavailable
			case err != nil:
				got[view] = "error: " + err.Error()
			default:
				got[view] = fmt.Sprintf("%d of %d trusted", len(trusted), nodes)
			}
		}
		trusted, err := pollHostsTrusted(rctx, e, hosts)
		levels("PollHosts", err, trusted)
		var f struct{ Hosts []string }
		err = admin.Do(rctx, "POST", "/v1/filter", map[string]any{"extra_specs": map[string]string{filter.ExtraSpec: "trusted"}, "hosts": hosts}, &f)
		levels("/v1/filter", err, f.Hosts)
		var p api.Pool
		err = admin.Do(rctx, "GET", "/v1/pool", nil, &p)
		var inPool []string
		for _, h := range p.Hosts {
			if h.Level == verdict.Trusted {
				inPool = append(inPool, h.Host)
			}
		}
		levels("/v1/pool", err, inPool)
		return got
	}
	allTrusted, noneTrusted := fmt.Sprintf("%d of %d trusted", nodes, nodes), fmt.Sprintf("0 of %d trusted", nodes)
	all := func(got map[string]string, want ...string) bool {
		for _, g := range got {
			if !slices.Contains(want, g) {
				return false
			}
		}
		return len(got) == 3
	}
	waitFor(t, "every host trusted in every view", func() bool { return all(views(), allTrusted) })

	// The partition: from now on no verdict can be written or read. Until
	// the verdicts expire, the views may say trusted (or the pool 503);
	// nothing may fail to answer.
	pg.Pause(t)
	paused := time.Now()
	for got := views(); !all(got, noneTrusted, unavailable); got = views() {
		if !all(got, allTrusted, noneTrusted, unavailable) || time.Since(paused) > validity+5*time.Second {
			t.Fatalf("%v after the partition (validity %v): %v", time.Since(paused).Round(time.Millisecond), validity, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("no host trusted %v after the partition (validity %v)", time.Since(paused).Round(time.Millisecond), validity)
	// It stays so while the partition lasts.
	for end := time.Now().Add(2 * interval); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if got := views(); !all(got, noneTrusted, unavailable) {
			t.Fatalf("during the partition: %v", got)
		}
	}

	pg.Resume(t)
	resumed := time.Now()
	waitFor(t, "every host trusted again after the partition", func() bool { return all(views(), allTrusted) })
	t.Logf("every host trusted again %v after the database came back", time.Since(resumed).Round(time.Millisecond))
}

// pollHostsTrusted asks e's PollHosts for hosts, as Nova's TrustedFilter
// does, and returns those it answers trusted.
func pollHostsTrusted(ctx context.Context, e *env, hosts []string) ([]string, error) {
	body, _ := json.Marshal(map[string]any{"count": len(hosts), "hosts": hosts})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL()+nova.PrefixNova+"/PollHosts", strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.token)
	res, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
		return nil, fmt.Errorf("PollHosts: %d %s", res.StatusCode, b)
	}
	var answer struct {
		Hosts []api.PoolEntry `json:"hosts"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&answer); err != nil {
		return nil, err
	}
	var trusted []string
	for _, h := range answer.Hosts {
		if h.Level == verdict.Trusted {
			trusted = append(trusted, h.Host)
		}
	}
	return trusted, nil
}

// newFleet returns a simulated fleet of n nodes (test equipment) for the
// server at url, whose join tokens admin issues; it is closed when t ends.
func newFleet(t *testing.T, url string, ca []byte, admin *httpjson.Client, n int) *fleet.Fleet {
	t.Helper()
	fl, err := fleet.New(fleet.Config{Server: url, ServerCA: ca, Nodes: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		JoinToken: fleet.AdminJoinTokens(admin)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	return fl
}
