package tamper_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/agent/tpm"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/nova"
	"trustpool/internal/pki"
)

// beginEnroll sends an enrollment request for host with tp's EK and AK, as
// an agent does (no admin token), changed by edits, and returns the answer.
func (f *fixture) beginEnroll(t *testing.T, tp *tpm.TPM, host, token string, edits ...func(*evidence.EnrollRequest)) (int, []byte) {
	t.Helper()
	ek, ekCert, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://127.0.0.1:1"
	if h, err := f.srv.Store().GetHost(f.ctx, host); err == nil {
		url = h.URL // so that an accepted re-enrollment would change nothing but the certificate
	}
	er := evidence.EnrollRequest{Host: host, EKPublic: ek, EKCert: ekCert, AKPublic: ak, URL: url, CSR: csr, JoinToken: token}
	for _, e := range edits {
		e(&er)
	}
	req := f.request("POST", "/v1/enroll", er)
	req.Header.Del("Authorization")
	return f.send(req, nil)
}

// enrollWith runs a whole enrollment of host with tp and token: the
// request, credential activation in tp, and the activation call, whose
// answer it returns.
func (f *fixture) enrollWith(t *testing.T, tp *tpm.TPM, host, token string) (int, []byte) {
	t.Helper()
	code, body, _ := f.enrollKeyed(t, tp, host, token)
	return code, body
}

