package server_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/agent"
	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/bootsim/bootsimtest"
	"trustpool/internal/api"
	"trustpool/internal/enroll"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// connectProxy is an HTTPS proxy on loopback (HTTP CONNECT) that records
// the addresses it tunnelled to.
type connectProxy struct {
	mu      sync.Mutex
	tunnels []string
}

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	upstream, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	p.mu.Lock()
	p.tunnels = append(p.tunnels, r.Host)
	p.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	go func() { io.Copy(upstream, buf); upstream.Close() }()
	io.Copy(conn, upstream)
	conn.Close()
}

func (p *connectProxy) saw(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.tunnels {
		if t == addr {
			return true
		}
	}
	return false
}

// TestPushAgentThroughProxy runs the real agent in push mode on swtpm
// through an HTTPS proxy: it enrolls and pushes with no listening port, an
// operator's attest call wakes its long-poll and gets the verdict of its
// next push, and a host that enrolled without a URL cannot be switched to
// pull. A pull host's certificate is refused on the push routes (409) until
// an administrator switches the host to push.
func TestPushAgentThroughProxy(t *testing.T) {
	needSWTPM(t)
	// An interval of a minute: a push a known-good change asks for comes
	// within 6 s, well before the schedule's own.
	e := startServerWith(t, func(c *server.Config) { c.Integrity.Interval = time.Minute })
	proxy := &connectProxy{}
	psrv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go psrv.Serve(ln)
	t.Cleanup(func() { psrv.Close() })
	proxyURL, _ := url.Parse("http://" + ln.Addr().String())

	tp, logs := bootsimtest.Boot(t, bootsim.Profile{Launch: true})
	dir := t.TempDir()
	srtm, drtm := filepath.Join(dir, "srtm.log"), filepath.Join(dir, "drtm.log")
	if err := os.WriteFile(srtm, logs.SRTM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(drtm, logs.DRTM, 0o600); err != nil {
		t.Fatal(err)
	}
	tok := enroll.NewToken()
	if err := e.srv.Store().CreateJoinToken(e.ctx, store.JoinToken{Hash: enroll.TokenHash(tok), Host: "push1", ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Name: "push1", Server: e.srv.URL(), ServerCA: e.srv.CAPEM(), Mode: "push",
		Proxy: http.ProxyURL(proxyURL), StateDir: dir, EventLog: srtm, DRTMLog: drtm, JoinToken: tok,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, tp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "push1's first push", func() bool { _, ok := e.srv.Integrity().Cache().Verdict("push1"); return ok })
	if !proxy.saw(e.srv.Addr()) {
		t.Fatalf("the push agent did not go through the proxy (tunnels to %v)", proxy.tunnels)
	}
	e.golden("push1")
	if v := e.attest("push1"); v.Level != verdict.Trusted {
		t.Fatalf("attest of the push host (through its long-poll): %s %v, want trusted", v.Level, v.Reasons)
	}
	// A known-good change asks the push agent for a fresh quote.
	before, err := e.srv.Store().LatestEvidence(e.ctx, "push1")
	if err != nil {
		t.Fatal(err)
	}
	ref := map[string]any{"name": "extra", "class": "host_unique",
		"expect": []map[string]any{{"pcr": 23, "bank": "sha256", "digests": []string{strings.Repeat("ab", 32)}}}}
	if code, body := e.call("PUT", "/v1/references/extra", ref); code != http.StatusOK {
		t.Fatalf("known-good change: %d %s", code, body)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if after, err := e.srv.Store().LatestEvidence(e.ctx, "push1"); err == nil && after.Seq > before.Seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fresh push within 15 s of a known-good change (the schedule's own is a minute away)")
		}
	}
	var h api.HostView
	code, body := e.call("GET", "/v1/hosts/push1", nil)
	if code != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Mode != store.ModePush || h.URL != "" {
		t.Fatalf("push1's view: %d %s, want push mode and no URL", code, body)
	}
	if code, body := e.call("PATCH", "/v1/hosts/push1", map[string]string{"mode": "pull"}); code != http.StatusConflict {
		t.Fatalf("switching a host without a URL to pull: %d %s, want 409", code, body)
	}

	// A pull host's agent certificate on the push routes: refused until
	// the host is switched to push.
	pullDir := startNode(t, e, "pull1", bootsim.Profile{Launch: true}).dir
	cert, err := tls.LoadX509KeyPair(filepath.Join(pullDir, "agent.pem"), filepath.Join(pullDir, "agent-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	push := func() int {
		c := api.NewHTTPClient(e.srv.CAPEM())
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
		req, _ := http.NewRequestWithContext(e.ctx, "POST", e.srv.URL()+"/v1/push/challenge", strings.NewReader(`{"host":"pull1"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := push(); code != http.StatusConflict {
		t.Fatalf("a pull host's challenge on the push route: %d, want 409", code)
	}
	if code, body := e.call("PATCH", "/v1/hosts/pull1", map[string]string{"mode": "push"}); code != http.StatusOK {
		t.Fatalf("switching pull1 to push: %d %s", code, body)
	}
	if code := push(); code != http.StatusOK {
		t.Fatalf("after the switch, pull1's challenge on the push route: %d, want 200", code)
	}
}
