package agent

import (
	"testing"
	"time"
)

// TestRetryDelay: 1 s doubling to 60 s, within ±20 %.
func TestRetryDelay(t *testing.T) {
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60, 1000: 60}
	for n, w := range want {
		if w == 0 {
			continue
		}
		w *= time.Second
		for _, j := range []float64{-1, 0, 0.999} {
			got := RetryDelay(n, j)
			lo, hi := time.Duration(float64(w)*0.8), time.Duration(float64(w)*1.2)
			if got < lo || got > hi || (j == 0 && got != w) {
				t.Errorf("retry %d with jitter %v: %v, want %v ±20%%", n, j, got, w)
			}
		}
	}
}
