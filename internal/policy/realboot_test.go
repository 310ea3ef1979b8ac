package policy

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// realHost is what verification proves about a node that booted with a real
// firmware log (testdata/README.md): a software AK quotes the PCRs the log
// replays to, in banks, PCRs 0-9, and verify checks quote and replay. Only
// its Measurements reach policy, as in the server.
func realHost(t testing.TB, log string, banks ...evidence.Bank) *verify.Measurements {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", log))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := verifytest.NewSoftAK(verifytest.P256)
	if err != nil {
		t.Fatal(err)
	}
	var sel []evidence.Selection
	for _, b := range banks {
		sel = append(sel, evidence.Selection{Bank: b, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}})
	}
	node := &verifytest.Node{AK: ak, EventLog: raw, Selection: sel}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	ev, err := node.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	vak, err := verify.ParseAK(ak.Public())
	if err != nil {
		t.Fatal(err)
	}
	res := vak.Verify(verify.Input{Nonce: nonce, Required: sel, Evidence: ev})
	if !res.OK() {
		t.Fatalf("%s does not verify: %v", log, res.Reasons)
	}
	return &res.Measurements
}

func byName(refs []*Reference) map[string]*Reference {
	m := map[string]*Reference{}
	for _, r := range refs {
		m[r.Name] = r
	}
	return m
}

func expectationOf(t *testing.T, r *Reference, pcr int) *Expectation {
	t.Helper()
	for i := range r.Expect {
		if r.Expect[i].PCR == pcr {
			return &r.Expect[i]
		}
	}
	t.Fatalf("%s has no expectation for PCR %d", r.Name, pcr)
	return nil
}

