package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verify/verifytest"
)

// TestEventlogReplayDocs checks what docs/eventlog.md says of the text
// report and of --drtm: each PCR the log extends is listed with the events
// that built it (index, type, digest, the data when it is text), and a DRTM
// log replays PCRs 17-22 from zero.
func TestEventlogReplayDocs(t *testing.T) {
	b := verifytest.DRTMLog("kvm-6.8")
	log := writeTemp(t, "drtm.bin", b.Bytes())
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.ReplayBank(evidence.SHA256, true)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]map[string]string{"sha256": {}}
	for _, p := range []int{0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19} { // PCRs 0-7 are always compared
		doc["sha256"][fmt.Sprint(p)] = hex.EncodeToString(r.Values[p])
	}
	j, _ := json.Marshal(doc)
	pcrs := writeTemp(t, "pcrs.json", j)

	var text bytes.Buffer
	if code := runReplay(replayOptions{log: log, pcrs: pcrs, drtm: true}, &text, &bytes.Buffer{}); code != exitOK {
		t.Fatalf("--drtm against the values a launch gives: exit %d\n%s", code, text.String())
	}
	var mle eventlog.Event
	for _, e := range l.Events {
		if e.PCR == 18 && e.Type == eventlog.EvIPL {
			mle = e
		}
	}
	for _, want := range []string{
		fmt.Sprintf("sha256 PCR 18 = %x", r.Values[18]),
		fmt.Sprintf("%4d %-32s %x %s", mle.Index, "EV_IPL", mle.Digest(evidence.SHA256), `"kvm-6.8"`),
		"PCR 18  match",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	// Without --drtm the same log replays from TPM start (all-ones).
	if code := runReplay(replayOptions{log: log, pcrs: pcrs}, &bytes.Buffer{}, &bytes.Buffer{}); code != exitMismatch {
		t.Errorf("a DRTM log replayed as SRTM: exit %d, want a mismatch", code)
	}
}
