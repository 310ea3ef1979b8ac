package auth

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// DefaultMaxKeys bounds how many keys a Limiter tracks at once: about 100
// bytes each, so some 6 MB at most.
const DefaultMaxKeys = 1 << 16

// fullSweepEvery is how often, at most, a Limiter whose table is full scans
// it for idle keys; it bounds the work a flood of new keys can cause.
const fullSweepEvery = time.Second

// Limiter is a token bucket per key (a client address, say): each key may
// spend Burst events at once and regains rate events a second. Memory is
// bounded: a key whose bucket has refilled is idle and is forgotten (it
// would start full anyway), and while DefaultMaxKeys active keys are
// tracked, every new key shares one overflow bucket — a flood of distinct
// keys is then limited as a whole instead of growing the table or evicting
// a busy key (which would reset its limit). It is safe for concurrent use.
type Limiter struct {
	rate    float64 // tokens a second
	burst   float64
	idle    time.Duration // an empty bucket refills in this time
	maxKeys int
	now     func() time.Time

	mu        sync.Mutex // guards buckets, overflow and lastSweep
	buckets   map[string]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time // when tokens was last brought up to date
}

// refill brings b up to now. A clock that went backwards adds nothing.
func (b *bucket) refill(now time.Time, rate, burst float64) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(burst, b.tokens+dt.Seconds()*rate)
		b.last = now
	}
}

// NewLimiter returns a Limiter allowing rate events a second per key after a
// burst of burst. It panics unless rate > 0 and burst >= 1: a limiter that
// never refills or never admits is a programming error. now is the clock
// (time.Now when nil).
func NewLimiter(rate float64, burst int, now func() time.Time) *Limiter {
	if !(rate > 0) || burst < 1 {
		panic("auth.NewLimiter: rate must be positive and burst at least 1")
	}
	if now == nil {
		now = time.Now
	}
	t := now()
	return &Limiter{
		rate:      rate,
		burst:     float64(burst),
		idle:      time.Duration(float64(burst) / rate * float64(time.Second)),
		maxKeys:   DefaultMaxKeys,
		now:       now,
		buckets:   make(map[string]*bucket),
		overflow:  bucket{tokens: float64(burst), last: t},
		lastSweep: t,
	}
}

// Allow spends one event of key's allowance and reports whether there was
// one.
func (l *Limiter) Allow(key string) bool {
	ok, _ := l.take(key, true)
	return ok
}

// take reports whether key has an event left and, if not, how long until it
// has. With spend it uses the event; without, it only looks (and an unknown
// key is not added).
func (l *Limiter) take(key string, spend bool) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	b, ok := l.buckets[key]
	switch {
	case ok:
	case len(l.buckets) >= l.maxKeys:
		b = &l.overflow
	case !spend:
		return true, 0 // an untracked key has a full bucket
	default:
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	if spend {
		b.tokens--
	}
	return true, 0
}

// sweep forgets idle keys: every idle period, and at most every
// fullSweepEvery while the table is full.
func (l *Limiter) sweep(now time.Time) {
	since := now.Sub(l.lastSweep)
	if since < l.idle && (len(l.buckets) < l.maxKeys || since < fullSweepEvery) {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}

// Len is the number of keys tracked now.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Middleware returns middleware that spends one event of keyFn(r) per
// request and answers 429 with Retry-After and a JSON error when there is
// none left. ClientKey is the usual keyFn.
func (l *Limiter) Middleware(keyFn func(*http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ok, wait := l.take(keyFn(r), true); !ok {
				tooMany(w, wait, "rate limit exceeded")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// ClientKey is the rate-limiting key of r's client: the TCP peer's IP
// address, or its /64 network for IPv6, since one host usually holds a whole
// /64. Forwarding headers are ignored: the server faces clients directly, so
// they would let a client choose its own key.
func ClientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
