package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/uefi"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// efiVariable builds UEFI_VARIABLE_DATA.
func efiVariable(vendor uefi.GUID, name string, data []byte) []byte {
	u := utf16.Encode([]rune(name))
	b := append([]byte(nil), vendor[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(u)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, data...)
}

// sigList builds one EFI_SIGNATURE_LIST of equally sized entries.
func sigList(typ uefi.GUID, entries ...[]byte) []byte {
	size := 16 + len(entries[0])
	b := append([]byte(nil), typ[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(28+size*len(entries)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	for _, e := range entries {
		b = append(b, make([]byte, 16)...) // owner
		b = append(b, e...)
	}
	return b
}

func selfSigned(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

// ev is an event whose sha256 digest is that of data (as firmware measures
// variables), unless digest is given.
func ev(idx, pcr int, typ uint32, data []byte, digest ...[]byte) eventlog.Event {
	d := sum(data)
	if len(digest) > 0 {
		d = digest[0]
	}
	return eventlog.Event{Index: idx, PCR: pcr, Type: typ, Data: data,
		Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: d}}}
}

func sbVar(idx int, name string, data []byte) eventlog.Event {
	vendor := uefi.GlobalVariable
	if name == "db" || name == "dbx" {
		vendor = uefi.ImageSecurityDatabase
	}
	return ev(idx, 7, eventlog.EvEFIVariableDriverConf, efiVariable(vendor, name, data))
}

// imageLoad is a UEFI_IMAGE_LOAD_EVENT naming path, with the digest of image.
func imageLoad(idx int, path, image string) eventlog.Event {
	u := utf16.Encode([]rune(path + "\x00"))
	node := []byte{4, 4}
	node = binary.LittleEndian.AppendUint16(node, uint16(4+2*len(u)))
	for _, c := range u {
		node = binary.LittleEndian.AppendUint16(node, c)
	}
	node = append(node, 0x7f, 0xff, 4, 0)
	data := binary.LittleEndian.AppendUint64(make([]byte, 24), uint64(len(node)))
	return ev(idx, 4, eventlog.EvEFIBootServicesApp, append(data, node...), sum([]byte("image:"+image)))
}

func grub(idx int, prefix, text string) eventlog.Event {
	return ev(idx, 8, eventlog.EvIPL, []byte(prefix+text+"\x00"), sum([]byte(text)))
}

func file(idx int, path, contents string) eventlog.Event {
	return ev(idx, 9, eventlog.EvIPL, []byte(path+"\x00"), sum([]byte(contents)))
}

func known(ds ...[]byte) []Known {
	var ks []Known
	for _, d := range ds {
		ks = append(ks, Known{Digest: d})
	}
	return ks
}

func TestBootRules(t *testing.T) {
	pkCert, kekCert, dbCert, evilCert := selfSigned(t, "Test Platform Key"), selfSigned(t, "Test KEK"), selfSigned(t, "Test DB CA"), selfSigned(t, "Evil CA")
	revoked1, revoked2, revoked3 := sum([]byte("bad shim 1")), sum([]byte("bad shim 2")), sum([]byte("bad grub"))
	dbx := sigList(uefi.CertSHA256, revoked1, revoked2)
	goodVars := []eventlog.Event{
		sbVar(1, "SecureBoot", []byte{1}),
		sbVar(2, "PK", sigList(uefi.CertX509, pkCert)),
		sbVar(3, "KEK", sigList(uefi.CertX509, kekCert)),
		sbVar(4, "db", sigList(uefi.CertX509, dbCert)),
		sbVar(5, "dbx", dbx),
	}
	with := func(evs []eventlog.Event, i int, e eventlog.Event) []eventlog.Event {
		out := append([]eventlog.Event(nil), evs...)
		if i >= len(out) {
			return append(out, e)
		}
		out[i] = e
		return out
	}
	without := func(evs []eventlog.Event, i int) []eventlog.Event {
		out := append([]eventlog.Event(nil), evs[:i]...)
		return append(out, evs[i+1:]...)
	}
	allSB := &SecureBootRule{Enabled: true,
		PK: &SignatureDBRule{Allow: known(sum(pkCert))}, KEK: &SignatureDBRule{Allow: known(sum(kekCert))},
		DB: &SignatureDBRule{Allow: known(sum(dbCert))}, DBX: &SignatureDBRule{Require: known(revoked1, revoked2)}}

	apps := []eventlog.Event{imageLoad(10, `\EFI\redhat\shimx64.efi`, "shim"), imageLoad(11, `\EFI\redhat\grubx64.efi`, "grub"), imageLoad(12, "", "kernel")}
	app := func(s string) []byte { return sum([]byte("image:" + s)) }
	const cmdline = "(hd0,gpt2)/vmlinuz-6.8 root=UUID=f394 ro quiet"
	texts := []eventlog.Event{grub(20, "grub_cmd: ", "set root=hd0,gpt2"), grub(21, "grub_cmd: ", "linux "+cmdline), grub(22, "kernel_cmdline: ", cmdline)}
	files := []eventlog.Event{file(30, "(hd0,gpt2)/grub/grub.cfg", "cfg"), file(31, "(hd0,gpt2)/vmlinuz-6.8", "kernel"), file(32, "(hd0,gpt2)/initrd.img-6.8", "initrd")}
	fd := func(s string) []byte { return sum([]byte(s)) }

	tests := []struct {
		name   string
		e      Expectation
		events []eventlog.Event
		code   string // "" = the rule matches
		want   []string
	}{
		// PCR 7
		{name: "secure boot: all variables match", e: Expectation{PCR: 7, SecureBoot: allSB}, events: goodVars},
		{name: "secure boot: disabled", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: with(goodVars, 0, sbVar(1, "SecureBoot", []byte{0})), code: verdict.CodeBootRule, want: []string{"PCR 7: SecureBoot is 00 (event #1)", "disabled"}},
		{name: "secure boot: variable empty", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: with(goodVars, 0, sbVar(1, "SecureBoot", nil)), code: verdict.CodeBootRule, want: []string{"SecureBoot is empty"}},
		{name: "secure boot: no SecureBoot event", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: without(goodVars, 0), code: verdict.CodeEventMissing, want: []string{"no SecureBoot variable was measured"}},
		{name: "secure boot: SecureBoot under another vendor GUID does not count", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: with(goodVars, 0, ev(1, 7, eventlog.EvEFIVariableDriverConf, efiVariable(uefi.ImageSecurityDatabase, "SecureBoot", []byte{1}))),
			code:   verdict.CodeEventMissing, want: []string{"no SecureBoot variable"}},
		{name: "secure boot: data not covered by the digest", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: with(goodVars, 0, ev(1, 7, eventlog.EvEFIVariableDriverConf, efiVariable(uefi.GlobalVariable, "SecureBoot", []byte{1}), sum([]byte("other")))),
			code:   verdict.CodeBootRule, want: []string{"event #1 EV_EFI_VARIABLE_DRIVER_CONFIG", "does not hash to its digest"}},
		{name: "secure boot: malformed variable data", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: with(goodVars, 0, ev(1, 7, eventlog.EvEFIVariableDriverConf, []byte("SecureBoot=1"))),
			code:   verdict.CodeBootRule, want: []string{"event #1 EV_EFI_VARIABLE_DRIVER_CONFIG: variable data"}},
		{name: "secure boot: not proven in the expectation's bank", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{Enabled: true}},
			events: []eventlog.Event{{Index: 1, PCR: 7, Type: eventlog.EvEFIVariableDriverConf, Data: efiVariable(uefi.GlobalVariable, "SecureBoot", []byte{1}),
				Digests: []eventlog.Digest{{Bank: evidence.SHA1, Value: make([]byte, 20)}}}},
			code: verdict.CodeEventMissing, want: []string{"no SecureBoot variable"}},
		{name: "db holds a certificate not allowed", e: Expectation{PCR: 7, SecureBoot: allSB},
			events: with(goodVars, 3, sbVar(4, "db", append(sigList(uefi.CertX509, dbCert), sigList(uefi.CertX509, evilCert)...))),
			code:   verdict.CodeBootRule, want: []string{"PCR 7: db contains a certificate not in the allowed set: sha256 " + hexOf(sum(evilCert)) + " (CN=Evil CA)"}},
		{name: "db holds two entries not allowed", e: Expectation{PCR: 7, SecureBoot: allSB},
			events: with(goodVars, 3, sbVar(4, "db", append(sigList(uefi.CertX509, evilCert), sigList(uefi.CertSHA256, revoked3)...))),
			code:   verdict.CodeBootRule, want: []string{"db contains 2 entries not in the allowed set", "(CN=Evil CA)", hexOf(revoked3) + " (image hash)"}},
		{name: "db not measured", e: Expectation{PCR: 7, SecureBoot: allSB}, events: without(goodVars, 3),
			code: verdict.CodeEventMissing, want: []string{"no db variable was measured"}},
		{name: "db under the global GUID is not db", e: Expectation{PCR: 7, SecureBoot: allSB},
			events: with(goodVars, 3, ev(4, 7, eventlog.EvEFIVariableDriverConf, efiVariable(uefi.GlobalVariable, "db", sigList(uefi.CertX509, dbCert)))),
			code:   verdict.CodeEventMissing, want: []string{"no db variable"}},
		{name: "db malformed signature list", e: Expectation{PCR: 7, SecureBoot: allSB},
			events: with(goodVars, 3, sbVar(4, "db", sigList(uefi.CertX509, dbCert)[:40])),
			code:   verdict.CodeBootRule, want: []string{"db (event #4) is malformed: signature list"}},
		{name: "empty PK with an allow rule", e: Expectation{PCR: 7, SecureBoot: allSB},
			events: with(goodVars, 1, sbVar(2, "PK", nil)), code: verdict.CodeBootRule, want: []string{"PK (event #2) is empty"}},
		{name: "dbx lacks a required revocation", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{DBX: &SignatureDBRule{Require: []Known{{Digest: revoked1}, {Digest: revoked3, Note: "grub CVE-2020-10713"}}}}},
			events: goodVars, code: verdict.CodeBootRule, want: []string{"PCR 7: dbx lacks 1 required revocation: sha256 " + hexOf(revoked3) + " (grub CVE-2020-10713)"}},
		{name: "dbx with more revocations than required", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{DBX: &SignatureDBRule{Require: known(revoked2)}}}, events: goodVars},
		{name: "whole-variable digest matches", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{KEK: &SignatureDBRule{Digests: known(goodVars[2].Digest(evidence.SHA256))}}}, events: goodVars},
		{name: "whole-variable digest differs", e: Expectation{PCR: 7, SecureBoot: &SecureBootRule{KEK: &SignatureDBRule{Digests: known(sum([]byte("old KEK")))}}},
			events: goodVars, code: verdict.CodeBootRule, want: []string{"KEK (event #3) has digest " + hexOf(goodVars[2].Digest(evidence.SHA256))}},
		// PCR 4
		{name: "boot apps: sequence matches", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Sequence: known(app("shim"), app("grub"), app("kernel"))}}, events: apps},
		{name: "boot apps: sequence out of order", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Sequence: known(app("grub"), app("shim"), app("kernel"))}},
			events: apps, code: verdict.CodeBootRule, want: []string{`boot application #10 "\EFI\redhat\shimx64.efi" has digest ` + hexOf(app("shim")) + ", the sequence expects " + hexOf(app("grub"))}},
		{name: "boot apps: sequence cut short", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Sequence: []Known{{Digest: app("shim")}, {Digest: app("grub")}, {Digest: app("kernel")}, {Digest: app("extra"), Note: "vmlinuz"}}}},
			events: apps, code: verdict.CodeBootRule, want: []string{"3 boot applications were measured, the sequence expects 4", "(vmlinuz)"}},
		{name: "boot apps: an extra one after the sequence", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Sequence: known(app("shim"), app("grub"))}},
			events: apps, code: verdict.CodeBootRule, want: []string{"unexpected boot application #12"}},
		{name: "boot apps: as a set, any order", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Allow: known(app("kernel"), app("grub"), app("shim"))}}, events: apps},
		{name: "boot apps: one not in the set", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Allow: known(app("shim"), app("grub"), app("kernel"))}},
			events: append(apps[:2:2], imageLoad(12, `\EFI\evil.efi`, "evil")), code: verdict.CodeBootRule,
			want: []string{`PCR 4: not in the allowed set: boot application #12 "\EFI\evil.efi" has digest ` + hexOf(app("evil"))}},
		{name: "boot apps: required one not loaded", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Require: []Known{{Digest: app("shim-15.8"), Note: "shim 15.8"}}}},
			events: apps, code: verdict.CodeBootRule, want: []string{"the required boot application " + hexOf(app("shim-15.8")) + " (shim 15.8) was not measured"}},
		{name: "boot apps: none measured", e: Expectation{PCR: 4, BootApps: &DigestSetRule{Allow: known(app("shim"))}},
			code: verdict.CodeEventMissing, want: []string{"no EV_EFI_BOOT_SERVICES_APPLICATION event"}},
		// PCR 8
		{name: "cmdline: kernel matches", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`\(hd0,gpt2\)/vmlinuz-\S+ root=UUID=\S+ ro quiet`)}}}, events: texts},
		{name: "cmdline: init=/bin/sh", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`\S+ root=UUID=\S+ ro quiet`)}}},
			events: []eventlog.Event{grub(22, "kernel_cmdline: ", "console=ttyS0 init=/bin/sh")}, code: verdict.CodeBootRule,
			want: []string{`PCR 8: kernel command line "console=ttyS0 init=/bin/sh" (event #22) matches no allowed pattern`}},
		{name: "cmdline: patterns are anchored", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`.* ro`)}}},
			events: texts, code: verdict.CodeBootRule, want: []string{"matches no allowed pattern"}},
		{name: "cmdline: none measured", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`.*`)}}},
			events: texts[:2], code: verdict.CodeEventMissing, want: []string{"no kernel command line was measured"}},
		{name: "cmdline: text not covered by the digest", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`.*`)}}},
			events: append(texts[:2:2], ev(22, 8, eventlog.EvIPL, []byte("kernel_cmdline: "+cmdline+"\x00"), sum([]byte(cmdline+" init=/bin/sh")))),
			code:   verdict.CodeBootRule, want: []string{"event #22 EV_IPL", "does not hash to its digest"}},
		{name: "cmdline: RHEL's GRUB texts", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Kernel: []Pattern{MustPattern(`\S+ ro`)}, Commands: []Pattern{MustPattern(`linux .*`)}}},
			events: []eventlog.Event{ev(1, 8, eventlog.EvIPL, []byte("grub_cmd linux /vmlinuz ro\x00"), sum([]byte("linux /vmlinuz ro\x00"))),
				ev(2, 8, eventlog.EvIPL, []byte("grub_kernel_cmdline /vmlinuz ro\x00"), sum([]byte("/vmlinuz ro")))}},
		{name: "cmdline: a GRUB command not allowed", e: Expectation{PCR: 8, Cmdline: &CmdlineRule{Commands: []Pattern{MustPattern(`set root=\S+`), MustPattern(`linux .*`)}}},
			events: append(texts, grub(23, "grub_cmd: ", "insmod evil")), code: verdict.CodeBootRule,
			want: []string{`GRUB ran commands that match no allowed pattern: "insmod evil" (event #23)`}},
		// PCR 9
		{name: "files: initrd loaded", e: Expectation{PCR: 9, Files: &DigestSetRule{Require: []Known{{Digest: fd("initrd"), Note: "/initrd.img-6.8"}}}}, events: files},
		{name: "files: another initrd", e: Expectation{PCR: 9, Files: &DigestSetRule{Require: []Known{{Digest: fd("initrd"), Note: "/initrd.img-6.8"}}}},
			events: with(files, 2, file(32, "(hd0,gpt2)/initrd.img-6.8", "patched initrd")), code: verdict.CodeBootRule,
			want: []string{"PCR 9: the required file " + hexOf(fd("initrd")) + " (/initrd.img-6.8) was not measured"}},
		{name: "files: one not in the set", e: Expectation{PCR: 9, Files: &DigestSetRule{Allow: known(fd("cfg"), fd("kernel"), fd("initrd"))}},
			events: with(files, 3, file(33, "(hd0,gpt2)/evil.mod", "evil")), code: verdict.CodeBootRule, want: []string{`file #33 "(hd0,gpt2)/evil.mod" has digest`}},
		{name: "files: none measured", e: Expectation{PCR: 9, Files: &DigestSetRule{Require: known(fd("initrd"))}},
			code: verdict.CodeEventMissing, want: []string{"PCR 9: no EV_IPL event: no file was measured"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Bank = evidence.SHA256
			r := &Reference{Name: "rules", Version: 1, Class: BIOS, Expect: []Expectation{tc.e}}
			if err := r.Validate(); err != nil {
				t.Fatalf("reference: %v", err)
			}
			m := &verify.Measurements{PCRs: map[evidence.Bank]map[int][]byte{evidence.SHA256: {tc.e.PCR: d(evidence.SHA256, "any")}}, Events: tc.events}
			p := &Policy{Name: "p", Version: 1, Require: []Class{BIOS}, Approved: map[Class][]string{BIOS: {"rules"}}}
			if !NeedsEvents(p, map[string]*Reference{"rules": r}) {
				t.Fatal("NeedsEvents is false for a boot-chain rule")
			}
			res := Evaluate(p, map[string]*Reference{"rules": r}, m)
			if tc.code == "" {
				if res.Level != verdict.Trusted {
					t.Fatalf("got %s %v, want trusted", res.Level, res.Reasons)
				}
				return
			}
			if res.Level != verdict.Untrusted {
				t.Fatalf("got %s, want untrusted", res.Level)
			}
			got := res.Reasons[0]
			if got.Code != tc.code || !pcrIs(got, tc.code, tc.e.PCR) || got.Class != string(BIOS) || got.Bank != "sha256" {
				t.Fatalf("reason %+v, want %s on PCR %d", got, tc.code, tc.e.PCR)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Message, w) {
					t.Errorf("reason %q does not say %q", got.Message, w)
				}
			}
		})
	}
}

