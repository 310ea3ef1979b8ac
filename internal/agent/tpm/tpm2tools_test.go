package tpm_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
)

// tpm2Tool runs a tpm2-tools command against the swtpm at p.
func tpm2Tool(t *testing.T, p *swtpm.Process, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	_, port, _ := strings.Cut(p.DataAddr(), ":")
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port="+port)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
	}
	return out
}

// parsePCRRead parses tpm2_pcrread's output:
//
//	sha1:
//	  0 : 0x00…
//	sha256:
//	  17: 0xFF…
func parsePCRRead(out []byte) ([]evidence.PCR, error) {
	var (
		pcrs []evidence.PCR
		bank evidence.Bank
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if b, ok := strings.CutSuffix(line, ":"); ok {
			bank = evidence.Bank(b)
			continue
		}
		idx, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		i, err := strconv.Atoi(strings.TrimSpace(idx))
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		d, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(val), "0x"))
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		pcrs = append(pcrs, evidence.PCR{Bank: bank, Index: i, Digest: d})
	}
	return pcrs, sc.Err()
}

// TestTPM2ToolsCrossCheck reads the PCRs with an independent TPM stack
// (tpm2-tools over the same swtpm) and compares them with ReadPCRs, after
// extends and a dynamic launch so that the values are not all defaults. It
// also checks that Close left no transient object behind: without a resource
// manager, leaked handles would fill the TPM's few object slots.
func TestTPM2ToolsCrossCheck(t *testing.T) {
	swtpmtest.RequireBinary(t, "tpm2_pcrread")
	swtpmtest.RequireBinary(t, "tpm2_getcap")
	p := swtpmtest.Start(t, "")
	if err := p.HashStart(); err != nil {
		t.Fatal(err)
	}
	if err := p.HashData([]byte("mle")); err != nil {
		t.Fatal(err)
	}
	if err := p.HashEnd(); err != nil {
		t.Fatal(err)
	}

	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, pcr := range []int{0, 7, 16, 23} {
		s1, s256 := sha1.Sum([]byte{byte(pcr)}), sha256.Sum256([]byte{byte(pcr)})
		if err := tp.Extend(pcr, map[evidence.Bank][]byte{evidence.SHA1: s1[:], evidence.SHA256: s256[:]}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tp.AK(); err != nil { // load a key, to see it flushed
		t.Fatal(err)
	}
	ours, err := tp.ReadPCRs([]evidence.Selection{{Bank: evidence.SHA1, PCRs: allPCRs}, {Bank: evidence.SHA256, PCRs: allPCRs}})
	if err != nil {
		t.Fatal(err)
	}
	// swtpm serves one data connection at a time: ours must be closed
	// before tpm2-tools can connect.
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}

	if out := tpm2Tool(t, p, "tpm2_getcap", "handles-transient"); len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("transient objects left after Close:\n%s", out)
	}
	theirs, err := parsePCRRead(tpm2Tool(t, p, "tpm2_pcrread", "sha1:all+sha256:all"))
	if err != nil {
		t.Fatalf("parse tpm2_pcrread output: %v", err)
	}
	if len(theirs) != len(ours) {
		t.Fatalf("tpm2_pcrread gave %d PCRs, ReadPCRs %d", len(theirs), len(ours))
	}
	for i := range ours {
		o, th := ours[i], theirs[i]
		if o.Bank != th.Bank || o.Index != th.Index || !bytes.Equal(o.Digest, th.Digest) {
			t.Errorf("ReadPCRs %s/%d = %x, tpm2_pcrread %s/%d = %x", o.Bank, o.Index, o.Digest, th.Bank, th.Index, th.Digest)
		}
	}
}
