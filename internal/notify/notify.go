// Package notify delivers trust-level transitions to operators' webhooks, at
// least once.
//
// A host that turns untrusted after a workload was placed on it must be acted
// on (OpenStack's OSSN-0059 describes the gap: schedulers only look at trust
// when placing). Changed turns each transition into one JSON notification per
// configured target and writes it to the store's outbox; Run delivers what is
// due, retries failures with exponential backoff and survives restarts because
// the outbox, not memory, is the source of truth. Receivers may see a
// notification more than once (after a crash, a lost acknowledgement or a
// lapsed claim) and deduplicate on the X-Trustpool-Delivery header.
//
// What is trusted: the targets and the secret come from the operator's
// configuration; the outbox rows were written by this package. Receivers are
// not trusted: only their status code is read, and their answers are never
// parsed.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultPoll       = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// MinSecretLen is the shortest HMAC key accepted: a shorter one is a
	// password, not a key.
	MinSecretLen = 16
)

// Event is the value of the "event" field of every payload.
const Event = "trust_level_changed"

// Config configures a Notifier.
type Config struct {
	// Targets are the webhook URLs; every transition is sent to each. They
	// must be https, or http on a loopback address, without credentials
	// (those would end up in the database and the logs: use Secret).
	Targets []string
	// Secret, when set, is the HMAC-SHA256 key that signs every body; the
	// signature goes in the X-Trustpool-Signature header.
	Secret []byte
	// Client sends the requests. Default: a client with a 10 s timeout that
	// does not follow redirects (a redirect is a failed delivery).
	Client *http.Client
	// Poll is how often the outbox is checked for due notifications
	// (default 1 s). Changed wakes the deliverer at once regardless.
	Poll time.Duration
	// MaxBackoff caps the wait between retries (default 5 min). Retries
	// wait 1 s, 2 s, 4 s … up to MaxBackoff, each shortened by up to 20 %
	// at random so that many failures do not retry in step.
	MaxBackoff time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives delivery failures and lost notifications (default: discard).
	Log *slog.Logger
	// Attempted, when set, is told of every delivery attempt: delivered
	// (a 2xx answer) or not (package metrics).
	Attempted func(delivered bool)
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Targets) == 0 {
		errs = append(errs, errors.New("no webhook targets"))
	}
	seen := make(map[string]bool, len(c.Targets))
	for _, t := range c.Targets {
		if err := validTarget(t); err != nil {
			errs = append(errs, err)
		}
		if seen[t] {
			errs = append(errs, fmt.Errorf("webhook target %q is listed twice", t))
		}
		seen[t] = true
	}
	if n := len(c.Secret); n > 0 && n < MinSecretLen {
		errs = append(errs, fmt.Errorf("webhook secret is %d bytes: use at least %d", n, MinSecretLen))
	}
	if c.Poll < 0 {
		errs = append(errs, fmt.Errorf("poll interval %v is negative", c.Poll))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("maximum backoff %v is negative", c.MaxBackoff))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("notify config: %w", err)
	}
	return nil
}