func hexOf(b []byte) string { return Hex(b).String() }

func TestBootRulesValidate(t *testing.T) {
	h := strings.Repeat("ab", 32)
	bad := []struct {
		json string
		want string
	}{
		{`{"pcr":4,"bank":"sha256","secure_boot":{"enabled":true}}`, "secure_boot rules apply to PCR 7 only"},
		{`{"pcr":7,"bank":"sha256","boot_apps":{"allow":["` + h + `"]}}`, "boot_apps rules apply to PCR 4 only"},
		{`{"pcr":9,"bank":"sha256","cmdline":{"kernel":["x"]}}`, "cmdline rules apply to PCR 8 only"},
		{`{"pcr":8,"bank":"sha256","files":{"allow":["` + h + `"]}}`, "files rules apply to PCR 9 only"},
		{`{"pcr":7,"bank":"sha256","secure_boot":{}}`, "secure_boot rule checks nothing"},
		{`{"pcr":7,"bank":"sha256","secure_boot":{"db":{}}}`, "secure_boot db rule checks nothing"},
		{`{"pcr":7,"bank":"sha1","secure_boot":{"dbx":{"require":["abcd"]}}}`, "digest abcd is 2 bytes, want 32"},
		{`{"pcr":7,"bank":"sha1","secure_boot":{"kek":{"digests":["` + h + `"]}}}`, "is 32 bytes, want 20"},
		{`{"pcr":4,"bank":"sha384","boot_apps":{"sequence":["` + h + `"]}}`, "want 48"},
		{`{"pcr":4,"bank":"sha256","boot_apps":{}}`, "boot_apps rule checks nothing"},
		{`{"pcr":8,"bank":"sha256","cmdline":{}}`, "cmdline rule checks nothing"},
	}
	for _, tc := range bad {
		var e Expectation
		if err := json.Unmarshal([]byte(tc.json), &e); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		r := &Reference{Name: "x", Class: BIOS, Expect: []Expectation{e}}
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.json, err, tc.want)
		}
	}
	// Patterns are compiled when read, with an error that names the pattern.
	for _, tc := range []struct{ json, want string }{
		{`{"pcr":8,"bank":"sha256","cmdline":{"kernel":["root=(\\S+"]}}`, `pattern "root=(\\S+": error parsing regexp: missing closing )`},
		{`{"pcr":8,"bank":"sha256","cmdline":{"kernel":["` + strings.Repeat("a", 1025) + `"]}}`, "pattern of 1025 bytes: the limit is 1024"},
		{`{"pcr":8,"bank":"sha256","cmdline":{"kernel":[7]}}`, "pattern must be a string"},
		{`{"pcr":9,"bank":"sha256","files":{"allow":[{"digest":"` + h + `","nope":1}]}}`, `unknown field "nope"`},
	} {
		if err := json.Unmarshal([]byte(tc.json), &Expectation{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.json, err, tc.want)
		}
	}
	many := make([]Pattern, 65)
	for i := range many {
		many[i] = MustPattern("a")
	}
	r65 := &Reference{Name: "x", Class: VMM, Expect: []Expectation{{PCR: 8, Bank: evidence.SHA256, Cmdline: &CmdlineRule{Commands: many}}}}
	if err := r65.Validate(); err == nil || !strings.Contains(err.Error(), "cmdline commands: 65 patterns, the limit is 64") {
		t.Errorf("65 patterns: %v", err)
	}
	// A Pattern built without NewPattern is refused, and matches nothing.
	r := &Reference{Name: "x", Class: VMM, Expect: []Expectation{{PCR: 8, Bank: evidence.SHA256, Cmdline: &CmdlineRule{Kernel: []Pattern{{}}}}}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "was not compiled") {
		t.Errorf("uncompiled pattern: %v", err)
	}
	if (Pattern{}).Match("") {
		t.Error("the zero Pattern matched")
	}
}

