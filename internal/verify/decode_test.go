package verify

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/evidence"
	"trustpool/internal/wire"
)

// be builds big-endian TPM structures for tests.
type be []byte

func (b be) u8(v uint8) be   { return append(b, v) }
func (b be) u16(v uint16) be { return binary.BigEndian.AppendUint16(b, v) }
func (b be) u32(v uint32) be { return binary.BigEndian.AppendUint32(b, v) }
func (b be) u64(v uint64) be { return binary.BigEndian.AppendUint64(b, v) }
func (b be) b2(v []byte) be  { return append(b.u16(uint16(len(v))), v...) }
func (b be) raw(v ...byte) be {
	return append(b, v...)
}

func attestHeader() be {
	return be{}.u32(generated).u16(stAttestQuot).b2([]byte{0, 0xb, 1, 2}).b2([]byte("nonce")).u64(5).u32(1).u32(2).u8(1).u64(9)
}

func TestDecodeAttest(t *testing.T) {
	digest := bytes.Repeat([]byte{0xaa}, 32)
	for _, tc := range []struct {
		name    string
		info    be
		want    []evidence.Selection
		wantErr string
	}{
		{
			name: "one bank",
			info: be{}.u32(1).u16(0xb).u8(3).raw(0xff, 0, 0x80).b2(digest),
			want: []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 23}}},
		},
		{
			name: "two banks, empty unknown bank skipped, order kept",
			info: be{}.u32(3).u16(0xb).u8(3).raw(0, 0, 0x06).u16(0x12).u8(3).raw(0, 0, 0).u16(0x4).u8(3).raw(1, 0, 0).b2(digest),
			want: []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{17, 18}}, {Bank: evidence.SHA1, PCRs: []int{0}}},
		},
		{
			name: "four select bytes, the fourth empty",
			info: be{}.u32(1).u16(0x4).u8(4).raw(1, 0, 0, 0).b2(digest),
			want: []evidence.Selection{{Bank: evidence.SHA1, PCRs: []int{0}}},
		},
		{name: "no selection", info: be{}.u32(0).b2(digest)},
		{name: "PCR beyond 23", info: be{}.u32(1).u16(0xb).u8(4).raw(0, 0, 0, 1).b2(digest), wantErr: "beyond 23"},
		{name: "unknown bank with PCRs", info: be{}.u32(1).u16(0x12).u8(3).raw(1, 0, 0).b2(digest), wantErr: "cannot verify"},
		{name: "bank twice", info: be{}.u32(2).u16(0xb).u8(3).raw(1, 0, 0).u16(0xb).u8(3).raw(2, 0, 0).b2(digest), wantErr: "twice"},
		{name: "too many selections", info: be{}.u32(9), wantErr: "9 entries"},
		{name: "select too long", info: be{}.u32(1).u16(0xb).u8(9), wantErr: "limit"},
		{name: "selection truncated", info: be{}.u32(1).u16(0xb).u8(3).raw(1), wantErr: "truncated"},
		{name: "digest truncated", info: be{}.u32(0).u16(32).raw(1, 2), wantErr: "truncated"},
		{name: "digest too long", info: be{}.u32(0).b2(make([]byte, 65)), wantErr: "limit"},
		{name: "trailing bytes", info: be{}.u32(0).b2(digest).u8(0), wantErr: "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := append(attestHeader(), tc.info...)
			var a attest
			r := wire.BigEndian(b)
			if err := decodeAttestHeader(&r, &a); err != nil {
				t.Fatal(err)
			}
			err := decodeQuoteInfo(&r, &a)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(a.selection) != len(tc.want) {
				t.Fatalf("selection = %v, want %v", a.selection, tc.want)
			}
			for i := range tc.want {
				if a.selection[i].Bank != tc.want[i].Bank || !slices.Equal(a.selection[i].PCRs, tc.want[i].PCRs) {
					t.Errorf("selection = %v, want %v", a.selection, tc.want)
				}
			}
			if a.clock != 5 || a.resetCount != 1 || a.restartCount != 2 || !a.safe || a.firmwareVersion != 9 ||
				string(a.extraData) != "nonce" || !bytes.Equal(a.pcrDigest, digest) {
				t.Errorf("decoded %+v", a)
			}
		})
	}
}

