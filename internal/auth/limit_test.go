package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"trustpool/internal/auth"
)

// clock is a settable clock for tests.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// step is one Allow call after advancing the clock.
type step struct {
	advance time.Duration
	key     string
	want    bool
}

func TestLimiterAllow(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"burst then refused", 1, 3, []step{
			{0, "a", true}, {0, "a", true}, {0, "a", true}, {0, "a", false}, {0, "a", false},
		}},
		{"keys are independent", 1, 1, []step{
			{0, "a", true}, {0, "a", false}, {0, "b", true}, {0, "b", false},
		}},
		{"refills at the rate", 2, 1, []step{
			{0, "a", true}, {0, "a", false}, {250 * time.Millisecond, "a", false}, {250 * time.Millisecond, "a", true}, {0, "a", false},
		}},
		{"refill stops at the burst", 10, 2, []step{
			{0, "a", true}, {0, "a", true}, {time.Hour, "a", true}, {0, "a", true}, {0, "a", false},
		}},
		{"a clock going backwards adds nothing", 1, 1, []step{
			{0, "a", true}, {-time.Hour, "a", false}, {time.Hour, "a", false}, {time.Second, "a", true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l := auth.NewLimiter(tt.rate, tt.burst, c.Now)
			for i, s := range tt.steps {
				c.Advance(s.advance)
				if got := l.Allow(s.key); got != s.want {
					t.Fatalf("step %d (%+v): Allow = %v, want %v", i, s, got, s.want)
				}
			}
		})
	}
}

func TestLimiterForgetsIdleKeys(t *testing.T) {
	c := newClock()
	l := auth.NewLimiter(1, 5, c.Now) // an empty bucket refills in 5 s
	for _, k := range []string{"a", "b", "c"} {
		l.Allow(k)
	}
	if n := l.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	c.Advance(4 * time.Second)
	for range 5 {
		l.Allow("d") // d drains its bucket
	}
	if n := l.Len(); n != 4 {
		t.Fatalf("after 4 s: Len = %d, want 4 (nothing idle yet)", n)
	}
	c.Advance(2 * time.Second) // a, b, c are full again; d has 2 of 5
	for i, want := range []bool{true, true, false} {
		if got := l.Allow("d"); got != want {
			t.Fatalf("d, call %d: Allow = %v, want %v (it did not keep its drained bucket)", i, got, want)
		}
	}
	if n := l.Len(); n != 1 {
		t.Fatalf("after 6 s: Len = %d, want 1 (only d is still draining)", n)
	}
}

func TestLimiterOverflowSharesOneBucket(t *testing.T) {
	c := newClock()
	l := auth.NewLimiter(1, 2, c.Now)
	auth.SetMaxKeys(l, 2)
	l.Allow("a")
	l.Allow("b")
	// The table is full: every new key spends from one shared bucket of 2.
	for i, want := range []bool{true, true, false, false} {
		if got := l.Allow("new" + strconv.Itoa(i)); got != want {
			t.Fatalf("new key %d: Allow = %v, want %v", i, got, want)
		}
	}
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2 (bounded)", n)
	}
	// Tracked keys keep their own buckets.
	if !l.Allow("a") {
		t.Fatal("tracked key a refused while the overflow bucket is empty")
	}
	// Once a and b are idle, they are forgotten and new keys are tracked.
	c.Advance(time.Minute)
	l.Allow("c")
	if n := l.Len(); n != 1 {
		t.Fatalf("after idle: Len = %d, want 1", n)
	}
}

func TestLimiterMiddleware(t *testing.T) {
	c := newClock()
	l := auth.NewLimiter(0.1, 1, c.Now) // one every 10 s
	h := l.Middleware(auth.ClientKey)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	do := func(addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v1/enroll", nil)
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	tests := []struct {
		name       string
		advance    time.Duration
		addr       string
		want       int
		retryAfter string
	}{
		{"first", 0, "192.0.2.1:1000", http.StatusNoContent, ""},
		{"same address, other port", 0, "192.0.2.1:2000", http.StatusTooManyRequests, "10"},
		{"other address", 0, "192.0.2.2:1000", http.StatusNoContent, ""},
		{"retry after rounds up", 2500 * time.Millisecond, "192.0.2.1:1000", http.StatusTooManyRequests, "8"},
		{"refilled", 7500 * time.Millisecond, "192.0.2.1:1000", http.StatusNoContent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Advance(tt.advance)
			w := do(tt.addr)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want)
			}
			if got := w.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if tt.want == http.StatusTooManyRequests {
				var body struct{ Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == "" {
					t.Errorf("body %q: want a JSON error (%v)", w.Body, err)
				}
			}
		})
	}
}

func TestNewLimiterRejectsNonsense(t *testing.T) {
	for _, tt := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}} {
		t.Run(strconv.FormatFloat(tt.rate, 'g', -1, 64)+"/"+strconv.Itoa(tt.burst), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			auth.NewLimiter(tt.rate, tt.burst, nil)
		})
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct{ remote, want string }{
		{"192.0.2.7:4431", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7"},
		{"[fe80::1%eth0]:443", "fe80::/64"},
		{"not an address", "not an address"},
	}
	for _, tt := range tests {
		t.Run(tt.remote, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			r.Header.Set("X-Forwarded-For", "203.0.113.9")
			if got := auth.ClientKey(r); got != tt.want {
				t.Errorf("ClientKey = %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := auth.NewLimiter(1e9, 1<<30, nil)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "192.0.2." + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(keys[i&1023])
		i++
	}
}
