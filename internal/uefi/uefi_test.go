package uefi

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"trustpool/internal/eventlog"
)

// realLogs hold Secure Boot variables in PCR 7 (see testdata/README.md).
var realLogs = []string{"rhel8-uefi.bin", "sb_cert_eventlog", "cos-101-amd-sev.bin"}

func readLog(t testing.TB, name string) *eventlog.Log {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return l
}

// variable builds UEFI_VARIABLE_DATA.
func variable(vendor GUID, name string, data []byte) []byte {
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
func sigList(typ GUID, owner GUID, entries ...[]byte) []byte {
	size := 16 + len(entries[0])
	b := append([]byte(nil), typ[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(28+size*len(entries)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	for _, e := range entries {
		b = append(b, owner[:]...)
		b = append(b, e...)
	}
	return b
}

func TestGUID(t *testing.T) {
	if got := GlobalVariable.String(); got != "8be4df61-93ca-11d2-aa0d-00e098032b8c" {
		t.Fatalf("GlobalVariable = %s", got)
	}
	if GlobalVariable[0] != 0x61 || GlobalVariable[3] != 0x8b {
		t.Fatalf("GlobalVariable is not stored little-endian: % x", GlobalVariable[:4])
	}
}

func TestParseVariable(t *testing.T) {
	good := variable(GlobalVariable, "SecureBoot", []byte{1})
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr string
	}{
		{name: "SecureBoot", in: good, want: "SecureBoot"},
		{name: "empty data", in: variable(ImageSecurityDatabase, "dbx", nil), want: "dbx"},
		{name: "short header", in: good[:31], wantErr: "header"},
		{name: "truncated data", in: good[:len(good)-1], wantErr: "declared"},
		{name: "trailing bytes", in: append(bytes.Clone(good), 0), wantErr: "declared"},
		{name: "huge name", in: func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint64(b[16:], 1<<62)
			return b
		}(), wantErr: "name"},
		{name: "huge data length", in: func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint64(b[24:], ^uint64(0))
			return b
		}(), wantErr: "declared"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseVariable(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || v.Name != tc.want {
				t.Fatalf("got %q, %v; want %q", v.Name, err, tc.want)
			}
		})
	}
}

func TestParseSignatureLists(t *testing.T) {
	h1, h2 := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	two := sigList(CertSHA256, GlobalVariable, h1[:], h2[:])
	bad := func(edit func(b []byte)) []byte {
		b := bytes.Clone(two)
		edit(b)
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		entries int
		wantErr string
	}{
		{name: "empty database", in: nil, entries: 0},
		{name: "one list of two hashes", in: two, entries: 2},
		{name: "two lists", in: append(bytes.Clone(two), two...), entries: 4},
		{name: "truncated header", in: two[:20], wantErr: "header"},
		{name: "list size beyond the data", in: two[:len(two)-1], wantErr: "size"},
		{name: "list size below the header", in: bad(func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 27) }), wantErr: "size"},
		{name: "header size does not fit", in: bad(func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 1000) }), wantErr: "header"},
		{name: "signature size zero", in: bad(func(b []byte) { binary.LittleEndian.PutUint32(b[24:], 0) }), wantErr: "signature size"},
		{name: "signature size only an owner", in: bad(func(b []byte) { binary.LittleEndian.PutUint32(b[24:], 16) }), wantErr: "signature size"},
		{name: "entries not a multiple", in: bad(func(b []byte) { binary.LittleEndian.PutUint32(b[24:], 47) }), wantErr: "multiple"},
		{name: "huge sizes", in: bad(func(b []byte) {
			binary.LittleEndian.PutUint32(b[16:], ^uint32(0))
			binary.LittleEndian.PutUint32(b[20:], ^uint32(0))
		}), wantErr: "size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lists, err := ParseSignatureLists(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, l := range lists {
				n += len(l.Signatures)
			}
			if n != tc.entries {
				t.Fatalf("%d entries, want %d", n, tc.entries)
			}
		})
	}
	lists, _ := ParseSignatureLists(two)
	if lists[0].Type != CertSHA256 || !bytes.Equal(lists[0].Signatures[1].Data, h2[:]) || lists[0].Signatures[0].Owner != GlobalVariable {
		t.Fatalf("decoded %+v", lists)
	}
}