// clone deep-copies references through their JSON form, as the store keeps them.
func clone(t *testing.T, refs []*Reference) []*Reference {
	t.Helper()
	b, err := json.Marshal(refs)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Reference
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	for _, r := range out {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestGoldenRealSecureBoot imports references from a real RHEL 8 log with
// Secure Boot on: golden import proposes the PCR 7, 4, 8 and 9 rules, the
// host matches them (also after a JSON round trip of references and
// measurements, as the store keeps both), and a modified rule names what
// differs.
func TestGoldenRealSecureBoot(t *testing.T) {
	m := realHost(t, "rhel8-uefi.bin", evidence.SHA256, evidence.SHA384)
	refs, err := Golden("rhel8", 1, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	rm := byName(refs)
	bios, vmm := rm["rhel8-bios"], rm["rhel8-vmm"]
	if bios == nil || vmm == nil {
		t.Fatalf("golden import made %d references, want bios and vmm", len(refs))
	}
	sb := expectationOf(t, bios, 7).SecureBoot
	if sb == nil || !sb.Enabled || sb.PK == nil || sb.KEK == nil || sb.DB == nil || sb.DBX == nil {
		t.Fatalf("PCR 7 proposal: %+v", sb)
	}
	if len(sb.PK.Allow) != 1 || len(sb.KEK.Allow) == 0 || len(sb.DB.Allow) == 0 || len(sb.DBX.Require) < 10 {
		t.Fatalf("PCR 7 proposal: PK %d, KEK %d, db %d allowed, dbx %d required", len(sb.PK.Allow), len(sb.KEK.Allow), len(sb.DB.Allow), len(sb.DBX.Require))
	}
	if !strings.HasPrefix(sb.DB.Allow[0].Note, "CN=") {
		t.Errorf("db entry note %q, want the certificate's subject", sb.DB.Allow[0].Note)
	}
	if e := expectationOf(t, bios, 7); e.Bank != evidence.SHA384 || len(e.Digests) != 1 {
		t.Errorf("PCR 7 expectation keeps the PCR value in the strongest bank: %s %d", e.Bank, len(e.Digests))
	}
	apps := expectationOf(t, vmm, 4).BootApps
	if apps == nil || len(apps.Sequence) != 3 || !strings.Contains(strings.ToLower(apps.Sequence[0].Note), "shim") {
		t.Fatalf("PCR 4 proposal: %+v", apps)
	}
	cmd := expectationOf(t, vmm, 8).Cmdline
	if cmd == nil || len(cmd.Kernel) != 1 || !strings.Contains(cmd.Kernel[0].String(), `vmlinuz-4\.18\.0-240\.22\.1\.el8_3\.x86_64`) {
		t.Fatalf("PCR 8 proposal: %+v", cmd)
	}
	files := expectationOf(t, vmm, 9).Files
	if files == nil || len(files.Require) != 2 || files.Require[1].Note != "grub_linuxefi Initrd" {
		t.Fatalf("PCR 9 proposal: %+v", files)
	}

	p := Approve(nil, DefaultName, refs)
	if res := Evaluate(p, rm, m); res.Level != verdict.Trusted {
		t.Fatalf("the golden host against its own references: %v", res.Reasons)
	}
	// As the server re-evaluates: references and measurements from JSON.
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var stored verify.Measurements
	if err := json.Unmarshal(mb, &stored); err != nil {
		t.Fatal(err)
	}
	if res := Evaluate(p, byName(clone(t, refs)), &stored); res.Level != verdict.Trusted {
		t.Fatalf("after a JSON round trip: %v", res.Reasons)
	}

	// Rules alone (the PCR values dropped) still decide the golden host
	// trusted; modified rules name what differs.
	rulesOnly := func() ([]*Reference, *Reference, *Reference) {
		c := clone(t, refs)
		for _, r := range c {
			for i := range r.Expect {
				if r.Expect[i].hasBootRules() {
					r.Expect[i].Digests = nil
				}
			}
		}
		cm := byName(c)
		return c, cm["rhel8-bios"], cm["rhel8-vmm"]
	}
	c, _, _ := rulesOnly()
	if res := Evaluate(p, byName(c), m); res.Level != verdict.Trusted {
		t.Fatalf("rules alone: %v", res.Reasons)
	}
	dbCN := sb.DB.Allow[len(sb.DB.Allow)-1].Note
	tests := []struct {
		name   string
		modify func(bios, vmm *Reference)
		want   []string
	}{
		{"a db certificate no longer allowed", func(bios, _ *Reference) {
			db := expectationOf(t, bios, 7).SecureBoot.DB
			db.Allow = db.Allow[:len(db.Allow)-1]
		}, []string{"PCR 7: db contains a certificate not in the allowed set: sha256 ", "(" + dbCN + ")"}},
		{"a dbx revocation the host lacks", func(bios, _ *Reference) {
			dbx := expectationOf(t, bios, 7).SecureBoot.DBX
			dbx.Require = append(dbx.Require, Known{Digest: bytes.Repeat([]byte{0x5a}, 32), Note: "BlackLotus"})
		}, []string{"PCR 7: dbx lacks 1 required revocation: sha256 5a5a", "(BlackLotus)"}},
		{"another shim", func(_, vmm *Reference) {
			expectationOf(t, vmm, 4).BootApps.Sequence[0].Digest = bytes.Repeat([]byte{1}, 48)
		}, []string{"PCR 4: boot application #22", "shimx64.efi", "the sequence expects 0101"}},
		{"another kernel command line", func(_, vmm *Reference) {
			expectationOf(t, vmm, 8).Cmdline.Kernel = []Pattern{MustPattern(`\S+ root=UUID=\S+ ro quiet`)}
		}, []string{`PCR 8: kernel command line "(hd0,gpt2)/boot/vmlinuz-4.18.0-240.22.1.el8_3.x86_64 root=UUID=`, "matches no allowed pattern"}},
		{"another initrd", func(_, vmm *Reference) {
			expectationOf(t, vmm, 9).Files.Require[1].Digest = bytes.Repeat([]byte{2}, 48)
		}, []string{"PCR 9: the required file 0202", "(grub_linuxefi Initrd) was not measured"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, bios, vmm := rulesOnly()
			tc.modify(bios, vmm)
			res := Evaluate(p, byName(c), m)
			if res.Level != verdict.Untrusted || len(res.Reasons) != 1 {
				t.Fatalf("got %s %v, want untrusted with one reason", res.Level, res.Reasons)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Reasons[0].Message, w) {
					t.Errorf("reason %q does not say %q", res.Reasons[0].Message, w)
				}
			}
		})
	}
}

// TestPreviewDBXRequirement: a change that requires a dbx revocation one
// host lacks moves that host, and only it, in the preview. The policy's bios
// reference checks PCR 7 by rules alone, so hosts with different firmware
// (a RHEL 8 VM and a Container-Optimized OS VM) share it.
func TestPreviewDBXRequirement(t *testing.T) {
	hosts := map[string]*verify.Measurements{
		"rhel8": realHost(t, "rhel8-uefi.bin", evidence.SHA256),
		"cos":   realHost(t, "cos-101-amd-sev.bin", evidence.SHA256),
	}
	// An entry of rhel8's dbx that cos's lacks, as golden import sees them.
	dbxOf := func(host string) []Known {
		refs, err := Golden(host, 1, hosts[host], nil)
		if err != nil {
			t.Fatal(err)
		}
		return expectationOf(t, byName(refs)[host+"-bios"], 7).SecureBoot.DBX.Require
	}
	cosDBX := dbxOf("cos")
	var revocation Known
	for _, k := range dbxOf("rhel8") {
		if !containsDigest(cosDBX, k.Digest) {
			revocation = k
			break
		}
	}
	if revocation.Digest == nil {
		t.Fatal("rhel8's dbx holds nothing cos's lacks")
	}
	current := map[string]*Reference{"secure-boot": {Name: "secure-boot", Version: 1, Class: BIOS,
		Expect: []Expectation{{PCR: 7, Bank: evidence.SHA256, SecureBoot: &SecureBootRule{Enabled: true}}}}}
	pol := &Policy{Name: DefaultName, Version: 1, Require: []Class{BIOS}, Approved: map[Class][]string{BIOS: {"secure-boot"}}}

	doc := `{"references": [{"name": "secure-boot", "class": "bios", "expect": [{"pcr": 7, "bank": "sha256",
		"secure_boot": {"enabled": true, "dbx": {"require": [{"digest": "` + revocation.Digest.String() + `", "note": "revoked shim"}]}}}]}]}`
	var change Change
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&change); err != nil {
		t.Fatal(err)
	}
	if err := change.Validate(func(n string) bool { return current[n] != nil }); err != nil {
		t.Fatal(err)
	}
	next := map[string]*Reference{}
	for n, r := range current {
		next[n] = r
	}
	for _, r := range change.References {
		r.Version = current[r.Name].Version + 1
		next[r.Name] = r
	}

	var moved []string
	for _, name := range []string{"cos", "rhel8"} {
		before, after := Evaluate(pol, current, hosts[name]), Evaluate(pol, next, hosts[name])
		if before.Level != verdict.Trusted {
			t.Fatalf("%s before the change: %v", name, before.Reasons)
		}
		if after.Level != before.Level {
			moved = append(moved, name)
			if r := after.Reasons[0]; !strings.Contains(r.Message, "PCR 7: dbx lacks 1 required revocation: sha256 "+revocation.Digest.String()+" (revoked shim)") {
				t.Errorf("%s: reason %q", name, r.Message)
			}
		}
	}
	if !slices.Equal(moved, []string{"cos"}) {
		t.Fatalf("the change moves %v, want [cos]", moved)
	}
}

// BenchmarkEvaluateBootRules is the policy step for a host whose golden
// references carry the boot-chain rules: the RHEL 8 log, 80 events, its
// PCR 7 variables decoded and hashed on every evaluation.
func BenchmarkEvaluateBootRules(b *testing.B) {
	m := realHost(b, "rhel8-uefi.bin", evidence.SHA256)
	refs, err := Golden("rhel8", 1, m, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, rm := Approve(nil, DefaultName, refs), byName(refs)
	b.ReportAllocs()
	for b.Loop() {
		if Evaluate(p, rm, m).Level != verdict.Trusted {
			b.Fatal("not trusted")
		}
	}
}
