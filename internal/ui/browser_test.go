package ui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"trustpool/internal/api"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/pki"
	"trustpool/internal/server"
	"trustpool/internal/server/servertest"
	"trustpool/internal/store"
	"trustpool/internal/ui"
	"trustpool/internal/verdict"
	"trustpool/internal/verify/verifytest"
)

// chromium finds Debian's Chromium. In CI a missing browser fails the
// test: the dashboard must not go untested there.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (apt-get install chromium): the dashboard's browser tests cannot run")
	}
	t.Skip("chromium is not installed")
	return ""
}

// simNode is a simulated compute node (a verifytest software AK and boot
// logs) behind the trust agent's mutual-TLS quote endpoint.
type simNode struct {
	name, url string
	mu        sync.Mutex // guards node
	node      *verifytest.Node
}

// boot makes the node measure hypervisor into its launch PCRs from now on.
func (s *simNode) boot(hypervisor string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := *s.node
	n.DRTMLog = verifytest.DRTMLog(hypervisor).Bytes()
	s.node = &n
}

func (s *simNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != integrity.QuotePath {
		http.NotFound(w, r)
		return
	}
	var c evidence.Challenge
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&c); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	n := s.node
	s.mu.Unlock()
	ev, err := n.EvidenceFor(c.Nonce, c.Selection)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ev)
}

// dash is a running server with simulated nodes, seen by a Go client.
type dash struct {
	t     *testing.T
	ctx   context.Context
	srv   *server.Server
	ca    *pki.CA
	http  *http.Client
	admin string
	nodes map[string]*simNode
}

