package verify_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// tpm2Tools runs the tpm2-tools binaries against one swtpm, in one working
// directory, through the tools' own TSS (tpm2-tss and its swtpm TCTI). None
// of trustpool's TPM code is involved, so a quote it makes is an independent
// check of the verifier's wire decoding.
type tpm2Tools struct {
	t    *testing.T
	dir  string
	tcti string
}

func (tt tpm2Tools) run(name string, args ...string) {
	tt.t.Helper()
	cmd := exec.CommandContext(tt.t.Context(), name, args...)
	cmd.Dir = tt.dir
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+tt.tcti)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tt.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (tt tpm2Tools) read(name string) []byte {
	tt.t.Helper()
	b, err := os.ReadFile(filepath.Join(tt.dir, name))
	if err != nil {
		tt.t.Fatal(err)
	}
	return b
}

// TestTPM2ToolsQuote verifies a quote made by tpm2-tools on a real swtpm:
// the AK's public area, the TPMS_ATTEST, the TPMT_SIGNATURE and the PCR
// values all come from the tools' files, not from trustpool's encoders.
func TestTPM2ToolsQuote(t *testing.T) {
	for _, tool := range []string{"tpm2_createprimary", "tpm2_readpublic", "tpm2_pcrextend", "tpm2_quote", "tpm2_flushcontext"} {
		swtpmtest.RequireBinary(t, tool)
	}
	p := swtpmtest.Start(t, "")
	_, port, _ := strings.Cut(p.DataAddr(), ":")
	tt := tpm2Tools{t: t, dir: t.TempDir(), tcti: "swtpm:host=127.0.0.1,port=" + port}

	// Make PCR 7 non-zero so the quoted values are not all the reset value.
	measurement := sha256.Sum256([]byte("trustpool tpm2-tools cross-check"))
	tt.run("tpm2_pcrextend", "7:sha256="+hex.EncodeToString(measurement[:]))

	// The AK: an RSA restricted signing primary of the owner hierarchy,
	// which is the qualifiedSigner the verifier expects.
	tt.run("tpm2_createprimary", "-C", "o", "-G", "rsa2048:rsassa-sha256:null", "-g", "sha256",
		"-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign", "-c", "ak.ctx")
	tt.run("tpm2_flushcontext", "-t")
	tt.run("tpm2_readpublic", "-c", "ak.ctx", "-f", "tss", "-o", "ak.pub")
	tt.run("tpm2_flushcontext", "-t")

	nonce := make([]byte, 32)
	rand.Read(nonce)
	pcrs := []int{0, 1, 2, 3, 7}
	tt.run("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,1,2,3,7", "-q", hex.EncodeToString(nonce),
		"-g", "sha256", "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-F", "values")

	// ak.pub is a TPM2B_PUBLIC: a 2-byte size, then the TPMT_PUBLIC.
	pub := tt.read("ak.pub")
	if len(pub) < 2 || int(binary.BigEndian.Uint16(pub)) != len(pub)-2 {
		t.Fatalf("ak.pub is not a TPM2B_PUBLIC: %x", pub)
	}
	ak, err := verify.ParseAK(pub[2:])
	if err != nil {
		t.Fatalf("the verifier refuses the tpm2-tools AK: %v", err)
	}

	// quote.pcrs in "values" format holds the quoted digests back to back,
	// in selection order.
	values := tt.read("quote.pcrs")
	if len(values) != len(pcrs)*sha256.Size {
		t.Fatalf("quote.pcrs is %d bytes, want %d", len(values), len(pcrs)*sha256.Size)
	}
	var reported []evidence.PCR
	for i, idx := range pcrs {
		reported = append(reported, evidence.PCR{Bank: evidence.SHA256, Index: idx, Digest: values[i*sha256.Size : (i+1)*sha256.Size]})
	}
	// Extended once from zero: PCR 7 = SHA-256(0^32 || measurement).
	wantPCR7 := sha256.Sum256(append(make([]byte, sha256.Size), measurement[:]...))
	if !bytes.Equal(reported[4].Digest, wantPCR7[:]) {
		t.Fatalf("quoted PCR 7 is %x, want %x", reported[4].Digest, wantPCR7)
	}

	good := &evidence.Evidence{Quote: tt.read("quote.msg"), Signature: tt.read("quote.sig"), PCRs: reported}
	required := []evidence.Selection{{Bank: evidence.SHA256, PCRs: pcrs}}

	t.Run("verifies", func(t *testing.T) {
		res := ak.Verify(verify.Input{Nonce: nonce, Required: required, Evidence: good})
		if !res.OK() {
			t.Fatalf("tpm2-tools quote refused: %+v", res.Reasons)
		}
		if !slices.EqualFunc(res.Quote.Selection, required, func(a, b evidence.Selection) bool {
			return a.Bank == b.Bank && slices.Equal(a.PCRs, b.PCRs)
		}) {
			t.Errorf("signed selection %+v, want %+v", res.Quote.Selection, required)
		}
		if got := res.Measurements.PCRs[evidence.SHA256][7]; !bytes.Equal(got, wantPCR7[:]) {
			t.Errorf("proven PCR 7 = %x, want %x", got, wantPCR7)
		}
	})

	otherNonce := bytes.Clone(nonce)
	otherNonce[0] ^= 1
	changedPCR := slices.Clone(reported)
	changedPCR[2].Digest = bytes.Clone(changedPCR[2].Digest)
	changedPCR[2].Digest[0] ^= 1
	tamperedQuote := bytes.Clone(good.Quote)
	tamperedQuote[len(tamperedQuote)-1] ^= 1 // last byte of the signed pcrDigest

	for _, tc := range []struct {
		name     string
		nonce    []byte
		required []evidence.Selection
		ev       *evidence.Evidence
		want     string
	}{
		{"other nonce", otherNonce, required, good, verdict.CodeNonce},
		{"changed PCR value", nonce, required, &evidence.Evidence{Quote: good.Quote, Signature: good.Signature, PCRs: changedPCR}, verdict.CodePCRDigest},
		{"PCR outside the quote required", nonce, []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 8}}}, good, verdict.CodeSelection},
		{"tampered quote", nonce, required, &evidence.Evidence{Quote: tamperedQuote, Signature: good.Signature, PCRs: reported}, verdict.CodeSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ak.Verify(verify.Input{Nonce: tc.nonce, Required: tc.required, Evidence: tc.ev})
			if res.OK() || res.Reasons[0].Code != tc.want {
				t.Fatalf("reasons %+v, want first code %q", res.Reasons, tc.want)
			}
		})
	}
}
