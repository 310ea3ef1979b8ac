package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
)

// allPCRs selects PCRs 0-23.
var allPCRs = func() []int {
	var p []int
	for i := range evidence.NumPCRs {
		p = append(p, i)
	}
	return p
}()

// openSimulator opens the in-process simulator for one test.
func openSimulator(t *testing.T) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(tpm.SimulatorAddr)
	skipWithoutSimulator(t, err)
	if err != nil {
		t.Fatalf("Open(simulator): %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tp
}

func TestSimulator(t *testing.T) {
	testBackend(t, openSimulator(t))
}

// testBackend runs the checks that every backend must pass.
func testBackend(t *testing.T, tp *tpm.TPM) {
	t.Run("Banks", func(t *testing.T) { testBanks(t, tp) })
	t.Run("EK", func(t *testing.T) { testEK(t, tp) })
	t.Run("AK", func(t *testing.T) { testAK(t, tp) })
	t.Run("ReadPCRs", func(t *testing.T) { testReadPCRs(t, tp) })
	t.Run("Quote", func(t *testing.T) { testQuote(t, tp) })
	t.Run("QuoteTwoBanks", func(t *testing.T) { testQuoteTwoBanks(t, tp) })
	t.Run("Extend", func(t *testing.T) { testExtend(t, tp) })
	t.Run("ActivateCredential", func(t *testing.T) { testActivateCredential(t, tp) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, tp) })
}

func testBanks(t *testing.T, tp *tpm.TPM) {
	banks, err := tp.Banks()
	if err != nil {
		t.Fatalf("Banks: %v", err)
	}
	for _, want := range []evidence.Bank{evidence.SHA1, evidence.SHA256} {
		if !slices.Contains(banks, want) {
			t.Errorf("Banks() = %v, want it to include %s", banks, want)
		}
	}
}

func testEK(t *testing.T, tp *tpm.TPM) {
	public, _, err := tp.EK()
	if err != nil {
		t.Fatalf("EK: %v", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		t.Fatalf("EK public does not decode: %v", err)
	}
	// The EK must come from the TCG default template: same attributes and policy.
	if pub.ObjectAttributes != tpm2.RSAEKTemplate.ObjectAttributes {
		t.Errorf("EK attributes = %+v, want %+v", pub.ObjectAttributes, tpm2.RSAEKTemplate.ObjectAttributes)
	}
	if !bytes.Equal(pub.AuthPolicy.Buffer, tpm2.RSAEKTemplate.AuthPolicy.Buffer) {
		t.Errorf("EK policy = %x, want the TCG default", pub.AuthPolicy.Buffer)
	}
	key, err := tp.EKPublicKey()
	if err != nil {
		t.Fatalf("EKPublicKey: %v", err)
	}
	rsaKey, ok := key.(*rsa.PublicKey)
	if !ok || rsaKey.N.BitLen() != 2048 {
		t.Fatalf("EKPublicKey() = %T, want a 2048-bit *rsa.PublicKey", key)
	}
	want, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	if !rsaKey.Equal(want) {
		t.Error("EKPublicKey differs from the key in EK()'s public area")
	}
	again, _, err := tp.EK()
	if err != nil || !bytes.Equal(again, public) {
		t.Errorf("second EK() = %x, %v; want the same public area", again, err)
	}
}

func testAK(t *testing.T, tp *tpm.TPM) {
	public, err := tp.AK()
	if err != nil {
		t.Fatalf("AK: %v", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		t.Fatalf("AK public does not decode: %v", err)
	}
	want := tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true,
	}
	if pub.ObjectAttributes != want {
		t.Errorf("AK attributes = %+v, want %+v", pub.ObjectAttributes, want)
	}
	if pub.Type != tpm2.TPMAlgRSA || pub.NameAlg != tpm2.TPMAlgSHA256 {
		t.Errorf("AK type/nameAlg = %v/%v, want RSA/SHA256", pub.Type, pub.NameAlg)
	}
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := parms.Scheme.Details.RSASSA()
	if err != nil || parms.Scheme.Scheme != tpm2.TPMAlgRSASSA || scheme.HashAlg != tpm2.TPMAlgSHA256 || parms.KeyBits != 2048 {
		t.Errorf("AK scheme = %v (%v), %d bits; want RSASSA-SHA256, 2048 bits", parms.Scheme.Scheme, err, parms.KeyBits)
	}
	// go-attestation, the verifier's library, must accept it.
	if _, err := attest.ParseAKPublic(public); err != nil {
		t.Errorf("attest.ParseAKPublic: %v", err)
	}
}

func testReadPCRs(t *testing.T, tp *tpm.TPM) {
	tests := []struct {
		name string
		sel  []evidence.Selection
	}{
		{"one PCR", []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{7}}}},
		{"more than 8, unordered", []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{23, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8}}}},
		{"two banks, all PCRs", []evidence.Selection{{Bank: evidence.SHA1, PCRs: allPCRs}, {Bank: evidence.SHA256, PCRs: allPCRs}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pcrs, err := tp.ReadPCRs(tc.sel)
			if err != nil {
				t.Fatalf("ReadPCRs: %v", err)
			}
			var want []evidence.PCR
			for _, s := range tc.sel {
				for _, i := range s.PCRs {
					want = append(want, evidence.PCR{Bank: s.Bank, Index: i})
				}
			}
			if len(pcrs) != len(want) {
				t.Fatalf("got %d PCRs, want %d", len(pcrs), len(want))
			}
			for i, p := range pcrs {
				if p.Bank != want[i].Bank || p.Index != want[i].Index || len(p.Digest) != p.Bank.Size() {
					t.Errorf("PCR %d = %s/%d (%d bytes), want %s/%d", i, p.Bank, p.Index, len(p.Digest), want[i].Bank, want[i].Index)
				}
			}
			ev := evidence.Evidence{Quote: []byte{1}, Signature: []byte{1}, PCRs: pcrs}
			if err := ev.Validate(); err != nil {
				t.Errorf("PCRs do not validate as evidence: %v", err)
			}
		})
	}
}