// TestRealVariables decodes the Secure Boot variables of real logs: every
// one parses, SecureBoot is one byte, and the X.509 entries of PK, KEK and
// db are certificates.
func TestRealVariables(t *testing.T) {
	for _, name := range realLogs {
		t.Run(name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, e := range readLog(t, name).Events {
				if e.PCR != 7 || e.Type != eventlog.EvEFIVariableDriverConf {
					continue
				}
				v, err := ParseVariable(e.Data)
				if err != nil {
					t.Fatalf("event %d: %v", e.Index, err)
				}
				seen[v.Name] = true
				if v.Name == "SecureBoot" {
					if v.Vendor != GlobalVariable || len(v.Data) != 1 {
						t.Fatalf("SecureBoot: vendor %s, data % x", v.Vendor, v.Data)
					}
					continue
				}
				lists, err := ParseSignatureLists(v.Data)
				if err != nil {
					t.Fatalf("%s: %v", v.Name, err)
				}
				for _, l := range lists {
					for _, s := range l.Signatures {
						if l.Type != CertX509 {
							continue
						}
						if _, err := x509.ParseCertificate(s.Data); err != nil {
							t.Errorf("%s: X.509 entry: %v", v.Name, err)
						}
					}
				}
			}
			for _, want := range []string{"SecureBoot", "PK", "KEK", "db", "dbx"} {
				if !seen[want] {
					t.Errorf("no %s variable", want)
				}
			}
		})
	}
}

func TestImagePath(t *testing.T) {
	var apps []string
	for _, e := range readLog(t, "rhel8-uefi.bin").Events {
		if e.Type == eventlog.EvEFIBootServicesApp {
			p, err := ImagePath(e.Data)
			if err != nil {
				t.Fatalf("event %d: %v", e.Index, err)
			}
			apps = append(apps, p)
		}
	}
	if len(apps) < 2 || !strings.Contains(strings.ToLower(apps[0]), "shim") {
		t.Fatalf("boot applications %q, want shim first", apps)
	}
	for _, b := range [][]byte{nil, make([]byte, 31), append(make([]byte, 24), 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0), append(binary.LittleEndian.AppendUint64(make([]byte, 24), 4), 4, 4, 2, 0)} {
		if _, err := ImagePath(b); err == nil {
			t.Errorf("ImagePath(% x) accepted", b)
		}
	}
}

func TestGrubText(t *testing.T) {
	tests := []struct {
		in   string
		kind GrubKind
		text string
	}{
		{"kernel_cmdline: /vmlinuz root=/dev/sda1 ro\x00", GrubKernelCmdline, "/vmlinuz root=/dev/sda1 ro"},
		{"grub_kernel_cmdline (hd0,gpt2)/vmlinuz ro\x00", GrubKernelCmdline, "(hd0,gpt2)/vmlinuz ro"},
		{"grub_cmd: set timeout=0\x00", GrubCommand, "set timeout=0"},
		{"grub_cmd insmod gzio\x00", GrubCommand, "insmod gzio"},
		{"module_cmdline: xen.gz\x00", GrubModuleCmdline, "xen.gz"},
		{"(hd0,gpt1)/EFI/redhat/grub.cfg\x00", GrubOther, "(hd0,gpt1)/EFI/redhat/grub.cfg"},
	}
	for _, tc := range tests {
		kind, text := GrubText([]byte(tc.in))
		if kind != tc.kind || text != tc.text {
			t.Errorf("GrubText(%q) = %d %q, want %d %q", tc.in, kind, text, tc.kind, tc.text)
		}
	}
	// Both GRUB flavours of the real logs measure one of GrubMeasured(text).
	for _, name := range []string{"rhel8-uefi.bin", "cos-101-amd-sev.bin"} {
		cmdlines := 0
		for _, e := range readLog(t, name).Events {
			if e.PCR != 8 || e.Type != eventlog.EvIPL {
				continue
			}
			kind, text := GrubText(e.Data)
			if kind == GrubOther {
				continue
			}
			if kind == GrubKernelCmdline {
				cmdlines++
			}
			d := e.Digest("sha256")
			ok := false
			for _, m := range GrubMeasured(text) {
				h := sha256.Sum256(m)
				ok = ok || bytes.Equal(h[:], d)
			}
			if !ok {
				t.Errorf("%s event %d %q: no measured form hashes to its digest", name, e.Index, text)
			}
		}
		if cmdlines != 1 {
			t.Errorf("%s: %d kernel command lines, want 1", name, cmdlines)
		}
	}
}