func TestDecodeAttestHeaderRejects(t *testing.T) {
	full := attestHeader()
	for n := range len(full) {
		var a attest
		if err := decodeAttestHeader(readerOf(full[:n]), &a); err == nil {
			t.Errorf("header of %d of %d bytes decoded", n, len(full))
		}
	}
	var a attest
	bad := bytes.Clone(full)
	bad[len(bad)-9] = 2 // safe
	if err := decodeAttestHeader(readerOf(bad), &a); err == nil || !strings.Contains(err.Error(), "safe") {
		t.Errorf("safe=2: error %v", err)
	}
	long := be{}.u32(generated).u16(stAttestQuot).b2(make([]byte, 67))
	if err := decodeAttestHeader(readerOf(long), &a); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("67-byte name: error %v", err)
	}
}

func TestDecodeSignature(t *testing.T) {
	rsaSig := bytes.Repeat([]byte{1}, 256)
	r, s := bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 31)
	for _, tc := range []struct {
		name    string
		in      be
		want    signature
		wantErr string
	}{
		{name: "rsassa", in: be{}.u16(algRSASSA).u16(algSHA256).b2(rsaSig), want: signature{alg: algRSASSA, hash: algSHA256, sig: rsaSig}},
		{name: "rsapss", in: be{}.u16(algRSAPSS).u16(algSHA384).b2(rsaSig), want: signature{alg: algRSAPSS, hash: algSHA384, sig: rsaSig}},
		{name: "ecdsa", in: be{}.u16(algECDSA).u16(algSHA256).b2(r).b2(s), want: signature{alg: algECDSA, hash: algSHA256, r: r, s: s}},
		{name: "null", in: be{}.u16(algNull).u16(0), wantErr: "unsupported scheme 0x0010"},
		{name: "hmac", in: be{}.u16(0x0005).u16(algSHA256).raw(make([]byte, 32)...), wantErr: "unsupported"},
		{name: "empty", in: nil, wantErr: "truncated"},
		{name: "rsa truncated", in: be{}.u16(algRSASSA).u16(algSHA256).b2(rsaSig)[:100], wantErr: "truncated"},
		{name: "rsa too long", in: be{}.u16(algRSASSA).u16(algSHA256).b2(make([]byte, 513)), wantErr: "limit"},
		{name: "ecdsa s missing", in: be{}.u16(algECDSA).u16(algSHA256).b2(r), wantErr: "truncated"},
		{name: "ecdsa scalar too long", in: be{}.u16(algECDSA).u16(algSHA256).b2(make([]byte, 49)).b2(s), wantErr: "limit"},
		{name: "trailing", in: be{}.u16(algECDSA).u16(algSHA256).b2(r).b2(s).u8(0), wantErr: "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeSignature(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.alg != tc.want.alg || got.hash != tc.want.hash || !bytes.Equal(got.sig, tc.want.sig) || !bytes.Equal(got.r, tc.want.r) || !bytes.Equal(got.s, tc.want.s) {
				t.Errorf("decoded %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestASN1Signature(t *testing.T) {
	for _, tc := range []struct {
		r, s []byte
		want []byte
	}{
		{[]byte{1}, []byte{2}, []byte{0x30, 6, 2, 1, 1, 2, 1, 2}},
		{[]byte{0, 0, 0x7f}, []byte{0x80}, []byte{0x30, 7, 2, 1, 0x7f, 2, 2, 0, 0x80}},
		{nil, []byte{0, 0}, []byte{0x30, 6, 2, 1, 0, 2, 1, 0}},
	} {
		if got := asn1Signature(tc.r, tc.s); !bytes.Equal(got, tc.want) {
			t.Errorf("asn1Signature(%x, %x) = %x, want %x", tc.r, tc.s, got, tc.want)
		}
	}
}

// windowsDump is the layout of go-attestation's testdata/windows_gcp_shielded_vm.json:
// a real quote by a GCE vTPM, with the AK (a child of the SRK, made by
// Windows) and its creation data.
type windowsDump struct {
	AK struct {
		Public     []byte
		CreateData []byte
	}
	Quote struct {
		Nonce     []byte
		Quote     []byte
		Signature []byte
	}
	Log struct {
		PCRs []struct {
			Index     int
			Digest    []byte
			DigestAlg crypto.Hash
		}
	}
}

// TestRealTPMQuote checks the decoders and the qualified-name formula
// against a quote a real (virtual) TPM made.
func TestRealTPMQuote(t *testing.T) {
	raw, err := os.ReadFile("testdata/windows_gcp_shielded_vm.json")
	if err != nil {
		t.Fatal(err)
	}
	var d windowsDump
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	// Windows made this AK with an RSASSA-SHA1 scheme, which trustpool
	// refuses; its signature is checked here with go-tpm's decoding.
	if _, err := ParseAK(d.AK.Public); err == nil || !strings.Contains(err.Error(), "scheme hash 0x0004") {
		t.Fatalf("ParseAK of a SHA-1 AK: %v, want a refusal of its scheme hash", err)
	}
	tp, err := tpm2.Unmarshal[tpm2.TPMTPublic](d.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Pub(*tp)
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(tp)
	if err != nil {
		t.Fatal(err)
	}

	var a attest
	r := wire.BigEndian(d.Quote.Quote)
	if err := decodeAttestHeader(&r, &a); err != nil {
		t.Fatal(err)
	}
	if err := decodeQuoteInfo(&r, &a); err != nil {
		t.Fatal(err)
	}
	sig, err := decodeSignature(d.Quote.Signature)
	if err != nil {
		t.Fatal(err)
	}
	if sig.alg != algRSASSA || sig.hash != algSHA1 {
		t.Fatalf("signature scheme 0x%04x/0x%04x, want RSASSA/SHA1", sig.alg, sig.hash)
	}
	digest := sha1.Sum(d.Quote.Quote)
	if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA1, digest[:], sig.sig); err != nil {
		t.Fatalf("real quote signature: %v", err)
	}
	if len(a.selection) != 1 || a.selection[0].Bank != evidence.SHA1 || len(a.selection[0].PCRs) != 24 {
		t.Errorf("selection = %v, want sha1 PCRs 0-23", a.selection)
	}

	// TPMS_CREATION_DATA names the AK's parent; the TPM's qualified name of
	// the AK must be nameAlg || H(parent's qualified name || AK name), the
	// formula whose hierarchy case ParseAK precomputes.
	cr := wire.BigEndian(d.AK.CreateData)
	if n := cr.U32(); n != 0 {
		t.Fatalf("creation data selects %d banks; test expects none", n)
	}
	cr.Sized16(64) // pcrDigest
	cr.U8()        // locality
	cr.U16()       // parentNameAlg
	cr.Sized16(66) // parentName
	parentQN := cr.Sized16(66)
	cr.Sized16(64) // outsideInfo
	if err := cr.End(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write(parentQN)
	h.Write(name.Buffer)
	if want := h.Sum([]byte{0, 0x0b}); !bytes.Equal(a.qualifiedSigner, want) {
		t.Errorf("qualifiedSigner %x, formula gives %x", a.qualifiedSigner, want)
	}
}

// readerOf is a reader of b for the decoders' tests.
func readerOf(b []byte) *wire.Reader {
	r := wire.BigEndian(b)
	return &r
}