func startDash(t *testing.T) *dash {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	srv, ctx, tok := servertest.Start(t, server.Config{StateDir: dir, Listen: "127.0.0.1:0", Log: log,
		Integrity: integrity.Config{Interval: time.Hour, Log: log}})
	ca, err := pki.LoadOrCreateCA(dir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return &dash{t: t, ctx: ctx, srv: srv, ca: ca, http: api.NewHTTPClient(srv.CAPEM()),
		admin: tok, nodes: map[string]*simNode{}}
}

// addNode starts a simulated node booted with hypervisor and stores it as
// enrollment would have admitted it (credential activation needs a TPM;
// package enroll and the swtpm tests cover it).
func (d *dash) addNode(name, hypervisor string) *simNode {
	t := d.t
	t.Helper()
	n, err := verifytest.NewNode(verifytest.RSA2048, "model")
	if err != nil {
		t.Fatal(err)
	}
	n.EventLog = verifytest.BootLog("same-model").Bytes()
	n.DRTMLog = verifytest.DRTMLog(hypervisor).Bytes()
	key, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := d.ca.SignAgentCSR(csr, name)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &simNode{name: name, url: "https://" + ln.Addr().String(), node: n}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: d.ca.Pool()}}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	now := time.Now()
	if err := d.srv.Store().PutHost(d.ctx, store.Host{Name: name, State: store.HostActive,
		EKPublic: []byte("simulated EK of " + name), AKPublic: n.AK.Public(), AKName: n.AK.Name(),
		URL: s.url, AgentCert: certPEM, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	d.nodes[name] = s
	return s
}

// call sends body as token and decodes the answer into out.
func (d *dash) call(token, method, path string, body, out any) int {
	d.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.srv.URL()+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		d.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			d.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

func (d *dash) attest(host string) verdict.Level {
	d.t.Helper()
	var e api.PoolEntry
	d.call(d.admin, "POST", "/v1/hosts/"+host+"/attest", nil, &e)
	return e.Level
}

// spki is the base64 SHA-256 of the server certificate's public key, which
// Chromium is told to accept (the test's CA is not in its trust store).
func (d *dash) spki() string {
	d.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.srv.CAPEM())
	c, err := tls.Dial("tcp", d.srv.Addr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		d.t.Fatal(err)
	}
	defer c.Close()
	sum := sha256.Sum256(c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestDashboard drives the dashboard in headless Chromium against a real
// server: a wrong token is refused; a reader signs in, sees the pool, opens
// the untrusted host and finds the PCR that differs, previews a change,
// reads the audit log, and watches a host turn untrusted without a reload.
// Each view's screenshot is a test artefact (go test -artifacts).
func TestDashboard(t *testing.T) {
	exe := chromium(t)
	d := startDash(t)
	d.addNode("node1", "kvm-6.1.0-28-amd64")
	d.addNode("node2", "kvm-6.1.0-28-amd64-tampered")
	live := d.addNode("node3", "kvm-6.1.0-28-amd64")
	if l := d.attest("node1"); l != verdict.Unknown && l != verdict.Untrusted {
		t.Logf("node1 before golden: %s", l)
	}
	d.call(d.admin, "POST", "/v1/golden", map[string]string{"host": "node1", "name": "model"}, nil)
	for host, want := range map[string]verdict.Level{"node1": verdict.Trusted, "node2": verdict.Untrusted, "node3": verdict.Trusted} {
		if got := d.attest(host); got != want {
			t.Fatalf("%s: %s, want %s", host, got, want)
		}
	}
	var reader struct {
		Token string `json:"token"`
	}
	d.call(d.admin, "POST", "/v1/tokens", map[string]string{"name": "dashboard", "role": "reader"}, &reader)

	// The headers, as any client sees them.
	resp, err := d.http.Get(d.srv.URL() + ui.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != ui.CSP {
		t.Fatalf("GET /ui/: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("GET /ui/: %s %q, want %q", k, got, v)
		}
	}

	shots := t.ArtifactDir()
	downloads := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	actx, cancelA := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000),
		chromedp.Flag("ignore-certificate-errors-spki-list", d.spki()))
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	// Uncaught exceptions, console errors and security (CSP) messages fail
	// the test; failed loads (the wrong token's 401) are expected.
	var mu sync.Mutex // guards problems and injecting
	var problems []string
	// While injecting, the CSP's refusal is expected: it goes to refused.
	injecting := false
	refused := make(chan string, 1)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	console := chromedp.Console(bctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				mu.Lock()
				if injecting && strings.Contains(m.Text, "Content Security Policy") {
					injecting = false
					refused <- m.Text
				} else {
					problems = append(problems, m.String())
				}
				mu.Unlock()
			}
		}
	}()
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string, out any) {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[json.RawMessage](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		if out != nil {
			if err := json.Unmarshal(v, out); err != nil {
				t.Fatalf("evaluate %s: %s: %v", expr, v, err)
			}
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("wait for %s (%s): %v", what, expr, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	signin := func(token string) {
		t.Helper()
		run("sign in", chromedp.WaitVisible(css("#token")),
			chromedp.SendKeys(css("#token"), token), chromedp.Click(css(`#signin button[type="submit"]`)))
	}
	rows := func(expr string) []string {
		t.Helper()
		var out []string
		eval(expr, &out)
		return out
	}

	{ // wrong token
		t.Log("step: wrong token")
		run("open", chromedp.Navigate(d.srv.URL()+ui.Prefix))
		signin("tpt_not-a-token")
		wait("the 401", `document.getElementById('signin-error').textContent.startsWith('401')`)
		if s := text("#signin-error"); !strings.Contains(s, "a valid bearer token is required") {
			t.Errorf("sign-in error %q", s)
		}
		shot("signin-refused")
	}

	{ // inline script is blocked
		t.Log("step: inline script is blocked")
		mu.Lock()
		injecting = true
		mu.Unlock()
		var ran bool
		eval(`(() => { const s = document.createElement('script');
			s.textContent = 'window.injected = true'; document.body.append(s); return window.injected === true; })()`, &ran)
		if ran {
			t.Error("an inline script ran: the CSP does not hold")
		}
		select {
		case msg := <-refused:
			t.Logf("chromium: %s", msg)
		case <-time.After(20 * time.Second):
			t.Error("chromium reported no CSP violation for the inline script")
		}
	}

	{ // pool
		t.Log("step: pool")
		signin(reader.Token)
		wait("the counts", `document.querySelector('#count-trusted .num')?.textContent === '2'`)
		if s := text("#count-untrusted .num"); s != "1" {
			t.Errorf("untrusted count %q, want 1", s)
		}
		wait("node2 red", `document.querySelector('tr[data-host="node2"]')?.classList.contains('row-untrusted')`)
		shot("pool")
		run("filter", chromedp.SetValue(css("#level-filter"), "untrusted"))
		eval(`document.getElementById('level-filter').dispatchEvent(new Event('change'))`, nil)
		shown := rows(`[...document.querySelectorAll('#hosts tbody tr')].map(r => r.dataset.host)`)
		if !slices.Equal(shown, []string{"node2"}) {
			t.Errorf("untrusted filter shows %v, want [node2]", shown)
		}
		eval(`document.getElementById('level-filter').value = ''`, nil)
		run("search", chromedp.SendKeys(css("#search"), "node3"))
		shown = rows(`[...document.querySelectorAll('#hosts tbody tr')].map(r => r.dataset.host)`)
		if !slices.Equal(shown, []string{"node3"}) {
			t.Errorf("search node3 shows %v", shown)
		}
		eval(`document.getElementById('search').value = ''; document.getElementById('search').dispatchEvent(new Event('input'))`, nil)
	}

	{ // untrusted host
		t.Log("step: untrusted host")
		var h api.HostView
		d.call(d.admin, "GET", "/v1/hosts/node2", nil, &h)
		var want []string
		for _, r := range h.Verdict.Reasons {
			if r.Code == verdict.CodePCRMismatch {
				want = append(want, fmt.Sprint(*r.PCR))
			}
		}
		if len(want) == 0 {
			t.Fatalf("node2 has no pcr-mismatch reason: %+v", h.Verdict.Reasons)
		}
		run("open node2", chromedp.Click(css(`a[href="#/host/node2"]`)))
		wait("the diff", `document.querySelector('#pcr-diff tbody tr') !== null`)
		got := rows(`[...document.querySelectorAll('#pcr-diff tbody tr')].map(r => r.dataset.pcr)`)
		firstEvents := rows(`[...document.querySelectorAll('#pcr-diff tbody tr')].map(r => r.cells[5].textContent)`)
		if !slices.Equal(got, want) {
			t.Errorf("diff shows PCRs %v, the verdict's pcr-mismatch reasons name %v", got, want)
		}
		for i, e := range firstEvents {
			if !strings.HasPrefix(e, "event #") && !strings.Contains(e, "event") {
				t.Errorf("PCR %s: first differing event %q", got[i], e)
			}
		}
		t.Logf("node2 differs in PCR %v; first differing events %q", got, firstEvents)
		if s := text("#host-level"); s != "untrusted" {
			t.Errorf("host level %q", s)
		}
		wait("the timeline", `document.querySelectorAll('#timeline li').length > 0`)
		shot("host-untrusted")

		run("download the evidence", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
			return err
		}), chromedp.Click(css("#evidence")))
		deadline := time.Now().Add(20 * time.Second)
		var bundle evidence.Bundle
		for {
			b, err := os.ReadFile(filepath.Join(downloads, "node2-evidence.json"))
			if err == nil && json.Unmarshal(b, &bundle) == nil && bundle.Evidence != nil && len(bundle.Evidence.Quote) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no evidence downloaded: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	{ // preview
		t.Log("step: preview")
		var refs []struct {
			Name  string `json:"name"`
			Class string `json:"class"`
		}
		d.call(d.admin, "GET", "/v1/references", nil, &refs)
		var vmm string
		for _, r := range refs {
			if r.Class == "vmm" {
				vmm = r.Name
			}
		}
		if vmm == "" {
			t.Fatalf("no vmm reference in %+v", refs)
		}
		run("open known-good", chromedp.Click(css(`a[href="#/known-good"]`)))
		wait("references", `document.querySelector('#reference-table tr[data-ref]') !== null`)
		run("preview", chromedp.SetValue(css("#change-doc"), `{"retire": ["`+vmm+`"]}`), chromedp.Click(css("#preview")))
		wait("the answer", `document.querySelector('#preview-summary, #preview-error') !== null`)
		moved := rows(`[...document.querySelectorAll('#preview-table tbody tr')].map(r => r.dataset.host)`)
		slices.Sort(moved)
		if !slices.Equal(moved, []string{"node1", "node3"}) {
			t.Errorf("retiring %s would move %v, want [node1 node3]; page says %q", vmm, moved, text("#preview-result"))
		}
		shot("preview")
		var refsAfter []json.RawMessage
		d.call(d.admin, "GET", "/v1/references", nil, &refsAfter)
		if len(refsAfter) != len(refs) {
			t.Errorf("the preview changed the references: %d, were %d", len(refsAfter), len(refs))
		}
	}

	{ // audit
		t.Log("step: audit")
		run("open audit", chromedp.Click(css(`a[href="#/audit"]`)))
		wait("the status", `document.getElementById('audit-status')?.dataset.ok === 'true'`)
		var head struct {
			Seq int64 `json:"seq"`
		}
		d.call(d.admin, "GET", "/v1/audit/head", nil, &head)
		if s := text("#audit-status"); !strings.Contains(s, fmt.Sprintf("%d entries", head.Seq)) {
			t.Errorf("audit status %q, head seq %d", s, head.Seq)
		}
		shot("audit")
	}

	{ // live
		t.Log("step: live")
		run("open pool", chromedp.Click(css(`a[href="#/pool"]`)))
		wait("node3 trusted", `document.querySelector('tr[data-host="node3"] .badge')?.dataset.level === 'trusted'`)
		eval(`window.notReloaded = 1`, nil)
		live.boot("kvm-6.1.0-28-amd64-rootkit")
		if l := d.attest("node3"); l != verdict.Untrusted {
			t.Fatalf("node3 after the new hypervisor: %s", l)
		}
		wait("node3 red", `document.querySelector('tr[data-host="node3"]')?.classList.contains('row-untrusted')`)
		var same bool
		eval(`window.notReloaded === 1`, &same)
		if !same {
			t.Error("the page reloaded")
		}
		if s := text("#count-untrusted .num"); s != "2" {
			t.Errorf("untrusted count %q, want 2", s)
		}
		shot("pool-live")
	}

	{ // sign out
		t.Log("step: sign out")
		run("sign out", chromedp.Click(css("#signout")))
		wait("the sign-in form", `!document.getElementById('signin-view').hidden && sessionStorage.length === 0`)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
	t.Logf("screenshots in %s", shots)
}
