package nova

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/auth"
	"trustpool/internal/verdict"
)

// cache is an in-memory Verdicts: the shape of the server's verdict cache.
type cache map[string]verdict.Verdict

func (c cache) Verdict(host string) (verdict.Verdict, bool) {
	v, ok := c[host]
	return v, ok
}

var (
	testNow = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	// vtimeRE is the only vtime form PollHosts may send.
	vtimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
)

func at(d time.Duration) time.Time { return testNow.Add(d) }

// fleet is the verdict cache behind the tests.
func fleet() cache {
	ok := func(host string, l verdict.Level, vtime time.Time, ttl time.Duration) verdict.Verdict {
		return verdict.Verdict{Host: host, Level: l, VTime: vtime, Expiry: vtime.Add(ttl)}
	}
	return cache{
		"node1":                    ok("node1", verdict.Trusted, at(-10*time.Second), 5*time.Minute),
		"node2":                    ok("node2", verdict.Untrusted, at(-20*time.Second), 5*time.Minute),
		"compute-7.rack3.example.": ok("compute-7.rack3.example.", verdict.Trusted, at(-5*time.Second), 5*time.Minute),
		"Node1":                    ok("Node1", verdict.Untrusted, at(-1*time.Second), 5*time.Minute),
		"expired":                  ok("expired", verdict.Trusted, at(-10*time.Minute), 5*time.Minute),
		"future":                   ok("future", verdict.Trusted, at(time.Hour), 2*time.Hour),
	}
}

// newTestServer serves PollHosts as the server mounts it: on Paths(prefixes...).
func newTestServer(t *testing.T, v Verdicts, prefixes ...string) *httptest.Server {
	t.Helper()
	return serve(t, NewPollHosts(PollHostsConfig{Now: func() time.Time { return testNow }}, v), prefixes...)
}

// newNovaServer serves PollHosts behind the server's authentication, which
// accepts Nova's x-auth-blob as the scheduler role.
func newNovaServer(t *testing.T, blob string, v Verdicts) *httptest.Server {
	t.Helper()
	authn := auth.New(auth.Config{NovaBlob: blob})
	return serve(t, authn.Require(auth.RoleScheduler)(NewPollHosts(PollHostsConfig{Now: func() time.Time { return testNow }}, v)))
}

func serve(t *testing.T, h http.Handler, prefixes ...string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, p := range Paths(prefixes...) {
		mux.Handle(p, h)
	}
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// post sends a raw body the way Nova does and returns status, content type
// and body.
func post(t *testing.T, srv *httptest.Server, path, body string, header http.Header) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return res.StatusCode, res.Header.Get("Content-Type"), raw
}

type entry struct{ host, level, vtime string }

