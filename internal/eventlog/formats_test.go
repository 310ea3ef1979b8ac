package eventlog_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// windowsTail adds what Windows and Hyper-V hosts append to a log: boot
// manager events on PCRs 11-14 that carry a sha256 digest only (in a
// sha1+sha256 log) and an EV_NO_ACTION on PCR 0xFFFFFFFF. It returns the
// index of the first partial event.
func windowsTail(b *eventlog.Builder) int {
	first := b.Len()
	for i, pcr := range []int{12, 13, 11, 12, 14} {
		data := []byte("windows boot manager event " + strconv.Itoa(i))
		b.AddDigests(pcr, eventlog.EvEventTag, []eventlog.Digest{{Bank: evidence.SHA256, Value: hashOf(evidence.SHA256, data)}}, data)
	}
	b.AddDigests(0xffffffff, eventlog.EvNoAction, nil, []byte("WBCL log end"))
	return first
}

func TestNoActionEventOnAnyPCR(t *testing.T) {
	for _, tc := range []struct {
		name string
		log  func() []byte
	}{
		{"crypto-agile", func() []byte {
			b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
			sampleBoot(b, 0)
			b.Add(0xffffffff, eventlog.EvNoAction, []byte("hyper-v"))
			b.Add(24, eventlog.EvNoAction, nil)
			return b.Bytes()
		}},
		{"sha1 format", func() []byte {
			b := eventlog.NewSHA1Builder()
			sampleBoot(b, 0)
			b.Add(0xffffffff, eventlog.EvNoAction, []byte("hyper-v"))
			return b.Bytes()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.log()
			l, err := eventlog.Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if e := l.Events[len(l.Events)-1]; e.Type != eventlog.EvNoAction || e.PCR < evidence.NumPCRs {
				t.Fatalf("last event %+v, want EV_NO_ACTION on a PCR above 23", e)
			}
			// The events are not extended: the replay is that of the log
			// without them.
			trimmed := cloneLog(l)
			for len(trimmed.Events) > 0 && trimmed.Events[len(trimmed.Events)-1].PCR >= evidence.NumPCRs {
				trimmed.Events = trimmed.Events[:len(trimmed.Events)-1]
			}
			for _, bank := range l.Banks {
				got, gotExt, err := l.Replay(bank, false)
				if err != nil {
					t.Fatalf("Replay(%s): %v", bank, err)
				}
				want, wantExt, _ := trimmed.Replay(bank, false)
				if !reflect.DeepEqual(got, want) || gotExt != wantExt {
					t.Errorf("%s: the EV_NO_ACTION events changed the replay", bank)
				}
			}
		})
	}
	// Any other event type on such a PCR is refused, and a hand-made Log
	// holding one makes Replay fail, not index out of range.
	b := eventlog.NewBuilder(evidence.SHA256)
	b.Add(0xffffffff, eventlog.EvAction, []byte("x"))
	if _, err := eventlog.Parse(b.Bytes()); err == nil || !strings.Contains(err.Error(), "PCR index 4294967295 out of range for EV_ACTION") {
		t.Errorf("Parse of EV_ACTION on PCR 0xFFFFFFFF: %v", err)
	}
	for _, pcr := range []int{-1, 24, 1 << 40} {
		l := &eventlog.Log{Banks: []evidence.Bank{evidence.SHA256}, Events: []eventlog.Event{
			{PCR: pcr, Type: eventlog.EvNoAction},
			{PCR: pcr, Type: eventlog.EvIPL, Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: make([]byte, 32)}}},
		}}
		if _, err := l.ReplayBank(evidence.SHA256, false); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("ReplayBank with an EV_IPL on PCR %d: %v", pcr, err)
		}
	}
}