// validTarget accepts https URLs, and http ones only on loopback, where
// nobody else can read or change the notification on the way.
func validTarget(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook target %q: %w", raw, err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("webhook target %q: scheme must be https (or http on loopback)", raw)
	case u.Hostname() == "":
		return fmt.Errorf("webhook target %q: no host", raw)
	case u.User != nil:
		return fmt.Errorf("webhook target %q: credentials in the URL would be stored and logged: use the webhook secret", u.Redacted())
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return fmt.Errorf("webhook target %q: plain http is allowed only on loopback: use https", raw)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Store is the outbox the Notifier needs; *store.Store implements it.
type Store interface {
	Enqueue(ctx context.Context, n store.Notification) (int64, error)
	// Due claims up to limit due notifications for hold.
	Due(ctx context.Context, now time.Time, hold time.Duration, limit int) ([]store.Notification, error)
	MarkDelivered(ctx context.Context, id int64) error
	MarkFailed(ctx context.Context, id int64, nextAttempt time.Time, lastErr string) error
}

// Payload is the JSON body of every notification.
type Payload struct {
	Event    string        `json:"event"` // always Event
	Host     string        `json:"host"`
	TrustLvl verdict.Level `json:"trust_lvl"`
	Previous verdict.Level `json:"previous"`
	// VTime is when the new verdict was established (RFC 3339, UTC). A
	// receiver that already applied a later VTime for this host ignores
	// the notification: ordering is not guaranteed across restarts.
	VTime   time.Time        `json:"vtime"`
	Reasons []verdict.Reason `json:"reasons"` // empty, never null, when trusted
}

// NewPayload is the payload that reports v replacing a verdict of level prev.
func NewPayload(v verdict.Verdict, prev verdict.Level) Payload {
	reasons := v.Reasons
	if reasons == nil {
		reasons = []verdict.Reason{}
	}
	return Payload{Event: Event, Host: v.Host, TrustLvl: v.Level, Previous: prev, VTime: v.VTime.UTC(), Reasons: reasons}
}

// Notifier turns verdict transitions into webhook deliveries.
type Notifier struct {
	cfg     Config
	store   Store
	timeout time.Duration // per request
	hold    time.Duration // how long Due claims a notification
	targets map[string]*target
	wake    chan struct{} // Changed → Run: something new is due
	running atomic.Bool   // Run is active (its workers own the targets' state)

	// mu guards inflight (the IDs claimed and handed to a worker, not
	// finished yet) and every target's queue. dispatch holds it across Due,
	// and a worker across writing an outcome, so that the two never
	// interleave (see finish).
	mu       sync.Mutex
	inflight map[int64]struct{}
	// queued is len(inflight), kept beside it for InFlight, which must
	// not wait for mu (held across store calls).
	queued atomic.Int64
}

// InFlight is the number of notifications claimed from the outbox and not
// yet delivered or failed (at most 4096; the rest wait in the outbox).
func (n *Notifier) InFlight() int { return int(n.queued.Load()) }

// target is one webhook URL and its delivery queue.
type target struct {
	url   string
	queue []store.Notification // guarded by Notifier.mu; in claim order
	ready chan struct{}        // a wake-up for the worker: queue grew
	// failing, failingUntil and lastErr are touched only by the target's
	// worker. After notification failing failed, later ones (higher IDs)
	// to this target are put off until it has been tried again, which
	// keeps them in order; failingUntil is its retry time.
	failing      int64
	failingUntil time.Time
	lastErr      string
}

// blocks reports whether a failed notification still holds back nt. A
// failed notification that is not handed out again within a claim's hold
// after its retry time is gone (another replica delivered it) and holds
// nothing back any more.
func (t *target) blocks(nt store.Notification, now time.Time, hold time.Duration) bool {
	if t.failing == 0 || nt.ID <= t.failing {
		return false
	}
	if !now.Before(t.failingUntil.Add(hold)) {
		t.failing = 0
		return false
	}
	return true
}

// Tuning. Notifications are claimed dueBatch at a time, up to maxInflight
// claimed and unfinished (the rest wait in the outbox, in order); Changed
// waits at most enqueueTimeout for the store.
const (
	dueBatch       = 64
	maxInflight    = 4096
	enqueueTimeout = 5 * time.Second
	markTimeout    = 5 * time.Second
	minHold        = 30 * time.Second
	maxErrLen      = 512
)

// New validates cfg, fills in defaults and returns a Notifier over s.
func New(cfg Config, s Store) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if s == nil {
		return nil, errors.New("notify: nil store")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout:       DefaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.Targets = append([]string(nil), cfg.Targets...)
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	timeout := cfg.Client.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	n := &Notifier{
		cfg: cfg, store: s, timeout: timeout,
		// Long enough for one delivery and the next poll, after which
		// dispatch renews the claim of what is still queued.
		hold:     max(minHold, 3*timeout),
		targets:  make(map[string]*target, len(cfg.Targets)),
		wake:     make(chan struct{}, 1),
		inflight: map[int64]struct{}{},
	}
	for _, u := range cfg.Targets {
		n.targets[u] = &target{url: u, ready: make(chan struct{}, 1)}
	}
	return n, nil
}

// now is the clock at the store's precision, so that times compared in
// memory and in the outbox agree.
func (n *Notifier) now() time.Time { return store.Truncate(n.cfg.Now()) }

// Notifications are the outbox rows that report v replacing a verdict of
// level prev: one per target. The recorder writes them in the verdict's
// own transaction (so none is lost) and then calls Wake.
func (n *Notifier) Notifications(v verdict.Verdict, prev verdict.Level) []store.Notification {
	body, err := json.Marshal(NewPayload(v, prev))
	if err != nil { // only reachable with a broken Level or Reason type
		n.cfg.Log.Error("webhook notification lost: encode payload", "host", v.Host, "err", err)
		return nil
	}
	now := n.now()
	out := make([]store.Notification, 0, len(n.cfg.Targets))
	for _, t := range n.cfg.Targets {
		out = append(out, store.Notification{Target: t, Body: body, CreatedAt: now})
	}
	return out
}

// Wake makes Run look at the outbox now: something new is due.
func (n *Notifier) Wake() {
	select {
	case n.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Changed enqueues the Notifications of a transition by themselves, outside
// any transaction of the change (a failed insert is logged and that
// notification lost), and wakes Run. It is for callers without a recorder;
// the server's transitions come through Notifications.
func (n *Notifier) Changed(v verdict.Verdict, prev verdict.Level) {
	ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
	defer cancel()
	for _, nt := range n.Notifications(v, prev) {
		if _, err := n.store.Enqueue(ctx, nt); err != nil {
			n.cfg.Log.Error("webhook notification lost", "host", v.Host, "level", v.Level, "target", nt.Target, "err", err)
		}
	}
	n.Wake()
}

// truncate bounds an error kept in the outbox: receivers' status lines and
// transport errors are not ours to size.
func truncate(s string) string {
	if len(s) <= maxErrLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrLen], "") + "…"
}
