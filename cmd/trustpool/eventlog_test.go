package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verify/verifytest"
)

const eventlogTestdata = "../../internal/eventlog/testdata"

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func replayJSON(t *testing.T, o replayOptions) (int, replayReport, string) {
	t.Helper()
	o.json = true
	var out, errOut bytes.Buffer
	code := runReplay(o, &out, &errOut)
	var rep replayReport
	if code != exitBadInput {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("--json printed %q: %v", out.String(), err)
		}
	}
	return code, rep, errOut.String()
}

func TestEventlogReplay(t *testing.T) {
	winLog := filepath.Join(eventlogTestdata, "windows_gcp_shielded_vm.bin")
	winPCRs := filepath.Join(eventlogTestdata, "windows_gcp_shielded_vm.pcrs.json")
	var pcrs map[string]map[string]string
	raw, err := os.ReadFile(winPCRs)
	if err != nil || json.Unmarshal(raw, &pcrs) != nil {
		t.Fatal(err)
	}

	t.Run("real Windows SHA-1 log matches its TPM's PCRs", func(t *testing.T) {
		code, rep, stderr := replayJSON(t, replayOptions{log: winLog, pcrs: winPCRs})
		if code != exitOK {
			t.Fatalf("exit %d (%s), report %+v", code, stderr, rep)
		}
		if rep.Format != "SHA-1 format" || rep.Events != 21 || len(rep.Errors) != 0 {
			t.Errorf("report %+v", rep)
		}
		// PCRs 0-7 always, and 11-14, which the log extends; not 8-10 or 15-23.
		got := rep.PCRs[evidence.SHA1]
		for _, p := range []string{"0", "1", "2", "3", "4", "5", "6", "7", "11", "12", "13", "14"} {
			r := got[p]
			if r == nil || r.Match == nil || !*r.Match || r.Replayed != pcrs["sha1"][p] || r.Expected != pcrs["sha1"][p] {
				t.Errorf("PCR %s: %+v", p, r)
			}
		}
		if len(got) != 12 {
			t.Errorf("%d PCRs reported, want 12", len(got))
		}
	})

	t.Run("tpm2_pcrread output", func(t *testing.T) {
		var y strings.Builder
		y.WriteString("  sha1:\n")
		for p := range 24 {
			fmt.Fprintf(&y, "    %-2d: 0x%s\n", p, strings.ToUpper(pcrs["sha1"][fmt.Sprint(p)]))
		}
		y.WriteString("  sha256:\n    0 : 0x" + strings.Repeat("AB", 32) + "\n")
		code, rep, stderr := replayJSON(t, replayOptions{log: winLog, pcrs: writeTemp(t, "pcrs.yaml", []byte(y.String()))})
		// The sha256 values cannot be compared: a SHA-1 format log has none.
		if code != exitMismatch || len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "records no sha256 digests") {
			t.Fatalf("exit %d (%s), errors %v", code, stderr, rep.Errors)
		}
		if r := rep.PCRs[evidence.SHA1]["12"]; r == nil || !*r.Match {
			t.Errorf("sha1 PCR 12: %+v", r)
		}
	})

	t.Run("a changed PCR is a mismatch", func(t *testing.T) {
		changed := map[string]map[string]string{"sha1": {}}
		for k, v := range pcrs["sha1"] {
			changed["sha1"][k] = v
		}
		changed["sha1"]["13"] = strings.Repeat("00", 20)
		b, _ := json.Marshal(changed)
		code, rep, _ := replayJSON(t, replayOptions{log: winLog, pcrs: writeTemp(t, "pcrs.json", b)})
		r := rep.PCRs[evidence.SHA1]["13"]
		if code != exitMismatch || r == nil || *r.Match || r.Replayed != pcrs["sha1"]["13"] || r.Expected != changed["sha1"]["13"] {
			t.Fatalf("exit %d, PCR 13 %+v", code, r)
		}
		if r := rep.PCRs[evidence.SHA1]["12"]; !*r.Match {
			t.Errorf("PCR 12 %+v", r)
		}
		var text bytes.Buffer
		if runReplay(replayOptions{log: winLog, pcrs: writeTemp(t, "pcrs.json", b)}, &text, &bytes.Buffer{}) != exitMismatch ||
			!strings.Contains(text.String(), "sha1   PCR 13  mismatch: replayed "+pcrs["sha1"]["13"]+", expected "+changed["sha1"]["13"]) {
			t.Errorf("text report:\n%s", text.String())
		}
	})

	t.Run("a PCR 0-7 missing from the file is a mismatch", func(t *testing.T) {
		code, rep, _ := replayJSON(t, replayOptions{log: winLog, pcrs: writeTemp(t, "pcrs.json", []byte(`{"sha1":{"0":"`+pcrs["sha1"]["0"]+`"}}`))})
		if code != exitMismatch || len(rep.Errors) != 7 || !strings.Contains(rep.Errors[0], "PCR 1 (sha1) is not in") {
			t.Fatalf("exit %d, errors %v", code, rep.Errors)
		}
	})

	t.Run("crypto-agile log without PCR values", func(t *testing.T) {
		code, rep, _ := replayJSON(t, replayOptions{log: filepath.Join(eventlogTestdata, "rhel8-uefi.bin")})
		if code != exitOK || rep.Format != "crypto-agile" || rep.Events != 82 || len(rep.PCRs) != 3 {
			t.Fatalf("exit %d, report %+v", code, rep)
		}
		for bank, m := range rep.PCRs {
			if r := m["0"]; r == nil || len(r.Replayed) != 2*bank.Size() || r.Match != nil || r.Expected != "" {
				t.Errorf("%s PCR 0: %+v", bank, r)
			}
		}
	})

	t.Run("Windows partial-digest events", func(t *testing.T) {
		b := verifytest.WindowsBootLog("win")
		l, err := eventlog.Parse(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		r, _ := l.ReplayBank(evidence.SHA256, false)
		doc := map[string]map[string]string{"sha1": {"12": strings.Repeat("00", 20)}, "sha256": {}}
		for p := range 24 {
			doc["sha256"][fmt.Sprint(p)] = hex.EncodeToString(r.Values[p])
		}
		j, _ := json.Marshal(doc)
		code, rep, _ := replayJSON(t, replayOptions{log: writeTemp(t, "win.bin", b.Bytes()), pcrs: writeTemp(t, "pcrs.json", j)})
		want := fmt.Sprintf("PCR 12 (sha1) cannot be replayed: event %d carries no sha1 digest", verifytest.WindowsFirstPartial)
		if code != exitMismatch || !strings.Contains(strings.Join(rep.Errors, "\n"), want) {
			t.Fatalf("exit %d, errors %v, want %q", code, rep.Errors, want)
		}
		for p, r := range rep.PCRs[evidence.SHA256] {
			if r.Match == nil || !*r.Match {
				t.Errorf("sha256 PCR %s: %+v", p, r)
			}
		}
		if r := rep.PCRs[evidence.SHA1]["12"]; r == nil || r.Match == nil || *r.Match || r.Replayed != "" {
			t.Errorf("sha1 PCR 12: %+v", r)
		}
	})

	for _, tc := range []struct {
		name, log, pcrs, want string
	}{
		{"truncated log", "trunc", "", "event 20 at offset 43288: truncated"},
		{"missing log", "/nonexistent/log", "", "no such file"},
		{"bad PCR file", winLog, "bad", "PCR file line 1"},
		{"short PCR value", winLog, "short", "is not 20 bytes of hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := tc.log
			if log == "trunc" {
				full, _ := os.ReadFile(winLog)
				log = writeTemp(t, "trunc.bin", full[:len(full)-10])
			}
			pcrFile := ""
			switch tc.pcrs {
			case "bad":
				pcrFile = writeTemp(t, "p", []byte("hello world\n"))
			case "short":
				pcrFile = writeTemp(t, "p.json", []byte(`{"sha1":{"0":"abcd"}}`))
			}
			code, _, stderr := replayJSON(t, replayOptions{log: log, pcrs: pcrFile})
			if code != exitBadInput || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}
