package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// testChain builds a valid chain of n entries without a database.
func testChain(n int) []Entry {
	prev := genesis()
	es := make([]Entry, n)
	for i := range es {
		e := Entry{
			Seq:     int64(i + 1),
			Time:    time.Date(2026, 11, 3, 0, 0, i, 0, time.UTC),
			Actor:   "admin",
			Action:  "host.approve",
			Subject: fmt.Sprint("node", i),
			Detail:  []byte(`{"ok":true}`),
		}
		e.Hash = chainHash(prev, e)
		prev = e.Hash
		es[i] = e
	}
	return es
}

func TestVerifyChain(t *testing.T) {
	tests := []struct {
		name   string
		mutate func([]Entry) []Entry
		want   *ChainError // nil: the chain verifies
	}{
		{"intact", func(es []Entry) []Entry { return es }, nil},
		{"empty", func([]Entry) []Entry { return nil }, nil},
		{"actor changed", func(es []Entry) []Entry { es[2].Actor = "mallory"; return es }, &ChainError{2, 3, FaultChanged}},
		{"action changed", func(es []Entry) []Entry { es[0].Action = "host.delete"; return es }, &ChainError{0, 1, FaultChanged}},
		{"subject changed", func(es []Entry) []Entry { es[4].Subject = "x"; return es }, &ChainError{4, 5, FaultChanged}},
		{"detail changed", func(es []Entry) []Entry { es[1].Detail = []byte(`{"ok":false}`); return es }, &ChainError{1, 2, FaultChanged}},
		{"detail dropped", func(es []Entry) []Entry { es[1].Detail = nil; return es }, &ChainError{1, 2, FaultChanged}},
		{"time changed", func(es []Entry) []Entry { es[3].Time = es[3].Time.Add(time.Microsecond); return es }, &ChainError{3, 4, FaultChanged}},
		{"hash changed", func(es []Entry) []Entry { es[3].Hash[0] ^= 1; return es }, &ChainError{3, 4, FaultChanged}},
		{"fields shifted", func(es []Entry) []Entry {
			// Length prefixes keep "ab"+"c" apart from "a"+"bc".
			es[0].Actor, es[0].Action = es[0].Actor+es[0].Action[:1], es[0].Action[1:]
			return es
		}, &ChainError{0, 1, FaultChanged}},
		{"first removed", func(es []Entry) []Entry { return es[1:] }, &ChainError{0, 1, FaultRemoved}},
		{"middle removed", func(es []Entry) []Entry { return slices.Delete(es, 2, 3) }, &ChainError{2, 3, FaultRemoved}},
		{"two swapped", func(es []Entry) []Entry { es[1], es[2] = es[2], es[1]; return es }, &ChainError{1, 3, FaultReordered}},
		{"repeated", func(es []Entry) []Entry { return slices.Insert(es, 2, es[1]) }, &ChainError{2, 2, FaultReordered}},
		{"renumbered after removal", func(es []Entry) []Entry {
			es = slices.Delete(es, 2, 3)
			for i := 2; i < len(es); i++ {
				es[i].Seq--
			}
			return es
		}, &ChainError{2, 3, FaultChanged}},
		// A cut tail leaves a valid prefix: only a recorded head shows it.
		{"tail removed", func(es []Entry) []Entry { return es[:4] }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyChain(tt.mutate(testChain(6)))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyChain = %v, want nil", err)
				}
				return
			}
			var ce *ChainError
			if !errors.As(err, &ce) || *ce != *tt.want {
				t.Fatalf("VerifyChain = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyChainAfter(t *testing.T) {
	es := testChain(6)
	if err := VerifyChainAfter(es[2], es[3:]); err != nil {
		t.Fatalf("page after a verified anchor: %v", err)
	}
	var ce *ChainError
	if err := VerifyChainAfter(es[1], es[3:]); !errors.As(err, &ce) || ce.Fault != FaultRemoved || ce.Seq != 3 {
		t.Fatalf("page with a gap after the anchor: %v", err)
	}
	forged := es[2]
	forged.Hash = genesis()
	if err := VerifyChainAfter(forged, es[3:]); !errors.As(err, &ce) || ce.Fault != FaultChanged || ce.Seq != 4 {
		t.Fatalf("page after a wrong anchor hash: %v", err)
	}
}
