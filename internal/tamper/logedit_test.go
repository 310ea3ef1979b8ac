package tamper_test

import (
	"slices"
	"testing"

	"trustpool/internal/eventlog"
)

// editLog rewrites a TCG event log as a compromised node can: it parses
// the log, lets edit change its events, and writes it back with the same
// banks. Digests are kept as edit leaves them.
func editLog(t *testing.T, raw []byte, edit func([]eventlog.Event) []eventlog.Event) []byte {
	t.Helper()
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	b := eventlog.NewBuilder(l.Banks...)
	for _, e := range edit(slices.Clone(l.Events)) {
		b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
	}
	return b.Bytes()
}

// lastOf returns the index of the last event of pcr whose data is text, or
// fails the test.
func lastOf(t *testing.T, es []eventlog.Event, pcr int, text string) int {
	t.Helper()
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].PCR == pcr && (text == "" || string(es[i].Data) == text) {
			return i
		}
	}
	t.Fatalf("no event %q in PCR %d", text, pcr)
	return -1
}