func TestKnownAndPatternJSON(t *testing.T) {
	h := bytes.Repeat([]byte{0xab}, 32)
	in := DigestSetRule{Allow: []Known{{Digest: h}, {Digest: h, Note: "shimx64.efi"}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"allow":["` + hexOf(h) + `",{"digest":"` + hexOf(h) + `","note":"shimx64.efi"}]}`
	if string(b) != want {
		t.Fatalf("marshal: %s\nwant %s", b, want)
	}
	var out DigestSetRule
	if err := json.Unmarshal(b, &out); err != nil || out.Allow[1].Note != "shimx64.efi" || !bytes.Equal(out.Allow[0].Digest, h) {
		t.Fatalf("unmarshal: %+v %v", out, err)
	}
	c := CmdlineRule{Kernel: []Pattern{MustPattern(`\S+ ro`)}}
	b, _ = json.Marshal(c)
	var c2 CmdlineRule
	if err := json.Unmarshal(b, &c2); err != nil || string(b) != `{"kernel":["\\S+ ro"]}` || !c2.Kernel[0].Match("/vmlinuz ro") {
		t.Fatalf("pattern round trip: %s %v", b, err)
	}
}

func TestCertDesc(t *testing.T) {
	if got := certDesc(selfSigned(t, "Test DB CA")); got != "CN=Test DB CA" {
		t.Errorf("certDesc = %q", got)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{Organization: []string{"Acme"}}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := certDesc(der); got != "O=Acme" {
		t.Errorf("certDesc without a CN = %q", got)
	}
	for _, b := range [][]byte{nil, {0x30}, {0x30, 0x03, 0x30, 0x01, 0x02}, der[:len(der)/2]} {
		if got := certDesc(b); !strings.Contains(got, "unparsable") {
			t.Errorf("certDesc(% x) = %q", b, got)
		}
	}
}