// decodeAnswer checks the answer's shape strictly (exactly the three keys,
// all strings, vtime in the one allowed form) and returns its entries.
func decodeAnswer(t *testing.T, raw []byte) []entry {
	t.Helper()
	var ans struct {
		Hosts []map[string]any `json:"hosts"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		t.Fatalf("answer %s: %v", raw, err)
	}
	if ans.Hosts == nil {
		t.Fatalf("answer %s has no hosts list", raw)
	}
	out := make([]entry, len(ans.Hosts))
	for i, m := range ans.Hosts {
		if len(m) != 3 {
			t.Fatalf("entry %d = %v, want exactly host_name, trust_lvl, vtime", i, m)
		}
		var e [3]string
		for j, k := range []string{"host_name", "trust_lvl", "vtime"} {
			s, ok := m[k].(string)
			if !ok {
				t.Fatalf("entry %d: %s = %#v, want a string", i, k, m[k])
			}
			e[j] = s
		}
		if !vtimeRE.MatchString(e[2]) {
			t.Errorf("entry %d: vtime %q is not YYYY-MM-DDTHH:MM:SSZ", i, e[2])
		}
		out[i] = entry{e[0], e[1], e[2]}
	}
	return out
}

func TestPollHostsAnswers(t *testing.T) {
	srv := newTestServer(t, fleet())
	const now = "2026-11-03T10:00:00Z"
	tests := []struct {
		name string
		body string
		want []entry
	}{
		{"list with count", `{"count": 2, "hosts": ["node2", "node1"]}`,
			[]entry{{"node2", "untrusted", "2026-11-03T09:59:40Z"}, {"node1", "trusted", "2026-11-03T09:59:50Z"}}},
		{"Folsom bare string, count is its length", `{"count": 5, "hosts": "node1"}`,
			[]entry{{"node1", "trusted", "2026-11-03T09:59:50Z"}}},
		{"OAT CLI, no count", `{"hosts":["node1"]}`,
			[]entry{{"node1", "trusted", "2026-11-03T09:59:50Z"}}},
		{"count disagreeing with hosts is advisory", `{"count": 7, "hosts": ["node1"]}`,
			[]entry{{"node1", "trusted", "2026-11-03T09:59:50Z"}}},
		{"hosts before count", `{"hosts":["node2"],"count":1}`,
			[]entry{{"node2", "untrusted", "2026-11-03T09:59:40Z"}}},
		{"duplicates answered each time", `{"count":3,"hosts":["node1","node2","node1"]}`,
			[]entry{{"node1", "trusted", "2026-11-03T09:59:50Z"}, {"node2", "untrusted", "2026-11-03T09:59:40Z"}, {"node1", "trusted", "2026-11-03T09:59:50Z"}}},
		{"unknown names: unknown as of now", `{"count":2,"hosts":["nobody","node1.example.com"]}`,
			[]entry{{"nobody", "unknown", now}, {"node1.example.com", "unknown", now}}},
		{"FQDN with trailing dot echoed byte for byte", `{"count":1,"hosts":["compute-7.rack3.example."]}`,
			[]entry{{"compute-7.rack3.example.", "trusted", "2026-11-03T09:59:55Z"}}},
		{"case matters", `{"count":2,"hosts":["Node1","NODE1"]}`,
			[]entry{{"Node1", "untrusted", "2026-11-03T09:59:59Z"}, {"NODE1", "unknown", now}}},
		{"escapes and non-ASCII echoed", `{"count":2,"hosts":["n\u00f6de","a\"b<c>&"]}`,
			[]entry{{"nöde", "unknown", now}, {`a"b<c>&`, "unknown", now}}},
		{"empty name is not a host", `{"count":1,"hosts":[""]}`, []entry{{"", "unknown", now}}},
		{"expired verdict fails closed", `{"count":1,"hosts":["expired"]}`, []entry{{"expired", "unknown", now}}},
		{"vtime never later than now", `{"count":1,"hosts":["future"]}`, []entry{{"future", "trusted", now}}},
		{"no hosts", `{"count":0,"hosts":[]}`, []entry{}},
		{"longest name", `{"hosts":["` + strings.Repeat("a", MaxHostName) + `"]}`,
			[]entry{{strings.Repeat("a", MaxHostName), "unknown", now}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, raw := post(t, srv, PrefixNova+"/PollHosts", tt.body, nil)
			if status != http.StatusOK || ctype != "application/json" {
				t.Fatalf("status %d %q, body %s; want 200 application/json", status, ctype, raw)
			}
			if got := decodeAnswer(t, raw); !slices.Equal(got, tt.want) {
				t.Errorf("answer\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestPollHostsPrefixesAndMethods(t *testing.T) {
	body := `{"count":1,"hosts":["node1"]}`
	tests := []struct {
		name     string
		prefixes []string
		method   string
		path     string
		status   int
	}{
		{"Nova default prefix", nil, http.MethodPost, PrefixNova + "/PollHosts", 200},
		{"OAT 1.5 prefix", nil, http.MethodPost, PrefixOAT + "/PollHosts", 200},
		{"other path", nil, http.MethodPost, "/PollHosts", 404},
		{"case of path", nil, http.MethodPost, PrefixNova + "/pollhosts", 404},
		{"GET", nil, http.MethodGet, PrefixNova + "/PollHosts", 405},
		{"PUT", nil, http.MethodPut, PrefixOAT + "/PollHosts", 405},
		{"configured prefix, trailing slash dropped", []string{"/attest/"}, http.MethodPost, "/attest/PollHosts", 200},
		{"configured prefix replaces defaults", []string{"/attest"}, http.MethodPost, PrefixNova + "/PollHosts", 404},
		{"root prefix", []string{"/"}, http.MethodPost, "/PollHosts", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, fleet(), tt.prefixes...)
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			if tt.status == 404 {
				// Not a PollHosts path: the mux answers, not PollHosts.
				if res.StatusCode != 404 {
					t.Fatalf("status %d (body %s): PollHosts answered %s", res.StatusCode, raw, tt.path)
				}
				return
			}
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %s)", res.StatusCode, tt.status, raw)
			}
			if tt.status == 200 {
				decodeAnswer(t, raw)
				return
			}
			checkErrorBody(t, res.Header.Get("Content-Type"), raw)
			if tt.status == 405 && res.Header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q, want POST", res.Header.Get("Allow"))
			}
		})
	}
}

func checkErrorBody(t *testing.T, ctype string, raw []byte) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if ctype != "application/json" || json.Unmarshal(raw, &e) != nil || e.Error == "" {
		t.Errorf("error answer %q (%s) is not a JSON {\"error\": ...}", raw, ctype)
	}
}

