package tamper_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify/verifytest"
)

// pushNode is a simulated push-mode node: no listener, only its
// certificate and its software AK.
type pushNode struct {
	name string
	node *verifytest.Node
	cert *tls.Certificate
	http *http.Client
}

// addPushNode stores an active push host as enrollment in push mode would
// have admitted it (no URL); dropPush deletes it.
func (f *fixture) addPushNode(t *testing.T, name string) *pushNode {
	t.Helper()
	n := &pushNode{name: name, node: identicalNode(t)}
	certPEM, cert := f.agentCert(name)
	n.cert, n.http = cert, f.clientWithCert(cert)
	now := f.clock.Now()
	if err := f.srv.Store().PutHost(f.ctx, store.Host{
		Name: name, State: store.HostActive, Mode: store.ModePush, EKPublic: []byte("simulated EK of " + name),
		AKPublic: n.node.AK.Public(), AKName: n.node.AK.Name(), AgentCert: certPEM, CreatedAt: now, UpdatedAt: now,
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// dropPush wraps a push case: the push hosts it added are deleted before
// the matrix checks what the case left.
func dropPush(run func(t *testing.T, f *fixture)) func(t *testing.T, f *fixture) {
	return func(t *testing.T, f *fixture) {
		defer func() {
			for _, name := range []string{"push1", "push2"} {
				if _, err := f.srv.Store().GetHost(f.ctx, name); err != nil {
					continue
				}
				if code, body := f.call("DELETE", "/v1/hosts/"+name, nil); code != http.StatusNoContent {
					t.Errorf("delete %s: %d %s", name, code, body)
				}
			}
		}()
		run(t, f)
	}
}

// pushCall posts body to path presenting client's certificate.
func (f *fixture) pushCall(client *http.Client, path string, body any) (int, []byte) {
	f.t.Helper()
	req := f.request("POST", path, body)
	req.Header.Del("Authorization")
	return f.send(req, client)
}

// challenge fetches a challenge for host with as's certificate.
func (f *fixture) challenge(t *testing.T, as *pushNode, host string) evidence.Challenge {
	t.Helper()
	code, body := f.pushCall(as.http, "/v1/push/challenge", evidence.PushHost{Host: host})
	var c evidence.Challenge
	if code != http.StatusOK || json.Unmarshal(body, &c) != nil {
		t.Fatalf("challenge for %s as %s: %d %s", host, as.name, code, body)
	}
	return c
}

// answer is n's honest evidence for c.
func answer(t *testing.T, n *pushNode, c evidence.Challenge) *evidence.Evidence {
	t.Helper()
	ev, err := n.node.EvidenceFor(c.Nonce, c.Selection)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// push posts ev for host answering nonce with as's certificate.
func (f *fixture) push(t *testing.T, as *pushNode, host string, nonce []byte, ev *evidence.Evidence) (int, api.PushVerdict) {
	t.Helper()
	code, body := f.pushCall(as.http, "/v1/push/evidence", evidence.PushEvidence{Host: host, Nonce: nonce, Evidence: ev})
	var v api.PushVerdict
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("push answer %s: %v", body, err)
		}
	}
	return code, v
}

// pushCases attack push mode: the nonces, the host binding, the limits
// and the schedule's freshness rules of pull mode must all hold.
func pushCases() []tamperCase {
	return []tamperCase{
		{name: "push-honest-and-unpredictable", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n := f.addPushNode(t, "push1")
			c1, c2 := f.challenge(t, n, "push1"), f.challenge(t, n, "push1")
			if len(c1.Nonce) != 32 || bytes.Equal(c1.Nonce, c2.Nonce) {
				t.Fatalf("push nonces %x and %x: want 32 random bytes each", c1.Nonce, c2.Nonce)
			}
			code, v := f.push(t, n, "push1", c2.Nonce, answer(t, n, c2))
			if code != http.StatusOK || v.Level != verdict.Trusted {
				t.Fatalf("honest push: %d %+v, want trusted", code, v)
			}
			if now := f.clock.Now(); !v.Next.After(now) || v.NextIn <= 0 {
				t.Fatalf("push answer says come back at %v (in %v s), want after %v", v.Next, v.NextIn, now)
			}
		})},
		{name: "push-replayed-challenge", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n := f.addPushNode(t, "push1")
			c := f.challenge(t, n, "push1")
			ev := answer(t, n, c)
			if code, v := f.push(t, n, "push1", c.Nonce, ev); code != http.StatusOK || v.Level != verdict.Trusted {
				t.Fatalf("first push: %d %+v", code, v)
			}
			code, v := f.push(t, n, "push1", c.Nonce, ev)
			if code != http.StatusOK || v.Level != verdict.Untrusted || !hasReason(v.Reasons, verdict.CodeNonceReused, -1, "") {
				t.Fatalf("replayed push: %d %+v, want untrusted %s", code, v, verdict.CodeNonceReused)
			}
		})},
		{name: "push-evidence-with-another-hosts-certificate", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n1, n2 := f.addPushNode(t, "push1"), f.addPushNode(t, "push2")
			c := f.challenge(t, n1, "push1")
			if code, _ := f.pushCall(n2.http, "/v1/push/challenge", evidence.PushHost{Host: "push1"}); code != http.StatusUnauthorized {
				t.Errorf("push2's certificate fetching push1's challenge: %d, want 401", code)
			}
			if code, _ := f.push(t, n2, "push1", c.Nonce, answer(t, n1, c)); code != http.StatusUnauthorized {
				t.Fatalf("push1's evidence with push2's certificate: %d, want 401", code)
			}
			if code, _ := f.pushCall(n2.http, "/v1/push/wait", evidence.PushHost{Host: "push1"}); code != http.StatusUnauthorized {
				t.Errorf("push2's certificate waiting as push1: %d, want 401", code)
			}
		})},
		{name: "push-challenge-answered-by-another-host", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n1, n2 := f.addPushNode(t, "push1"), f.addPushNode(t, "push2")
			c := f.challenge(t, n2, "push2")
			code, v := f.push(t, n1, "push1", c.Nonce, answer(t, n1, c))
			if code != http.StatusOK || v.Level != verdict.Untrusted || !hasReason(v.Reasons, verdict.CodeNonceReused, -1, "") {
				t.Fatalf("push1 answering push2's challenge: %d %+v, want untrusted %s", code, v, verdict.CodeNonceReused)
			}
		})},
		{name: "push-challenge-flood", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n := f.addPushNode(t, "push1")
			for range integrity.MaxOutstandingPush {
				f.challenge(t, n, "push1")
			}
			if code, body := f.pushCall(n.http, "/v1/push/challenge", evidence.PushHost{Host: "push1"}); code != http.StatusTooManyRequests {
				t.Fatalf("challenge %d: %d %s, want 429", integrity.MaxOutstandingPush+1, code, body)
			}
			// Expired challenges no longer count.
			f.clock.Add(time.Minute)
			f.challenge(t, n, "push1")
		})},
		{name: "push-oversized-evidence", admits: true, run: dropPush(func(t *testing.T, f *fixture) {
			n := f.addPushNode(t, "push1")
			c := f.challenge(t, n, "push1")
			ev := answer(t, n, c)
			ev.EventLog = bytes.Repeat([]byte{1}, evidence.MaxBody)
			if code, _ := f.push(t, n, "push1", c.Nonce, ev); code != http.StatusRequestEntityTooLarge {
				t.Fatalf("oversized push: %d, want 413", code)
			}
		})},
		// A push node that stops pushing: the server dials nobody, and its
		// verdict expires to unknown through the recorder's expiry queue.
		{name: "push-silent-past-deadline", admits: true, victims: []string{"sim1", "sim2", "node1", "node2", "node3"}, run: dropPush(func(t *testing.T, f *fixture) {
			n := f.addPushNode(t, "push1")
			c := f.challenge(t, n, "push1")
			if code, v := f.push(t, n, "push1", c.Nonce, answer(t, n, c)); code != http.StatusOK || v.Level != verdict.Trusted {
				t.Fatalf("push: %d %+v", code, v)
			}
			f.clock.Add(validity + time.Second)
			deadline := time.Now().Add(10 * time.Second)
			for {
				v, _ := f.srv.Integrity().Cache().Verdict("push1")
				if v.Level == verdict.Unknown && hasReason(v.Reasons, verdict.CodeExpired, -1, "") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("silent push node past its verdict's expiry: recorded %s %v, want unknown %s", v.Level, reasonCodes(v.Reasons), verdict.CodeExpired)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})},
	}
}