func toAttestPCRs(t *testing.T, pcrs []evidence.PCR) []attest.PCR {
	t.Helper()
	out := make([]attest.PCR, 0, len(pcrs))
	for _, p := range pcrs {
		h := map[evidence.Bank]crypto.Hash{evidence.SHA1: crypto.SHA1, evidence.SHA256: crypto.SHA256, evidence.SHA384: crypto.SHA384}[p.Bank]
		out = append(out, attest.PCR{Index: p.Index, Digest: p.Digest, DigestAlg: h})
	}
	return out
}

func testQuote(t *testing.T, tp *tpm.TPM) {
	akPub, err := tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.ParseAKPublic(akPub)
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []evidence.Selection{
		{Bank: evidence.SHA256, PCRs: allPCRs},
		{Bank: evidence.SHA1, PCRs: []int{0, 7, 17, 18}},
	} {
		t.Run(string(sel.Bank), func(t *testing.T) {
			nonce := make([]byte, 32)
			rand.Read(nonce)
			quote, sig, err := tp.Quote(nonce, []evidence.Selection{sel})
			if err != nil {
				t.Fatalf("Quote: %v", err)
			}
			pcrs, err := tp.ReadPCRs([]evidence.Selection{sel})
			if err != nil {
				t.Fatal(err)
			}
			q := attest.Quote{Quote: quote, Signature: sig}
			if err := ak.Verify(q, toAttestPCRs(t, pcrs), nonce); err != nil {
				t.Fatalf("go-attestation rejects the quote: %v", err)
			}
			// And it must fail when anything is off.
			other := bytes.Clone(nonce)
			other[0] ^= 1 // another nonce, whatever the first byte was
			if err := ak.Verify(q, toAttestPCRs(t, pcrs), other); err == nil {
				t.Error("quote verified with another nonce")
			}
			bad := toAttestPCRs(t, pcrs)
			bad[0].Digest = bytes.Repeat([]byte{0xaa}, len(bad[0].Digest))
			if err := ak.Verify(q, bad, nonce); err == nil {
				t.Error("quote verified with a forged PCR value")
			}
			flipped := bytes.Clone(sig)
			flipped[len(flipped)-1] ^= 1
			if err := ak.Verify(attest.Quote{Quote: quote, Signature: flipped}, toAttestPCRs(t, pcrs), nonce); err == nil {
				t.Error("quote verified with a corrupted signature")
			}
		})
	}
}