func TestPollHostsRejectsBadBodies(t *testing.T) {
	srv := newTestServer(t, fleet())
	many := func(n int) string {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("h%d", i)
		}
		b, _ := json.Marshal(map[string]any{"hosts": names})
		return string(b)
	}
	tests := []struct {
		name   string
		body   string
		status int
	}{
		{"empty", ``, 400},
		{"not JSON", `hosts=node1`, 400},
		{"array", `["node1"]`, 400},
		{"null", `null`, 400},
		{"missing hosts", `{"count":1}`, 400},
		{"null hosts", `{"hosts":null}`, 400},
		{"number hosts", `{"hosts":1}`, 400},
		{"object hosts", `{"hosts":{"node1":true}}`, 400},
		{"null name", `{"hosts":["node1",null]}`, 400},
		{"number name", `{"hosts":[1]}`, 400},
		{"nested list", `{"hosts":[["node1"]]}`, 400},
		{"name too long", `{"hosts":["` + strings.Repeat("a", MaxHostName+1) + `"]}`, 400},
		{"bare name too long", `{"hosts":"` + strings.Repeat("a", MaxHostName+1) + `"}`, 400},
		{"negative count", `{"count":-1,"hosts":["node1"]}`, 400},
		{"fractional count", `{"count":1.5,"hosts":["node1"]}`, 400},
		{"exponent count", `{"count":1e2,"hosts":["node1"]}`, 400},
		{"string count", `{"count":"1","hosts":["node1"]}`, 400},
		{"null count", `{"count":null,"hosts":["node1"]}`, 400},
		{"unknown key", `{"count":1,"hosts":["node1"],"verbose":true}`, 400},
		{"duplicate hosts key", `{"hosts":["node2"],"hosts":["node1"]}`, 400},
		{"duplicate count key", `{"count":1,"count":1,"hosts":["node1"]}`, 400},
		{"trailing data", `{"hosts":["node1"]} {}`, 400},
		{"truncated", `{"hosts":["node1"`, 400},
		{"trailing comma", `{"hosts":["node1",]}`, 400},
		{"invalid UTF-8", "{\"hosts\":[\"node\xff\"]}", 400},
		{"too many hosts", many(MaxPollHosts + 1), 400},
		{"body over 8 MiB", `{"hosts":["` + strings.Repeat("a", MaxPollBody) + `"]}`, 413},
		{"as many hosts as allowed", many(MaxPollHosts), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, raw := post(t, srv, PrefixNova+"/PollHosts", tt.body, nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d (body %.200s)", status, tt.status, raw)
			}
			if status == 200 {
				// decodeAnswer's strict checks are slow for 100,000 entries
				// under -race; the shape is checked by the other tests.
				var ans struct{ Hosts []struct{} }
				if err := json.Unmarshal(raw, &ans); err != nil || len(ans.Hosts) != MaxPollHosts {
					t.Errorf("%d entries (%v), want %d", len(ans.Hosts), err, MaxPollHosts)
				}
				return
			}
			checkErrorBody(t, ctype, raw)
		})
	}
}

