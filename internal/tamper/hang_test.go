package tamper_test

import (
	"strings"
	"testing"
	"time"

	"trustpool/internal/integrity"
	"trustpool/internal/verdict"
)

// TestChallengeNeverAnswered: one agent accepts the TCP connection and never
// says a word (not even TLS), another completes TLS, reads the challenge and
// never answers. With one worker and a 2 s challenge deadline (short, yet
// long enough for an honest answer on a loaded machine), each
// becomes unknown (agent-unreachable) through that deadline, and the worker
// is freed for the honest node queued behind them.
//
// Which timer fired is read from the reason, not from a clock: the
// per-challenge deadline says "context deadline exceeded", while the
// transport's own limits would say "TLS handshake timeout" (10 s) or
// "timeout awaiting response headers" (30 s).
func TestChallengeNeverAnswered(t *testing.T) {
	f := newFixture(t, integrity.Config{Timeout: 2 * time.Second, Concurrency: 1})
	f.addSim("answering")
	f.addSim("wedged-tls").setHang()
	f.addSim("wedged-tcp")
	h, err := f.srv.Store().GetHost(f.ctx, "wedged-tcp")
	if err != nil {
		t.Fatal(err)
	}
	h.URL = hungListener(t)
	if err := f.srv.Store().PutHost(f.ctx, h); err != nil {
		t.Fatal(err)
	}

	// The wedged nodes go first into the only worker.
	order := []string{"wedged-tcp", "wedged-tls", "answering"}
	for _, host := range order {
		f.srv.Integrity().Hello(host)
	}
	cache := f.srv.Integrity().Cache()
	waitFor(t, "a verdict for every node", func() bool {
		for _, host := range order {
			if _, ok := cache.Verdict(host); !ok {
				return false
			}
		}
		return true
	})
	for _, host := range order[:2] {
		v, _ := cache.Verdict(host)
		if v.Level != verdict.Unknown || len(v.Reasons) != 1 || v.Reasons[0].Code != verdict.CodeUnreachable ||
			!strings.Contains(v.Reasons[0].Message, "context deadline exceeded") {
			t.Errorf("%s: %s %+v, want unknown %s by the challenge deadline", host, v.Level, v.Reasons, verdict.CodeUnreachable)
		}
	}
	if v, _ := cache.Verdict("answering"); v.Level != verdict.Untrusted || v.Reasons[0].Code != verdict.CodeNoPolicy {
		t.Errorf("answering: %s %+v, want untrusted %s (attested; no policy yet)", v.Level, v.Reasons, verdict.CodeNoPolicy)
	}
	// An operator's attest of a wedged node answers too, and says why.
	if e := f.attest("wedged-tls"); e.Level != verdict.Unknown || e.Reasons[0].Code != verdict.CodeUnreachable {
		t.Errorf("POST /v1/hosts/wedged-tls/attest: %+v, want unknown %s", e, verdict.CodeUnreachable)
	}
}