// testQuoteTwoBanks checks a quote over two banks, which go-attestation
// cannot verify, by hand: the signature over TPMS_ATTEST, then the PCR digest
// over the values in the order of the signed selection.
func testQuoteTwoBanks(t *testing.T, tp *tpm.TPM) {
	sel := []evidence.Selection{{Bank: evidence.SHA1, PCRs: []int{0, 1}}, {Bank: evidence.SHA256, PCRs: []int{0, 1, 16}}}
	nonce := []byte("sixteen byte nonce!")
	quote, sig, err := tp.Quote(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	akPub, _ := tp.AK()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPub)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil {
		t.Fatal(err)
	}
	rsassa, err := s.Signature.RSASSA()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(quote)
	if err := rsa.VerifyPKCS1v15(key.(*rsa.PublicKey), crypto.SHA256, h[:], rsassa.Sig.Buffer); err != nil {
		t.Fatalf("signature: %v", err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](quote)
	if err != nil {
		t.Fatal(err)
	}
	info, err := att.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	if len(info.PCRSelect.PCRSelections) != 2 {
		t.Fatalf("quote covers %d banks, want 2", len(info.PCRSelect.PCRSelections))
	}
	d := sha256.New()
	for _, p := range pcrs { // ReadPCRs keeps the selection's order, which is ascending here.
		d.Write(p.Digest)
	}
	if !bytes.Equal(d.Sum(nil), info.PCRDigest.Buffer) {
		t.Error("PCR digest in the quote does not match ReadPCRs")
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		t.Errorf("quote nonce = %q, want %q", att.ExtraData.Buffer, nonce)
	}
}

func testExtend(t *testing.T, tp *tpm.TPM) {
	sel := []evidence.Selection{{Bank: evidence.SHA1, PCRs: allPCRs}, {Bank: evidence.SHA256, PCRs: allPCRs}}
	before, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	const pcr = 16 // the debug PCR: resettable, not used by any policy
	d1 := sha1.Sum([]byte("trustpool"))
	d256 := sha256.Sum256([]byte("trustpool"))
	if err := tp.Extend(pcr, map[evidence.Bank][]byte{evidence.SHA1: d1[:], evidence.SHA256: d256[:]}); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	after, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		b, a := before[i], after[i]
		if b.Index != pcr {
			if !bytes.Equal(a.Digest, b.Digest) {
				t.Errorf("PCR %d (%s) changed", b.Index, b.Bank)
			}
			continue
		}
		var want []byte
		switch b.Bank {
		case evidence.SHA1:
			s := sha1.Sum(append(bytes.Clone(b.Digest), d1[:]...))
			want = s[:]
		case evidence.SHA256:
			s := sha256.Sum256(append(bytes.Clone(b.Digest), d256[:]...))
			want = s[:]
		}
		if !bytes.Equal(a.Digest, want) {
			t.Errorf("PCR %d (%s) = %x, want H(old || digest) = %x", pcr, b.Bank, a.Digest, want)
		}
	}
}

