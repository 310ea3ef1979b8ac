package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/notify"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

var testSecret = []byte("0123456789abcdef-test-secret")

func TestConfigValidate(t *testing.T) {
	ok := "https://hooks.example/trustpool"
	s := newStore(t)
	for _, tc := range []struct {
		name string
		cfg  notify.Config
		want []string // substrings of the error; none = valid
	}{
		{"https", notify.Config{Targets: []string{ok}}, nil},
		{"http on 127.0.0.1", notify.Config{Targets: []string{"http://127.0.0.1:8080/h"}}, nil},
		{"http on ::1", notify.Config{Targets: []string{"http://[::1]:8080/h"}}, nil},
		{"http on localhost", notify.Config{Targets: []string{"http://localhost/h"}}, nil},
		{"several, secret, durations", notify.Config{Targets: []string{ok, "https://other.example/"}, Secret: testSecret,
			Poll: time.Second, MaxBackoff: time.Minute}, nil},
		{"no targets", notify.Config{}, []string{"no webhook targets"}},
		{"plain http elsewhere", notify.Config{Targets: []string{"http://hooks.example/h"}}, []string{"only on loopback"}},
		{"http on a name that is not localhost", notify.Config{Targets: []string{"http://127.0.0.1.nip.io/h"}}, []string{"only on loopback"}},
		{"other scheme", notify.Config{Targets: []string{"ftp://hooks.example/h"}}, []string{"scheme must be https"}},
		{"relative", notify.Config{Targets: []string{"/hook"}}, []string{"scheme must be https"}},
		{"no host", notify.Config{Targets: []string{"https:///hook"}}, []string{"no host"}},
		{"unparsable", notify.Config{Targets: []string{"https://a b/"}}, []string{`"https://a b/"`}},
		{"credentials", notify.Config{Targets: []string{"https://u:hunter2@hooks.example/"}}, []string{"credentials"}},
		{"duplicate", notify.Config{Targets: []string{ok, ok}}, []string{"listed twice"}},
		{"short secret", notify.Config{Targets: []string{ok}, Secret: []byte("pw")}, []string{"2 bytes"}},
		{"every problem at once", notify.Config{
			Targets: []string{"http://hooks.example/", "ftp://x/"}, Secret: []byte("short"),
			Poll: -time.Second, MaxBackoff: -time.Minute,
		}, []string{"only on loopback", "scheme must be https", "5 bytes", "poll interval -1s", "maximum backoff -1m0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() = %q leaks the URL's password", err)
			}
			if _, err := notify.New(tc.cfg, s); err == nil {
				t.Error("New accepted the invalid config")
			}
		})
	}
}

