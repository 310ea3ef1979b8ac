package fleetsim_test

import (
	"os"
	"path/filepath"
	"testing"

	"trustpool/internal/fleetsim"
)

// TestKeyCacheSlices: a cache filled once is read by slices, which are the
// keys RSAKeys returns at those places; reading never writes the cache, and
// a slice past its end is an error rather than keys generated elsewhere.
func TestKeyCacheSlices(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "keys", "rsa2048.pem")
	if _, err := fleetsim.CachedRSAKeys(cache, 0, 1); err == nil {
		t.Fatal("a slice of a missing cache was read")
	}
	if err := fleetsim.FillRSAKeys(2, cache); err != nil {
		t.Fatal(err)
	}
	if err := fleetsim.FillRSAKeys(3, cache); err != nil { // one more, appended
		t.Fatal(err)
	}
	before, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	all, err := fleetsim.RSAKeys(3, cache)
	if err != nil || len(all) != 3 {
		t.Fatalf("RSAKeys(3): %d keys, %v", len(all), err)
	}
	if all[0].Equal(all[1]) || all[1].Equal(all[2]) || all[0].Equal(all[2]) {
		t.Error("the cache holds a key twice")
	}
	slice, err := fleetsim.CachedRSAKeys(cache, 1, 2)
	if err != nil || len(slice) != 2 || !slice[0].Equal(all[1]) || !slice[1].Equal(all[2]) {
		t.Fatalf("keys 1 and 2 of the cache: %d keys, %v", len(slice), err)
	}
	if _, err := fleetsim.CachedRSAKeys(cache, 2, 2); err == nil {
		t.Error("keys 2 and 3 of a cache of 3 were read")
	}
	if err := fleetsim.FillRSAKeys(3, cache); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Error("reading or filling a full cache changed it")
	}
}