func testActivateCredential(t *testing.T, tp *tpm.TPM) {
	ekPub, _, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	akPub, err := tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPub)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPub)
	if err != nil {
		t.Fatal(err)
	}
	akName, err := tpm2.ObjectName(ak)
	if err != nil {
		t.Fatal(err)
	}
	ekName, err := tpm2.ObjectName(ek)
	if err != nil {
		t.Fatal(err)
	}
	encapsulation, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	otherEK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherTemplate := tpm2.RSAEKTemplate
	otherTemplate.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: otherEK.N.Bytes()})
	otherEncapsulation, err := tpm2.ImportEncapsulationKey(&otherTemplate)
	if err != nil {
		t.Fatal(err)
	}

	secret := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name    string
		key     tpm2.LabeledEncapsulationKey
		objName []byte
		wantErr []error // nil: the secret comes back; else one of these
	}{
		// The seed was encrypted to a key this TPM does not hold. The
		// reference simulator says TPM_RC_VALUE; libtpms (swtpm) reports its
		// failed RSA-OAEP decryption as TPM_RC_FAILURE, without entering
		// failure mode: the next case shows the TPM still works. When the
		// ciphertext, read as a number, exceeds this TPM's modulus (it was
		// made for another key: that happens for some random seeds) the
		// simulator says TPM_RC_SIZE instead.
		{"another EK", otherEncapsulation, akName.Buffer, []error{tpm2.TPMRCValue, tpm2.TPMRCFailure, tpm2.TPMRCSize}},
		{"AK in this TPM", encapsulation, akName.Buffer, nil},
		// The TPM decrypts the seed but the HMAC over the name fails.
		{"another name", encapsulation, ekName.Buffer, []error{tpm2.TPMRCIntegrity}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, tc.key, tc.objName, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredential(idObject, encSecret)
			if tc.wantErr != nil {
				if !slices.ContainsFunc(tc.wantErr, func(want error) bool { return errors.Is(err, want) }) {
					t.Fatalf("ActivateCredential = %x, %v; want one of %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("ActivateCredential = %x, want %x", got, secret)
			}
		})
	}
}

func testBadInput(t *testing.T, tp *tpm.TPM) {
	d256 := make([]byte, 32)
	tests := []struct {
		name string
		call func() error
	}{
		{"extend PCR 24", func() error { return tp.Extend(24, map[evidence.Bank][]byte{evidence.SHA256: d256}) }},
		{"extend PCR -1", func() error { return tp.Extend(-1, map[evidence.Bank][]byte{evidence.SHA256: d256}) }},
		{"extend without digests", func() error { return tp.Extend(16, nil) }},
		{"extend short digest", func() error { return tp.Extend(16, map[evidence.Bank][]byte{evidence.SHA256: d256[:20]}) }},
		{"extend unknown bank", func() error { return tp.Extend(16, map[evidence.Bank][]byte{"md5": d256[:16]}) }},
		{"read no selection", func() error { _, err := tp.ReadPCRs(nil); return err }},
		{"read bank twice", func() error {
			_, err := tp.ReadPCRs([]evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{1}}, {Bank: evidence.SHA256, PCRs: []int{2}}})
			return err
		}},
		{"read PCR 24", func() error {
			_, err := tp.ReadPCRs([]evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{24}}})
			return err
		}},
		{"quote unknown bank", func() error {
			_, _, err := tp.Quote(d256, []evidence.Selection{{Bank: "md5", PCRs: []int{1}}})
			return err
		}},
		{"activate empty", func() error { _, err := tp.ActivateCredential(nil, nil); return err }},
		{"activate oversized", func() error { _, err := tp.ActivateCredential(make([]byte, 4096), make([]byte, 256)); return err }},
		{"activate garbage", func() error { _, err := tp.ActivateCredential(make([]byte, 66), make([]byte, 256)); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	// A loopback port that refuses connections: listen, note it, close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	for _, addr := range []string{
		"",
		"tpm0",
		"mssim://127.0.0.1:2321",
		"/nonexistent/tpmrm0",
		"/dev/null", // not a TPM character device... but a device: must fail on use, see below
		"swtpm://" + closed,
	} {
		t.Run(addr, func(t *testing.T) {
			tp, err := tpm.Open(addr)
			if err == nil {
				// /dev/null opens as a device; the first command must fail.
				_, err = tp.Banks()
				tp.Close()
			}
			if err == nil {
				t.Errorf("Open(%q) and Banks succeeded", addr)
			}
		})
	}
}

// skipWithoutSimulator skips the test in a build without cgo, except under CI.
func skipWithoutSimulator(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, tpm.ErrNoSimulator) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
}

func TestSimulatorOnePerProcess(t *testing.T) {
	first, err := tpm.Open(tpm.SimulatorAddr)
	skipWithoutSimulator(t, err)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Open(tpm.SimulatorAddr); !errors.Is(err, tpm.ErrSimulatorInUse) {
		t.Fatalf("second Open = %v, want ErrSimulatorInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if _, err := first.AK(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("AK after Close = %v, want ErrClosed", err)
	}
	again, err := tpm.Open(tpm.SimulatorAddr)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}
