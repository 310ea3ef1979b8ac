package lease_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"trustpool/internal/lease"
	"trustpool/internal/store"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// Replicas divide the hosts evenly; one that dies (releasing nothing) has
// its hosts taken over once its leases expire; one that joins gets its
// share from the others.
func TestKeepersShareAndTakeOver(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range 12 {
		h := store.Host{Name: fmt.Sprintf("node%02d", i), State: store.HostActive, EKPublic: []byte{byte(i)}, URL: "https://x"}
		if err := st.PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	keeper := func(owner string) *lease.Keeper {
		return lease.New(lease.Config{Store: st, Owner: owner, For: 30 * time.Second, Now: clk.Now, Held: func([]string) {}})
	}
	a, b := keeper("a"), keeper("b")
	round := func(k *lease.Keeper) []string {
		t.Helper()
		hs, err := k.Round(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	round(a)
	round(b) // b finds a holding everything: a gives up its excess next round
	ha := round(a)
	hb := round(b)
	if len(ha) != 6 || len(hb) != 6 || slices.ContainsFunc(ha, func(h string) bool { return slices.Contains(hb, h) }) {
		t.Fatalf("a holds %v, b holds %v: want 6 each, none twice", ha, hb)
	}
	// b dies without releasing: its leases run out, a takes its hosts.
	clk.Add(10 * time.Second)
	round(a)
	if got := round(a); len(got) != 6 {
		t.Fatalf("before b's leases expired a holds %d, want 6", len(got))
	}
	clk.Add(25 * time.Second)
	if got := round(a); len(got) != 12 {
		t.Fatalf("after b's leases expired a holds %d, want 12", len(got))
	}
	// c joins: a hands over half.
	c := keeper("c")
	round(c)
	round(a)
	if hc, ha := round(c), round(a); len(hc) != 6 || len(ha) != 6 {
		t.Fatalf("after c joined a holds %d and c %d, want 6 each", len(ha), len(hc))
	}
}

// A keeper that stops gives its leases back at once.
func TestKeeperReleasesOnStop(t *testing.T) {
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutHost(context.Background(), store.Host{Name: "node1", State: store.HostActive, EKPublic: []byte{1}, URL: "https://x"}); err != nil {
		t.Fatal(err)
	}
	held := make(chan []string, 1)
	k := lease.New(lease.Config{Store: st, Owner: "a", For: time.Hour, Held: func(hs []string) {
		select {
		case held <- hs:
		default:
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- k.Run(ctx) }()
	if hs := <-held; len(hs) != 1 {
		t.Fatalf("held %v, want node1", hs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c, err := st.LeaseCensus(context.Background(), time.Now()); err != nil || c.Held != 0 || c.Owners != 0 {
		t.Fatalf("after the stop %+v %v, want nothing held and nobody alive", c, err)
	}
}