func TestPartialDigestEvents(t *testing.T) {
	b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
	evs := sampleBoot(b, 0)
	first := windowsTail(b)
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	e := l.Events[first]
	if len(e.Digests) != 1 || e.Digests[0].Bank != evidence.SHA256 || e.Digest(evidence.SHA1) != nil {
		t.Fatalf("event %d digests %+v, want sha256 only", first, e.Digests)
	}

	// sha256 replays everything.
	r256, err := l.ReplayBank(evidence.SHA256, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range r256.Gap {
		if g != -1 {
			t.Errorf("sha256 gap on PCR %d at event %d", i, g)
		}
	}
	if !r256.Extended[12] || bytes.Equal(r256.Values[12], make([]byte, 32)) {
		t.Errorf("sha256 PCR 12 not extended: %x", r256.Values[12])
	}
	// sha1 has gaps exactly on 11-14, at the first partial event of each;
	// the PCRs whose events all carry sha1 replay as usual.
	r1, err := l.ReplayBank(evidence.SHA1, false)
	if err != nil {
		t.Fatal(err)
	}
	wantGap := map[int]int{12: first, 13: first + 1, 11: first + 2, 14: first + 4}
	for i, g := range r1.Gap {
		if w, ok := wantGap[i]; ok && g != w || !ok && g != -1 {
			t.Errorf("sha1 gap on PCR %d = %d, want %d", i, g, wantGap[i])
		}
	}
	want, _ := replayByHand(evidence.SHA1, evs, false)
	for i := range 11 {
		if !bytes.Equal(r1.Values[i], want[i]) {
			t.Errorf("sha1 PCR %d = %x, want %x", i, r1.Values[i], want[i])
		}
	}
	// Replay, for callers that need every PCR, names the event.
	if _, _, err := l.Replay(evidence.SHA1, false); err == nil || !strings.Contains(err.Error(), "event "+strconv.Itoa(first)+" carries no sha1 digest") {
		t.Errorf("Replay(sha1) = %v", err)
	}
	// An event with no digest at all (count 0) is a gap in every bank.
	b.AddDigests(9, eventlog.EvIPL, nil, []byte("no digest"))
	l, err = eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, bank := range l.Banks {
		r, _ := l.ReplayBank(bank, false)
		if r.Gap[9] != b.Len()-1 {
			t.Errorf("%s gap on PCR 9 = %d, want %d", bank, r.Gap[9], b.Len()-1)
		}
	}
}

func TestSHA1FormatLogs(t *testing.T) {
	for _, name := range []string{"debian-10.bin", "windows_gcp_shielded_vm.bin", "short_no_action_eventlog"} {
		t.Run(name, func(t *testing.T) {
			l, err := eventlog.Parse(readTestdata(t, name))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if l.Format != eventlog.SHA1Format || !reflect.DeepEqual(l.Banks, []evidence.Bank{evidence.SHA1}) {
				t.Fatalf("format %v banks %v, want SHA-1 format, [sha1]", l.Format, l.Banks)
			}
			if _, _, err := l.Replay(evidence.SHA256, false); err == nil || !strings.Contains(err.Error(), "no sha256 digests") {
				t.Errorf("Replay(sha256) = %v, want an error: a SHA-1 log proves no sha256 PCR", err)
			}
		})
	}
	// The Windows log came with the PCR values its TPM held: the replay
	// reproduces every one of them.
	l, err := eventlog.Parse(readTestdata(t, "windows_gcp_shielded_vm.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var pcrs map[evidence.Bank]map[string]string
	if err := json.Unmarshal(readTestdata(t, "windows_gcp_shielded_vm.pcrs.json"), &pcrs); err != nil {
		t.Fatal(err)
	}
	vals, ext, err := l.Replay(evidence.SHA1, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if got := hex.EncodeToString(v); got != pcrs[evidence.SHA1][strconv.Itoa(i)] {
			t.Errorf("PCR %d replays to %s, the TPM had %s", i, got, pcrs[evidence.SHA1][strconv.Itoa(i)])
		}
	}
	if !ext[12] || !ext[14] || ext[1] {
		t.Errorf("extended = %v", ext)
	}
}

func TestSHA1BuilderRoundTrip(t *testing.T) {
	b := eventlog.NewSHA1Builder()
	want := sampleBoot(b, 3)
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l.Events, want) {
		t.Errorf("parsed %+v, want %+v", l.Events, want)
	}
	got, _, err := l.Replay(evidence.SHA1, false)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := replayByHand(evidence.SHA1, want, false); !reflect.DeepEqual(got, w) {
		t.Errorf("replay %x, want %x", got, w)
	}
}
