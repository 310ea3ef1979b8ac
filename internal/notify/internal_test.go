package notify

import (
	"strings"
	"testing"
	"time"

	"trustpool/internal/store"
)

func TestBackoff(t *testing.T) {
	const cap5m = 5 * time.Minute
	for _, tc := range []struct {
		attempts int
		max      time.Duration
		jitter   float64
		want     time.Duration
	}{
		{0, cap5m, 0, time.Second},
		{1, cap5m, 0, 2 * time.Second},
		{2, cap5m, 0, 4 * time.Second},
		{8, cap5m, 0, 256 * time.Second},
		{9, cap5m, 0, cap5m},  // 512 s, capped
		{31, cap5m, 0, cap5m}, // 1 s << 31 still fits
		{40, cap5m, 0, cap5m}, // would overflow the shift
		{1 << 30, cap5m, 0, cap5m},
		{0, cap5m, 0.5, 900 * time.Millisecond},
		{2, cap5m, 0.999999, 3200 * time.Millisecond},          // never below 80 %
		{0, 300 * time.Millisecond, 0, 300 * time.Millisecond}, // cap below the first step
	} {
		t.Run(time.Duration(tc.attempts).String()+"/"+tc.max.String(), func(t *testing.T) {
			if got := backoff(tc.attempts, tc.max, tc.jitter); got != tc.want {
				t.Fatalf("backoff(%d, %v, %v) = %v, want %v", tc.attempts, tc.max, tc.jitter, got, tc.want)
			}
		})
	}
}

func TestTargetBlocks(t *testing.T) {
	at := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	const hold = 30 * time.Second
	for _, tc := range []struct {
		name    string
		failing int64
		id      int64
		now     time.Time
		want    bool
	}{
		{"nothing failed", 0, 7, at, false},
		{"later one, before the retry", 5, 7, at.Add(-time.Second), true},
		{"later one, retry due but not made yet", 5, 7, at.Add(time.Second), true},
		{"the failed one itself", 5, 5, at, false},
		{"an earlier one", 5, 3, at, false},
		{"failed one never came back within a hold", 5, 7, at.Add(hold), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := &target{failing: tc.failing, failingUntil: at}
			if got := tg.blocks(store.Notification{ID: tc.id}, tc.now, hold); got != tc.want {
				t.Fatalf("blocks = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int // length in bytes
	}{
		{"short", "503 Service Unavailable", 23},
		{"exactly the limit", strings.Repeat("x", maxErrLen), maxErrLen},
		{"long", strings.Repeat("x", 10*maxErrLen), maxErrLen + len("…")},
		{"cut inside a rune", strings.Repeat("x", maxErrLen-1) + "é" + "tail", maxErrLen - 1 + len("…")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := truncate(tc.in); len(got) != tc.want || !strings.HasPrefix(tc.in, strings.TrimSuffix(got, "…")) {
				t.Fatalf("truncate gave %d bytes %q…, want %d bytes of the input", len(got), got[:min(len(got), 20)], tc.want)
			}
		})
	}
}