func TestPayloadGolden(t *testing.T) {
	v := verdict.Verdict{
		Host: "node7", Level: verdict.Untrusted,
		VTime:  time.Date(2026, 11, 3, 11, 15, 30, 123456000, time.FixedZone("CET", 3600)),
		Expiry: time.Date(2026, 11, 4, 10, 15, 30, 0, time.UTC),
		Reasons: []verdict.Reason{verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256",
			"PCR 18 (sha256) is 3fa4…, the approved vmm references allow 91bc… (kvm-6.8.0-41)")},
		Policy: "default@3",
	}
	v.Reasons[0].Class = "vmm"
	for _, tc := range []struct {
		name   string
		v      verdict.Verdict
		prev   verdict.Level
		golden string // file in testdata, or the literal JSON
	}{
		{"untrusted with reasons", v, verdict.Trusted, "payload.golden.json"},
		{"trusted has an empty reason list", verdict.Verdict{Host: "n", Level: verdict.Trusted, VTime: v.VTime},
			verdict.Unknown, `{"event":"trust_level_changed","host":"n","trust_lvl":"trusted","previous":"unknown","vtime":"2026-11-03T10:15:30.123456Z","reasons":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(notify.NewPayload(tc.v, tc.prev))
			if err != nil {
				t.Fatal(err)
			}
			want := []byte(tc.golden)
			if strings.HasSuffix(tc.golden, ".json") {
				if want, err = os.ReadFile(filepath.Join("testdata", tc.golden)); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, bytes.TrimSpace(want)) {
				t.Fatalf("payload\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestDeliveredOnceToEachTarget(t *testing.T) {
	clk := newClock()
	s := observe(newStore(t))
	a, b := newReceiver(t, clk), newReceiver(t, clk)
	// An hour's poll: only Changed's wake-up can make this delivery.
	n, err := notify.New(notify.Config{Targets: []string{a.URL(), b.URL()}, Secret: testSecret,
		Poll: time.Hour, Now: clk.Now, Log: testLog(t)}, s)
	if err != nil {
		t.Fatal(err)
	}
	run(t, n)
	v := transition(clk, "node1", verdict.Untrusted)
	n.Changed(v, verdict.Trusted)
	eventually(t, nil, 0, "a delivery to each target", func() bool {
		return len(a.delivered()) == 1 && len(b.delivered()) == 1
	})
	wantBody, _ := json.Marshal(notify.NewPayload(v, verdict.Trusted))
	ids := map[int64]bool{}
	for name, rc := range map[string]*receiver{"a": a, "b": b} {
		got := rc.attempts()
		if len(got) != 1 {
			t.Fatalf("receiver %s got %d requests, want 1", name, len(got))
		}
		ids[deliveryID(t, got[0])] = true
		if !bytes.Equal(got[0].body, wantBody) {
			t.Errorf("receiver %s got body %s, want %s", name, got[0].body, wantBody)
		}
		if !notify.VerifySignature(testSecret, got[0].body, got[0].signature) {
			t.Errorf("receiver %s: signature %q does not verify", name, got[0].signature)
		}
		if got[0].payload.Host != "node1" || got[0].payload.TrustLvl != verdict.Untrusted || got[0].payload.Previous != verdict.Trusted {
			t.Errorf("receiver %s got payload %+v", name, got[0].payload)
		}
	}
	if len(ids) != 2 {
		t.Errorf("delivery IDs %v: want one per target", ids)
	}
	// Both were recorded delivered: the outbox is empty, so nothing is
	// ever sent again.
	eventually(t, nil, 0, "both deliveries recorded", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.delivered) == 2
	})
	if p := pending(t, s); p != 0 {
		t.Errorf("%d notifications left in the outbox", p)
	}
}

func TestSignature(t *testing.T) {
	body := []byte(`{"event":"trust_level_changed"}`)
	sig := notify.Sign(testSecret, body)
	for _, tc := range []struct {
		name         string
		secret, body []byte
		header       string
		want         bool
	}{
		{"valid", testSecret, body, sig, true},
		{"upper-case hex", testSecret, body, "sha256=" + strings.ToUpper(strings.TrimPrefix(sig, "sha256=")), true},
		{"other secret", []byte("another-secret-0123456789"), body, sig, false},
		{"body changed", testSecret, []byte(`{"event":"trust_level_changed" }`), sig, false},
		{"no prefix", testSecret, body, strings.TrimPrefix(sig, "sha256="), false},
		{"sha1 prefix", testSecret, body, "sha1=" + strings.TrimPrefix(sig, "sha256="), false},
		{"truncated", testSecret, body, sig[:len(sig)-2], false},
		{"not hex", testSecret, body, "sha256=" + strings.Repeat("zz", 32), false},
		{"empty header", testSecret, body, "", false},
		{"empty secret", nil, body, notify.Sign(nil, body), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := notify.VerifySignature(tc.secret, tc.body, tc.header); got != tc.want {
				t.Fatalf("VerifySignature(%q) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	status := func(code int) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
	}
	for _, tc := range []struct {
		name string
		how  func(http.ResponseWriter, *http.Request)
	}{
		{"503", status(http.StatusServiceUnavailable)},
		{"400", status(http.StatusBadRequest)},
		{"redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}},
		{"connection closed", func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			s := observe(newStore(t))
			rc := newReceiver(t, clk)
			rc.setFail(failFirst(3, tc.how))
			n, err := notify.New(notify.Config{Targets: []string{rc.URL()}, Poll: time.Millisecond,
				MaxBackoff: 3 * time.Second, Now: clk.Now, Log: testLog(t)}, s)
			if err != nil {
				t.Fatal(err)
			}
			run(t, n)
			n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
			eventually(t, clk, 50*time.Millisecond, "delivery after three failures", func() bool {
				return len(rc.delivered()) == 1
			})
			got := rc.attempts()
			if len(got) != 4 {
				t.Fatalf("%d attempts, want 4 (3 failed, 1 delivered)", len(got))
			}
			// Backoff 1 s, 2 s, then 3 s (the cap), each at least 80 %.
			for i, want := range []time.Duration{800 * time.Millisecond, 1600 * time.Millisecond, 2400 * time.Millisecond} {
				if gap := got[i+1].at.Sub(got[i].at); gap < want {
					t.Errorf("retry %d came %v after the previous attempt, want at least %v", i+1, gap, want)
				}
			}
			id := deliveryID(t, got[0])
			for i, a := range got {
				if deliveryID(t, a) != id {
					t.Errorf("attempt %d has delivery ID %s, want %d on every attempt", i+1, a.delivery, id)
				}
			}
			eventually(t, nil, 0, "delivery recorded", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.delivered[id] == 1
			})
			if f := s.failures(); f != 3 {
				t.Errorf("%d failures recorded, want 3", f)
			}
			if p := pending(t, s); p != 0 {
				t.Errorf("%d notifications left in the outbox", p)
			}
		})
	}
}

// TestRestart closes the Notifier and the store with work pending, reopens
// both on the same file and checks that a new Notifier delivers it.
func TestRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before runs against the first Notifier and its receiver and
		// returns once the state to survive the restart is reached.
		before func(t *testing.T, n *notify.Notifier, s *observed, rc *receiver, clk *clock)
		// attempts is how many requests the receiver gets in all.
		attempts int
	}{
		{"enqueued, never sent", func(t *testing.T, n *notify.Notifier, s *observed, rc *receiver, clk *clock) {
			n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
		}, 1},
		{"failed before the restart", func(t *testing.T, n *notify.Notifier, s *observed, rc *receiver, clk *clock) {
			rc.setFail(failFirst(1000, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
			stop := run(t, n)
			n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
			eventually(t, nil, 0, "a recorded failure", func() bool { return s.failures() == 1 })
			stop()
			rc.setFail(nil)
		}, 2},
		{"claimed and in flight at shutdown", func(t *testing.T, n *notify.Notifier, s *observed, rc *receiver, clk *clock) {
			entered := make(chan struct{})
			rc.setFail(func(i int, w http.ResponseWriter, r *http.Request) bool {
				close(entered)
				<-r.Context().Done() // hang until the Notifier gives up
				return true
			})
			stop := run(t, n)
			n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
			<-entered
			stop()
			rc.setFail(nil)
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			path := filepath.Join(t.TempDir(), "trustpool.db")
			rc := newReceiver(t, clk)
			cfg := notify.Config{Targets: []string{rc.URL()}, Secret: testSecret, Poll: time.Millisecond,
				Now: clk.Now, Log: testLog(t)}

			s1 := observe(openStore(t, path))
			n1, err := notify.New(cfg, s1)
			if err != nil {
				t.Fatal(err)
			}
			tc.before(t, n1, s1, rc, clk)
			if err := s1.Close(); err != nil {
				t.Fatal(err)
			}

			s2 := observe(openStore(t, path))
			t.Cleanup(func() { s2.Close() })
			n2, err := notify.New(cfg, s2)
			if err != nil {
				t.Fatal(err)
			}
			run(t, n2)
			// Step a second at a time: through the backoff and, for the
			// notification claimed at shutdown, through its claim.
			eventually(t, clk, time.Second, "delivery after the restart", func() bool {
				return len(rc.delivered()) == 1
			})
			got := rc.attempts()
			if len(got) != tc.attempts {
				t.Errorf("%d requests, want %d", len(got), tc.attempts)
			}
			if last := got[len(got)-1]; !notify.VerifySignature(testSecret, last.body, last.signature) ||
				last.payload.Host != "node1" || last.delivery != got[0].delivery {
				t.Errorf("delivered %+v, want node1's signed notification with the first attempt's ID %s", last, got[0].delivery)
			}
			eventually(t, nil, 0, "delivery recorded", func() bool {
				s2.mu.Lock()
				defer s2.mu.Unlock()
				return len(s2.delivered) == 1
			})
			if p := pending(t, s2); p != 0 {
				t.Errorf("%d notifications left in the outbox", p)
			}
		})
	}
}

// TestOrderPerHost: while a notification to a target is failing, later ones
// to that target wait for it, so each host's transitions arrive in order.
func TestOrderPerHost(t *testing.T) {
	clk := newClock()
	s := observe(newStore(t))
	rc := newReceiver(t, clk)
	rc.setFail(failFirst(3, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	n, err := notify.New(notify.Config{Targets: []string{rc.URL()}, Poll: time.Millisecond,
		Now: clk.Now, Log: testLog(t)}, s)
	if err != nil {
		t.Fatal(err)
	}
	run(t, n)
	n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
	eventually(t, nil, 0, "the first failure recorded", func() bool { return s.failures() == 1 })
	// These are due now, before the failed one's retry: they must wait.
	clk.Advance(time.Millisecond)
	n.Changed(transition(clk, "node1", verdict.Trusted), verdict.Untrusted)
	clk.Advance(time.Millisecond)
	n.Changed(transition(clk, "node2", verdict.Untrusted), verdict.Trusted)
	clk.Advance(time.Millisecond)
	n.Changed(transition(clk, "node1", verdict.Untrusted), verdict.Trusted)
	eventually(t, clk, 100*time.Millisecond, "four deliveries", func() bool { return len(rc.delivered()) == 4 })

	var order []string
	for _, a := range rc.delivered() {
		order = append(order, a.payload.Host+":"+string(a.payload.TrustLvl))
	}
	want := []string{"node1:untrusted", "node1:trusted", "node2:untrusted", "node1:untrusted"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("delivered %v, want %v", order, want)
	}
	// Nothing after the first was even attempted before it got through:
	// three failures and the success of the first, then one each.
	got := rc.attempts()
	if len(got) != 7 {
		t.Fatalf("%d requests, want 7", len(got))
	}
	for i, a := range got[:4] {
		if a.delivery != got[0].delivery {
			t.Errorf("request %d is delivery %s (%s:%s), want only the first (%s) until it is delivered",
				i+1, a.delivery, a.payload.Host, a.payload.TrustLvl, got[0].delivery)
		}
	}
}

// TestDropsRemovedTarget: notifications for a webhook the operator removed
// are discarded, not sent.
func TestDropsRemovedTarget(t *testing.T) {
	clk := newClock()
	s := observe(newStore(t))
	old, current := newReceiver(t, clk), newReceiver(t, clk)
	id, err := s.Enqueue(context.Background(), store.Notification{Target: old.URL(), Body: []byte(`{}`), CreatedAt: clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := notify.New(notify.Config{Targets: []string{current.URL()}, Poll: time.Millisecond, Now: clk.Now}, s)
	if err != nil {
		t.Fatal(err)
	}
	run(t, n)
	eventually(t, nil, 0, "the stale notification dropped", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.delivered[id] == 1
	})
	if got := len(old.attempts()) + len(current.attempts()); got != 0 {
		t.Errorf("%d requests sent for a removed target, want 0", got)
	}
}

// started is a store that reports the first Due, which Run makes once it
// owns the Notifier.
type started struct {
	notify.Store
	once sync.Once
	ch   chan struct{}
}

func (s *started) Due(ctx context.Context, now time.Time, hold time.Duration, limit int) ([]store.Notification, error) {
	s.once.Do(func() { close(s.ch) })
	return s.Store.Due(ctx, now, hold, limit)
}

func TestRunTwice(t *testing.T) {
	s := &started{Store: newStore(t), ch: make(chan struct{})}
	n, err := notify.New(notify.Config{Targets: []string{"https://hooks.example/"}, Poll: time.Hour}, s)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	stop := run(t, n)
	<-s.ch
	if err := n.Run(cancelled); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v, want an error", err)
	}
	stop()
	if err := n.Run(cancelled); err != nil {
		t.Errorf("Run after the first returned = %v, want nil", err)
	}
}
