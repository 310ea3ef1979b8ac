package recorder

import (
	"testing"
	"time"

	"trustpool/internal/verdict"
)

// Host names are canonical in lower case: a scheduler asking with another
// spelling reads the same verdict.
func TestCacheFindsOtherSpellings(t *testing.T) {
	now := time.Now()
	c := NewCache(func() time.Time { return now })
	c.set(verdict.Verdict{Host: "compute-17", Level: verdict.Trusted, VTime: now, Expiry: now.Add(time.Minute)})
	for _, name := range []string{"compute-17", "Compute-17", "COMPUTE-17"} {
		if got := c.Level(name); got != verdict.Trusted {
			t.Errorf("Level(%q) = %s, want trusted", name, got)
		}
	}
	if got := c.Level("compute-18"); got != verdict.Unknown {
		t.Errorf("another host: %s, want unknown", got)
	}
}
