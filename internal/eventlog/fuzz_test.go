package eventlog_test

import (
	"bytes"
	"reflect"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// FuzzParse feeds Parse arbitrary bytes, seeded with real firmware logs and
// Builder output. Parse must never panic, and whatever it accepts must be
// internally consistent, replayable, and written back losslessly by a
// Builder.
func FuzzParse(f *testing.F) {
	for _, name := range realLogs {
		f.Add(readTestdata(f, name))
	}
	f.Add(readTestdata(f, "debian-10.bin"))
	for _, banks := range [][]evidence.Bank{{evidence.SHA256}, {evidence.SHA1, evidence.SHA256, evidence.SHA384}} {
		b := eventlog.NewBuilder(banks...)
		sampleBoot(b, 3)
		b.Add(17, eventlog.EvTXTMLEHash, []byte("mle"))
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := eventlog.Parse(raw)
		if err != nil {
			return
		}
		b := eventlog.NewBuilder(l.Banks...)
		for i, e := range l.Events {
			if e.Index != i || e.PCR < 0 || e.PCR >= evidence.NumPCRs || len(e.Digests) != len(l.Banks) {
				t.Fatalf("inconsistent event %d: %+v", i, e)
			}
			for j, d := range e.Digests {
				if d.Bank != l.Banks[j] || len(d.Value) != d.Bank.Size() {
					t.Fatalf("event %d digest %d: %s of %d bytes", i, j, d.Bank, len(d.Value))
				}
			}
			b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
		}
		for _, bank := range l.Banks {
			vals, _, err := l.Replay(bank, false)
			if err != nil {
				continue // e.g. a StartupLocality Replay refuses
			}
			for i, v := range vals {
				if len(v) != bank.Size() {
					t.Fatalf("PCR %d replayed to %d bytes", i, len(v))
				}
			}
		}
		// Writing the events back and parsing them again is lossless.
		again, err := eventlog.Parse(b.Bytes())
		if err != nil {
			t.Fatalf("events written back do not parse: %v", err)
		}
		if !reflect.DeepEqual(again.Banks, l.Banks) || len(again.Events) != len(l.Events) {
			t.Fatalf("round trip changed the log")
		}
		for i := range l.Events {
			x, y := l.Events[i], again.Events[i]
			if x.PCR != y.PCR || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) || !reflect.DeepEqual(x.Digests, y.Digests) {
				t.Fatalf("round trip changed event %d: %+v became %+v", i, x, y)
			}
		}
	})
}