// TestNovaTrustedFilter runs Nova's own client logic (ported in
// novaclient_test.go) against PollHosts over HTTPS: what Nova's scheduler
// decides, how its cache behaves, and that it never crashes.
func TestNovaTrustedFilter(t *testing.T) {
	const blob = "blob"
	srv := newNovaServer(t, blob, fleet())
	hosts := []string{"node1", "node2", "compute-7.rack3.example.", "expired", "nobody"}
	novaNow := testNow
	clock := func() time.Time { return novaNow }

	for _, prefix := range []string{PrefixNova, PrefixOAT} {
		t.Run(prefix, func(t *testing.T) {
			novaNow = testNow
			nova := newNovaAttestation(srv.Client(), srv.URL+prefix, blob, clock, hosts...)
			decisions := []struct {
				host, trust string
				pass        bool
			}{
				{"node1", "trusted", true},
				{"node1", "untrusted", false},
				{"node2", "trusted", false},
				{"node2", "untrusted", true},
				{"compute-7.rack3.example.", "trusted", true},
				{"expired", "trusted", false},
				{"expired", "untrusted", false},
				{"nobody", "trusted", false},
				{"nobody", "untrusted", false},
				{"nobody", "", true},
				{"node1", "Trusted", false},
			}
			for _, d := range decisions {
				pass, err := nova.hostPasses(d.host, d.trust)
				if err != nil {
					t.Fatal(err)
				}
				if pass != d.pass {
					t.Errorf("host_passes(%s, trust=%q) = %v, want %v", d.host, d.trust, pass, d.pass)
				}
			}
			// vtime is when each verdict was established (at most 20 s ago)
			// or now, so Nova answered every decision above from one poll.
			if nova.polls != 1 {
				t.Errorf("Nova polled %d times, want 1", nova.polls)
			}
			// 41 s later node1's entry (vtime now-10s) is still fresh, but
			// node2's (vtime now-20s) is stale: asking for it re-polls.
			novaNow = testNow.Add(41 * time.Second)
			if _, err := nova.hostPasses("node1", "trusted"); err != nil {
				t.Fatal(err)
			}
			if nova.polls != 1 {
				t.Errorf("Nova polled %d times for a fresh entry, want 1", nova.polls)
			}
			if _, err := nova.hostPasses("node2", "untrusted"); err != nil {
				t.Fatal(err)
			}
			if nova.polls != 2 {
				t.Errorf("Nova polled %d times after its cache went stale, want 2", nova.polls)
			}
		})
	}

	t.Run("wrong blob: every host unknown, no crash", func(t *testing.T) {
		nova := newNovaAttestation(srv.Client(), srv.URL+PrefixNova, "wrong", clock, hosts...)
		for _, h := range hosts {
			pass, err := nova.hostPasses(h, "trusted")
			if err != nil {
				t.Fatal(err)
			}
			if pass {
				t.Errorf("%s passed with a wrong auth blob", h)
			}
		}
	})
	t.Run("vtime forms Nova parses", func(t *testing.T) {
		for _, s := range []string{"2016-02-29T22:29:26Z", "2016-02-29T22:29:26+00:00", "2016-02-29T22:29:26.5Z", "Tue Feb 14 09:02:48 2012"} {
			if _, err := parseNovaTime(s); err != nil {
				t.Errorf("parse %q: %v", s, err)
			}
		}
		if _, err := parseNovaTime("29/02/2016 22:29"); err == nil {
			t.Error("a locale date parsed")
		}
	})
}

func TestPollHostsPaths(t *testing.T) {
	for _, tt := range []struct {
		prefixes, want []string
	}{
		{nil, []string{PrefixOAT + "/PollHosts", PrefixNova + "/PollHosts"}},
		{[]string{"/attest/", "attest"}, []string{"/attest/PollHosts"}},
		{[]string{"/"}, []string{"/PollHosts"}},
	} {
		if got := Paths(tt.prefixes...); !slices.Equal(got, tt.want) {
			t.Errorf("Paths(%q) = %q, want %q", tt.prefixes, got, tt.want)
		}
	}
}

func TestVTimeCache(t *testing.T) {
	var c vtimeCache
	times := []time.Time{
		testNow,
		testNow.Add(64 * time.Second), // same slot as testNow
		testNow.Add(500 * time.Millisecond),
		testNow.Add(-64 * time.Second),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2016, 2, 29, 22, 29, 26, 999_999_999, time.UTC),
		time.Date(2016, 2, 29, 23, 29, 26, 0, time.FixedZone("CET", 3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(33, 7, 4, 5, 6, 7, 0, time.UTC),
	}
	for round := range 2 { // the second round reads from the cache
		for _, tm := range times {
			if got, want := string(c.append(nil, tm)), tm.UTC().Format(vtimeLayout); got != want {
				t.Errorf("round %d: %v: got %q, want %q", round, tm, got, want)
			}
		}
	}
}

// TestPollHostsConcurrent checks, under -race, that concurrent requests
// (which share pooled buffers) each get the answer to their own names.
func TestPollHostsConcurrent(t *testing.T) {
	h := NewPollHosts(PollHostsConfig{Now: func() time.Time { return testNow }}, fleet())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				names := make([]string, 1+(g*50+i)%97)
				for j := range names {
					names[j] = fmt.Sprintf("g%d-r%d-h%d", g, i, j)
				}
				names[0] = "node1"
				body, _ := json.Marshal(map[string]any{"count": len(names), "hosts": names})
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PrefixNova+"/PollHosts", bytes.NewReader(body)))
				var ans struct {
					Hosts []struct {
						HostName string `json:"host_name"`
						TrustLvl string `json:"trust_lvl"`
					} `json:"hosts"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || len(ans.Hosts) != len(names) {
					t.Errorf("answer %.100s: %v", rec.Body, err)
					return
				}
				for j, e := range ans.Hosts {
					if e.HostName != names[j] {
						t.Errorf("entry %d = %q, want %q", j, e.HostName, names[j])
						return
					}
				}
				if ans.Hosts[0].TrustLvl != "trusted" {
					t.Errorf("node1 = %q", ans.Hosts[0].TrustLvl)
				}
			}
		})
	}
	wg.Wait()
}
