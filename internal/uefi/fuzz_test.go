package uefi

import (
	"crypto/sha256"
	"testing"

	"trustpool/internal/eventlog"
)

// FuzzParseVariable feeds the variable and signature-list decoders arbitrary
// event data, seeded with the PCR 7 variables of real logs. They must never
// panic, and what they accept must account for every byte.
func FuzzParseVariable(f *testing.F) {
	for _, name := range realLogs {
		for _, e := range readLog(f, name).Events {
			if e.PCR == 7 && (e.Type == eventlog.EvEFIVariableDriverConf || e.Type == eventlog.EvEFIVariableAuthority) {
				f.Add(e.Data)
			}
		}
	}
	h := sha256.Sum256(nil)
	f.Add(variable(ImageSecurityDatabase, "dbx", sigList(CertSHA256, GlobalVariable, h[:])))
	f.Add(variable(GlobalVariable, "SecureBoot", []byte{1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVariable(b)
		if err != nil {
			return
		}
		if len([]rune(v.Name)) > MaxNameChars || len(v.Data) > len(b)-32 {
			t.Fatalf("variable %q with %d data bytes from %d bytes", v.Name, len(v.Data), len(b))
		}
		checkLists(t, v.Data)
	})
}

// FuzzParseSignatureLists feeds the signature-list decoder arbitrary bytes,
// seeded with the PK, KEK, db and dbx contents of real logs.
func FuzzParseSignatureLists(f *testing.F) {
	for _, name := range realLogs {
		for _, e := range readLog(f, name).Events {
			if e.PCR == 7 && e.Type == eventlog.EvEFIVariableDriverConf {
				if v, err := ParseVariable(e.Data); err == nil {
					f.Add(v.Data)
				}
			}
		}
	}
	h := sha256.Sum256(nil)
	f.Add(sigList(CertSHA256, GlobalVariable, h[:], h[:]))
	f.Fuzz(func(t *testing.T, b []byte) { checkLists(t, b) })
}

func checkLists(t *testing.T, b []byte) {
	lists, err := ParseSignatureLists(b)
	if err != nil {
		return
	}
	// Every entry is owner + data inside the input: the sizes add up to at
	// most the input, with 28 header bytes per list.
	n := 0
	for _, l := range lists {
		n += 28
		for _, s := range l.Signatures {
			n += 16 + len(s.Data)
		}
	}
	if n > len(b) || len(lists) > MaxLists {
		t.Fatalf("%d lists of %d bytes from %d bytes", len(lists), n, len(b))
	}
}

// FuzzImagePath: the device-path walk never panics.
func FuzzImagePath(f *testing.F) {
	for _, e := range readLog(f, "rhel8-uefi.bin").Events {
		if e.Type == eventlog.EvEFIBootServicesApp {
			f.Add(e.Data)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ImagePath(b) })
}