// enrollKeyed is enrollWith that also returns the agent's TLS certificate
// when the activation issued one.
func (f *fixture) enrollKeyed(t *testing.T, tp *tpm.TPM, host, token string) (int, []byte, *tls.Certificate) {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	code, body := f.beginEnroll(t, tp, host, token, func(r *evidence.EnrollRequest) { r.CSR = csr })
	if code != http.StatusOK {
		t.Fatalf("enrollment request for %s: %d %s, want 200 (the token is checked at activation)", host, code, body)
	}
	code, body = f.activate(t, tp, body)
	var adm evidence.Admitted
	if code != http.StatusOK || json.Unmarshal(body, &adm) != nil || len(adm.Cert) == 0 {
		return code, body, nil
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(adm.Cert, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return code, body, &cert
}

// activate has tp activate the credential of an enrollment request's
// answer and sends the activation, as an agent does.
func (f *fixture) activate(t *testing.T, tp *tpm.TPM, credential []byte) (int, []byte) {
	t.Helper()
	var cred evidence.EnrollCredential
	if err := json.Unmarshal(credential, &cred); err != nil {
		t.Fatal(err)
	}
	secret, err := tp.ActivateCredential(cred.CredentialBlob, cred.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	req := f.request("POST", "/v1/enroll/activate", evidence.EnrollActivation{ID: cred.ID, Secret: secret})
	req.Header.Del("Authorization")
	return f.send(req, nil)
}

// hello says hello as host presenting cert (nil: none), as an agent does.
func (f *fixture) hello(cert *tls.Certificate, host string) (int, error) {
	req := f.request("POST", "/v1/hello", map[string]string{"host": host})
	req.Header.Del("Authorization")
	resp, err := f.clientWithCert(cert).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// rolesWired reports whether the server has per-role API tokens (package
// auth behind /v1/tokens) or only the bootstrap admin token.
func (f *fixture) rolesWired() bool {
	code, _ := f.call("GET", "/v1/tokens", nil)
	return code != http.StatusNotFound && code != http.StatusMethodNotAllowed
}

// route is one endpoint of package api, as the tests call it.
type route struct {
	method, pattern string // as registered in package api
	path            string // the pattern with its names filled in
	// who may call it: "agent" (no token: a join token or the agent's
	// certificate), or the one role ("reader", "scheduler", "admin") it
	// requires; admin may call everything.
	who  string
	body bool // it reads a JSON body
}

// routes lists every endpoint of package api; TestRoutesCovered keeps it
// complete, so that a new endpoint cannot escape the matrix.
var routes = []route{
	{"POST", "/v1/enroll", "/v1/enroll", "agent", true},
	{"POST", "/v1/enroll/activate", "/v1/enroll/activate", "agent", true},
	{"POST", "/v1/enroll/poll", "/v1/enroll/poll", "agent", true},
	{"POST", "/v1/hello", "/v1/hello", "agent", true},
	{"POST", "/v1/push/challenge", "/v1/push/challenge", "agent", true},
	{"POST", "/v1/push/evidence", "/v1/push/evidence", "agent", true},
	{"POST", "/v1/push/wait", "/v1/push/wait", "agent", true},
	{"GET", "/v1/hosts", "/v1/hosts", "reader", false},
	{"GET", "/v1/hosts/{name}", "/v1/hosts/sim1", "reader", false},
	{"GET", "/v1/hosts/{name}/evidence", "/v1/hosts/sim1/evidence", "reader", false},
	{"DELETE", "/v1/hosts/{name}", "/v1/hosts/sim1", "admin", false},
	{"PATCH", "/v1/hosts/{name}", "/v1/hosts/sim1", "admin", true},
	{"GET", "/v1/pending", "/v1/pending", "reader", false},
	{"POST", "/v1/hosts/{name}/approve", "/v1/hosts/sim1/approve", "admin", true},
	{"POST", "/v1/hosts/{name}/attest", "/v1/hosts/sim1/attest", "admin", false},
	{"POST", "/v1/join-tokens", "/v1/join-tokens", "admin", true},
	{"GET", "/v1/references", "/v1/references", "reader", false},
	{"PUT", "/v1/references/{name}", "/v1/references/x", "admin", true},
	{"DELETE", "/v1/references/{name}", "/v1/references/sim-bios", "admin", false},
	{"GET", "/v1/policies", "/v1/policies", "reader", false},
	{"PUT", "/v1/policies/{name}", "/v1/policies/default", "admin", true},
	{"POST", "/v1/preview", "/v1/preview", "reader", true},
	{"POST", "/v1/apply", "/v1/apply", "admin", true},
	{"POST", "/v1/golden", "/v1/golden", "admin", true},
	{"POST", "/v1/tokens", "/v1/tokens", "admin", true},
	{"GET", "/v1/tokens", "/v1/tokens", "admin", false},
	{"DELETE", "/v1/tokens/{name}", "/v1/tokens/nobody", "admin", false},
	{"GET", "/v1/audit", "/v1/audit", "reader", false},
	{"GET", "/v1/audit/head", "/v1/audit/head", "reader", false},
	{"GET", "/v1/pool", "/v1/pool", "scheduler", false},
	{"POST", "/v1/filter", "/v1/filter", "scheduler", true},
	{"POST", "/v1/kubernetes/filter", "/v1/kubernetes/filter", "scheduler", true},
	{"POST", "/v1/kubernetes/prioritize", "/v1/kubernetes/prioritize", "scheduler", true},
	{"", nova.PrefixNova + "/PollHosts", nova.PrefixNova + "/PollHosts", "scheduler", true},
	{"", nova.PrefixOAT + "/PollHosts", nova.PrefixOAT + "/PollHosts", "scheduler", true},
	{"GET", "/healthz", "/healthz", "anyone", false},
	{"GET", "/readyz", "/readyz", "anyone", false},
	{"GET", "/ui/", "/ui/", "anyone", false},
	{"GET", "/metrics", "/metrics", "reader", false},
	{"GET", "/v1/openapi.yaml", "/v1/openapi.yaml", "anyone", false},
}

// call is the method the tests call r with: PollHosts is mounted for every
// method and answers only POST.
func (r route) call() string {
	if r.method == "" {
		return "POST"
	}
	return r.method
}

func routesFor(who ...string) []route {
	var out []route
	for _, r := range routes {
		if slices.Contains(who, r.who) {
			out = append(out, r)
		}
	}
	return out
}

// missingCredential calls every operator and scheduler endpoint with no
// credential, and a few with a wrong one. Wrong credentials are few on
// purpose: once failed authentications are rate limited per address, more
// would lock the test's own address out.
func (f *fixture) missingCredential(t *testing.T) {
	for _, c := range routesFor("reader", "scheduler", "admin") {
		req := f.request(c.call(), c.path, []byte(`{}`))
		req.Header.Del("Authorization")
		if code, body := f.send(req, nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s without a credential: %d %s, want 401", c.call(), c.path, code, body)
		}
	}
	var tok struct{ Token string }
	f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "newcomer"}, &tok)
	wrong := []struct {
		name         string
		method, path string
		set          func(*http.Request)
	}{
		{"a random bearer token", "DELETE", "/v1/hosts/sim1", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+enroll.NewToken()) }},
		{"the admin token without the Bearer scheme", "PUT", "/v1/policies/default", func(r *http.Request) { r.Header.Set("Authorization", f.admin) }},
		{"the admin token as basic auth", "GET", "/v1/hosts", func(r *http.Request) { r.Header.Del("Authorization"); r.SetBasicAuth("admin", f.admin) }},
		{"a join token as bearer", "POST", "/v1/golden", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Token) }},
		{"the Nova blob as bearer", "GET", "/v1/pool", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+f.novaBlob) }},
	}
	for _, w := range wrong {
		req := f.request(w.method, w.path, []byte(`{"host":"sim1"}`))
		w.set(req)
		if code, body := f.send(req, nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s with %s: %d %s, want 401", w.method, w.path, w.name, code, body)
		}
	}
	for name, blob := range map[string]string{"no x-auth-blob": "", "a wrong x-auth-blob": enroll.NewToken(), "the admin token as x-auth-blob": f.admin} {
		req := f.request("POST", nova.PrefixNova+"/PollHosts", map[string]any{"hosts": []string{"sim1"}})
		req.Header.Del("Authorization")
		if blob != "" {
			req.Header.Set("x-auth-blob", blob)
		}
		if code, body := f.send(req, nil); code != http.StatusUnauthorized {
			t.Errorf("PollHosts with %s: %d %s, want 401", name, code, body)
		}
	}
}

