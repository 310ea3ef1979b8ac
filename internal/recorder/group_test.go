package recorder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// gate is a real SQLite store whose RecordVerdicts can be held at its
// start, and that remembers the hosts of every call.
type gate struct {
	*store.Store
	mu    sync.Mutex
	calls [][]string
	hold  chan struct{} // when set, the next call waits for it to close
	held  chan struct{} // closed when that call waits
	fail  string        // a call that holds this host fails
}

func (g *gate) RecordVerdicts(ctx context.Context, recs []store.Record, then store.Consequences) ([]store.Recorded, error) {
	var hosts []string
	for _, r := range recs {
		hosts = append(hosts, r.Verdict.Host)
	}
	g.mu.Lock()
	g.calls = append(g.calls, hosts)
	hold := g.hold
	g.hold = nil
	fail := g.fail
	g.mu.Unlock()
	if hold != nil {
		close(g.held)
		<-hold
	}
	for _, h := range hosts {
		if h == fail {
			return nil, errors.New("refused")
		}
	}
	return g.Store.RecordVerdicts(ctx, recs, then)
}

func newGate(t *testing.T, hosts int) (*gate, *Recorder) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i := range hosts {
		h := fmt.Sprintf("h%d", i)
		if err := st.PutHost(ctx, store.Host{Name: h, State: store.HostActive, EKPublic: []byte("ek-" + h), URL: "https://" + h}); err != nil {
			t.Fatal(err)
		}
	}
	g := &gate{Store: st, held: make(chan struct{})}
	return g, New(Config{Store: g, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func trusted(t *testing.T, st *store.Store, host string) verdict.Verdict {
	t.Helper()
	seq, err := st.NextSeq(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	now := store.Truncate(time.Now())
	return verdict.Verdict{Host: host, Level: verdict.Trusted, VTime: now, Expiry: now.Add(time.Hour), Seq: seq}
}

// queued waits until n recordings wait for the transaction being written.
func queued(t *testing.T, r *Recorder, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.group.mu.Lock()
		got := len(r.group.queue)
		r.group.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d recordings queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Recordings that arrive while a transaction is written share the next
// one, one recording a host: a host's second attestation waits for a
// transaction of its own.
func TestRecordingsShareTransactions(t *testing.T) {
	g, r := newGate(t, 9)
	ctx := context.Background()
	hold := make(chan struct{})
	g.hold = hold
	var wg sync.WaitGroup
	results := make(chan error, 10)
	record := func(v verdict.Verdict) {
		wg.Go(func() {
			res, err := r.Record(ctx, v, nil)
			if err == nil && !res.Written {
				err = fmt.Errorf("%s seq %d not written", v.Host, v.Seq)
			}
			results <- err
		})
	}
	record(trusted(t, g.Store, "h0"))
	<-g.held // h0 is being written
	for i := 1; i < 9; i++ {
		record(trusted(t, g.Store, fmt.Sprintf("h%d", i)))
	}
	queued(t, r, 8)
	record(trusted(t, g.Store, "h3")) // h3 again, newer, queued after the first
	queued(t, r, 9)
	close(hold)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Error(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.calls) != 3 || len(g.calls[0]) != 1 || len(g.calls[1]) != 8 || len(g.calls[2]) != 1 || g.calls[2][0] != "h3" {
		t.Fatalf("transactions %q, want [h0] [h1…h8] [h3]", g.calls)
	}
	for i := range 9 {
		if l := r.Cache().Level(fmt.Sprintf("h%d", i)); l != verdict.Trusted {
			t.Errorf("h%d is %s in the cache", i, l)
		}
	}
	if v, _ := r.Cache().Verdict("h3"); v.Seq != 2 {
		t.Errorf("h3's cached verdict has seq %d, want its newer attestation's 2", v.Seq)
	}
}

// A shared transaction that fails is retried recording by recording, so
// that only the recording that fails reports an error.
func TestFailedGroupRetriesAlone(t *testing.T) {
	g, r := newGate(t, 4)
	ctx := context.Background()
	hold := make(chan struct{})
	g.hold, g.fail = hold, "h2"
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range 4 {
		v := trusted(t, g.Store, fmt.Sprintf("h%d", i))
		wg.Go(func() { _, errs[i] = r.Record(ctx, v, nil) })
		if i == 0 {
			<-g.held
		}
	}
	queued(t, r, 3)
	close(hold)
	wg.Wait()
	for i, err := range errs {
		want := verdict.Trusted
		if i == 2 {
			want = verdict.Unknown
			if err == nil {
				t.Error("h2's refused recording reported no error")
			}
		} else if err != nil {
			t.Errorf("h%d: %v", i, err)
		}
		if l := r.Cache().Level(fmt.Sprintf("h%d", i)); l != want {
			t.Errorf("h%d is %s in the cache, want %s", i, l, want)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.calls) != 5 { // h0; h1-h3 (refused); then h1, h2, h3 alone
		t.Errorf("transactions %q, want 5", g.calls)
	}
}

// A level change another replica committed wakes this replica's listeners
// when it is followed; the same verdict followed again does not.
func TestFollowWakesListeners(t *testing.T) {
	g, r := newGate(t, 1)
	ctx := context.Background()
	type change struct{ to, from verdict.Level }
	var got []change
	r.OnChange(func(v verdict.Verdict, prev verdict.Level) { got = append(got, change{v.Level, prev}) })
	// Another replica records h0 trusted.
	if _, err := g.Store.RecordVerdicts(ctx, []store.Record{{Verdict: trusted(t, g.Store, "h0")}}, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Follow(ctx, store.Change{Kind: store.ChangeVerdict, Host: "h0"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Follow(ctx, store.Change{Kind: store.ChangeRemoved, Host: "h0"}); err != nil {
		t.Fatal(err)
	}
	want := []change{{verdict.Trusted, verdict.Unknown}, {verdict.Unknown, verdict.Trusted}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listeners woken with %v, want %v", got, want)
	}
	if l := r.Cache().Level("h0"); l != verdict.Unknown {
		t.Errorf("h0 is %s after its removal was followed", l)
	}
}
