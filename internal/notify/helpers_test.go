package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"trustpool/internal/notify"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// clock is a manual clock the tests advance.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock {
	return &clock{now: time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// eventually waits up to 20 s (real time) for cond, advancing the clock by
// step before each check so that retries and claims come due.
func eventually(t testing.TB, clk *clock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
		if clk != nil && step > 0 {
			clk.Advance(step)
		}
	}
}

// openStore opens (or reopens) the SQLite store at path.
func openStore(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

// newStore opens a store in a temporary directory, closed at cleanup.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	s := openStore(t, filepath.Join(t.TempDir(), "trustpool.db"))
	t.Cleanup(func() { s.Close() })
	return s
}

// observed is the real store, with a record of the outcomes the Notifier
// wrote, so tests can wait for them.
type observed struct {
	*store.Store
	mu        sync.Mutex // guards failed, delivered
	failed    map[int64]int
	delivered map[int64]int
}

func observe(s *store.Store) *observed {
	return &observed{Store: s, failed: map[int64]int{}, delivered: map[int64]int{}}
}

func (o *observed) MarkFailed(ctx context.Context, id int64, next time.Time, msg string) error {
	err := o.Store.MarkFailed(ctx, id, next, msg)
	if err == nil {
		o.mu.Lock()
		o.failed[id]++
		o.mu.Unlock()
	}
	return err
}

func (o *observed) MarkDelivered(ctx context.Context, id int64) error {
	err := o.Store.MarkDelivered(ctx, id)
	if err == nil {
		o.mu.Lock()
		o.delivered[id]++
		o.mu.Unlock()
	}
	return err
}

func (o *observed) failures() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, c := range o.failed {
		n += c
	}
	return n
}

// attempt is one request a receiver got.
type attempt struct {
	delivery  string
	signature string
	body      []byte
	payload   notify.Payload
	at        time.Time // on the test clock
	ok        bool      // answered 2xx
}

// receiver is a webhook endpoint on loopback. fail decides, per attempt
// number (1-based), how to fail; nil answers 204.
type receiver struct {
	srv  *httptest.Server
	clk  *clock
	mu   sync.Mutex // guards got, fail
	got  []attempt
	fail func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newReceiver(t testing.TB, clk *clock) *receiver {
	rc := &receiver{clk: clk}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hook" }

func (rc *receiver) setFail(f func(n int, w http.ResponseWriter, r *http.Request) bool) {
	rc.mu.Lock()
	rc.fail = f
	rc.mu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a := attempt{delivery: r.Header.Get(notify.HeaderDelivery), signature: r.Header.Get(notify.HeaderSignature), body: body}
	if rc.clk != nil {
		a.at = rc.clk.Now()
	}
	_ = json.Unmarshal(body, &a.payload)
	rc.mu.Lock()
	fail := rc.fail
	n := len(rc.got) + 1
	rc.got = append(rc.got, a)
	rc.mu.Unlock()
	if fail != nil && fail(n, w, r) {
		return
	}
	rc.mu.Lock()
	rc.got[n-1].ok = true
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) attempts() []attempt {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]attempt(nil), rc.got...)
}

// delivered is the attempts answered 2xx, in order.
func (rc *receiver) delivered() []attempt {
	var ok []attempt
	for _, a := range rc.attempts() {
		if a.ok {
			ok = append(ok, a)
		}
	}
	return ok
}

// failFirst fails the first n attempts with how.
func failFirst(n int, how func(w http.ResponseWriter, r *http.Request)) func(int, http.ResponseWriter, *http.Request) bool {
	return func(i int, w http.ResponseWriter, r *http.Request) bool {
		if i > n {
			return false
		}
		how(w, r)
		return true
	}
}

// run starts n.Run and returns a function that stops it and waits.
func run(t testing.TB, n *notify.Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// transition is a verdict change of host to level at the clock's time.
func transition(clk *clock, host string, level verdict.Level) verdict.Verdict {
	now := clk.Now()
	v := verdict.Verdict{Host: host, Level: level, VTime: now, Expiry: now.Add(time.Hour)}
	if level == verdict.Untrusted {
		v.Reasons = []verdict.Reason{verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256", "PCR 18 is not approved")}
	}
	return v
}

// pending is how many notifications the outbox holds, due or not. It claims
// them for a moment in the far future, so use it only once deliveries are
// over.
func pending(t testing.TB, s notify.Store) int {
	t.Helper()
	ns, err := s.Due(context.Background(), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), time.Second, 1000)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return len(ns)
}

func deliveryID(t testing.TB, a attempt) int64 {
	t.Helper()
	id, err := strconv.ParseInt(a.delivery, 10, 64)
	if err != nil {
		t.Fatalf("%s %q is not an outbox ID: %v", notify.HeaderDelivery, a.delivery, err)
	}
	return id
}