// wrongRole presents each non-admin credential to every endpoint that
// needs another role. The Nova x-auth-blob is a scheduler credential; with
// roles wired every such call must get 403 (authenticated, not allowed),
// before that 401 (only the admin token existed).
func (f *fixture) wrongRole(t *testing.T) {
	want := http.StatusUnauthorized
	type cred struct {
		role string
		set  func(*http.Request)
	}
	creds := map[string]cred{
		"the Nova x-auth-blob": {"scheduler", func(r *http.Request) { r.Header.Del("Authorization"); r.Header.Set("x-auth-blob", f.novaBlob) }},
	}
	if f.rolesWired() {
		want = http.StatusForbidden
		for _, role := range []string{"scheduler", "reader", "agent"} {
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/tokens", map[string]string{"name": "tamper-" + role, "role": role}, &tok)
			creds["a "+role+" token"] = cred{role, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.Token) }}
		}
	}
	for name, c := range creds {
		for _, r := range routesFor("reader", "scheduler", "admin") {
			if r.who == c.role {
				continue
			}
			req := f.request(r.call(), r.path, []byte(`{"host":"sim1"}`))
			c.set(req)
			if code, body := f.send(req, nil); code != want {
				t.Errorf("%s %s with %s: %d %s, want %d", r.call(), r.path, name, code, body, want)
			}
		}
	}
}

// badBodies sends malformed, truncated, oversized and mistyped bodies to
// every endpoint that reads one, with the credential each needs: each must
// get a 4xx, and the server must go on serving.
func (f *fixture) badBodies(t *testing.T) {
	huge := append([]byte(`{"host":"`), bytes.Repeat([]byte("a"), 9<<20)...) // above every limit (PollHosts takes 8 MiB)
	bodies := []struct {
		name        string
		body        []byte
		contentType string
	}{
		{"malformed", []byte(`{"host": sim1}`), ""},
		{"truncated", []byte(`{"host":"sim1","ek_public":"AAA`), ""},
		{"oversized", huge, ""},
		{"empty", []byte{}, ""},
		{"unknown field", []byte(`{"host":"sim1","evil":true}`), ""},
		{"wrong type", []byte(`{"host":17}`), ""},
		{"trailing data", []byte(`{"host":"sim1"} {}`), ""},
		{"array", []byte(`[{"host":"sim1"}]`), ""},
		{"deep nesting", append(bytes.Repeat([]byte("["), 100000), bytes.Repeat([]byte("]"), 100000)...), ""},
		{"not JSON content type", []byte(`{"host":"sim1"}`), "text/plain"},
	}
	type endpoint struct {
		method, path string
		auth         func(*http.Request)
	}
	asAdmin := func(*http.Request) {}
	asAgent := func(r *http.Request) { r.Header.Del("Authorization") }
	asNova := func(r *http.Request) { r.Header.Del("Authorization"); r.Header.Set("x-auth-blob", f.novaBlob) }
	var endpoints []endpoint
	for _, r := range routes {
		switch {
		case !r.body, r.method == "": // PollHosts: below, as Nova calls it
		case r.who == "agent":
			endpoints = append(endpoints, endpoint{r.method, r.path, asAgent})
		default:
			endpoints = append(endpoints, endpoint{r.method, r.path, asAdmin})
		}
	}
	endpoints = append(endpoints, endpoint{"POST", nova.PrefixNova + "/PollHosts", asNova}, endpoint{"POST", nova.PrefixOAT + "/PollHosts", asNova})
	for _, e := range endpoints {
		for _, b := range bodies {
			if strings.Contains(e.path, "PollHosts") && b.contentType != "" {
				continue // Nova's client never set a content type; PollHosts does not read it
			}
			req := f.request(e.method, e.path, b.body)
			e.auth(req)
			if b.contentType != "" {
				req.Header.Set("Content-Type", b.contentType)
			}
			code, out := f.send(req, nil)
			if code < 400 || code >= 500 {
				t.Errorf("%s %s with a %s body: %d %.200s, want 4xx", e.method, e.path, b.name, code, out)
				continue
			}
			var eb struct{ Error string }
			if json.Unmarshal(out, &eb) != nil || eb.Error == "" {
				t.Errorf("%s %s with a %s body: %d without an error message: %.200s", e.method, e.path, b.name, code, out)
			}
		}
	}
	if code, body := f.call("GET", "/v1/pool", nil); code != http.StatusOK {
		t.Fatalf("after bad bodies the server answers %d %s", code, body)
	}
}

// TestRoutesCovered fails when the server mounts an endpoint that routes
// does not list: every endpoint must face the missing-credential,
// wrong-role and bad-body cases.
func TestRoutesCovered(t *testing.T) {
	f := newFixture(t, integrity.Config{})
	mounted := f.srv.Routes()
	for _, p := range mounted {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			method, path = "", p
		}
		if !slices.ContainsFunc(routes, func(r route) bool { return r.method == method && r.pattern == path }) {
			t.Errorf("the server mounts %q, which the tamper matrix does not list in routes", p)
		}
	}
	for _, r := range routes {
		if !slices.Contains(mounted, strings.TrimSpace(r.method+" "+r.pattern)) {
			t.Errorf("routes lists %s %s, which the server does not mount", r.method, r.pattern)
		}
	}
}
