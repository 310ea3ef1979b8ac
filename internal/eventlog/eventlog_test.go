package eventlog_test

import (
	"bytes"
	"crypto"
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// realLogs are the real firmware logs in testdata (see README.md): all but
// the last two are crypto-agile, those two SHA-1 format.
var realLogs = []string{
	"arch-linux-workstation.bin",
	"coreos_36_shielded_vm_no_secure_boot_eventlog",
	"crypto_agile_eventlog",
	"gdc-host.bin",
	"glinux-alex.bin",
	"rhel8-uefi.bin",
	"sb_cert_eventlog",
	"ubuntu-2404-amd-sevsnp.bin",
	"ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
	"debian-10.bin",
	"windows_gcp_shielded_vm.bin",
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cryptoHash(b evidence.Bank) crypto.Hash {
	switch b {
	case evidence.SHA1:
		return crypto.SHA1
	case evidence.SHA256:
		return crypto.SHA256
	case evidence.SHA384:
		return crypto.SHA384
	}
	panic("unknown bank " + string(b))
}

func hashOf(b evidence.Bank, parts ...[]byte) []byte {
	h := cryptoHash(b).New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// sampleBoot adds a small but realistic boot to b: StartupLocality, CRTM,
// firmware blobs, separators on 0-7, a boot loader and a kernel.
func sampleBoot(b *eventlog.Builder, locality byte) []eventlog.Event {
	var evs []eventlog.Event
	evs = append(evs, b.Add(0, eventlog.EvNoAction, append([]byte("StartupLocality\x00"), locality)))
	evs = append(evs, b.Add(0, eventlog.EvSCRTMVersion, []byte("1.0.0\x00")))
	evs = append(evs, b.Add(0, eventlog.EvEFIPlatformFirmware, []byte("firmware volume 1")))
	evs = append(evs, b.Add(1, eventlog.EvEFIHandoffTables, []byte("SMBIOS")))
	for pcr := range 8 {
		evs = append(evs, b.Add(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0}))
	}
	evs = append(evs, b.Add(4, eventlog.EvEFIBootServicesApp, []byte("shimx64.efi")))
	evs = append(evs, b.Add(4, eventlog.EvEFIBootServicesApp, []byte("grubx64.efi")))
	evs = append(evs, b.Add(8, eventlog.EvIPL, []byte("grub_cmd: linux /vmlinuz root=/dev/sda1")))
	evs = append(evs, b.Add(9, eventlog.EvIPL, []byte("/vmlinuz")))
	return evs
}

func TestBuilderRoundTrip(t *testing.T) {
	for _, banks := range [][]evidence.Bank{
		{evidence.SHA256},
		{evidence.SHA1, evidence.SHA256},
		{evidence.SHA1, evidence.SHA256, evidence.SHA384},
		{evidence.SHA384, evidence.SHA1},
	} {
		t.Run(bankNames(banks), func(t *testing.T) {
			b := eventlog.NewBuilder(banks...)
			want := sampleBoot(b, 0)
			want = append(want, b.Add(14, eventlog.EvIPL, nil)) // empty event data
			img := []eventlog.Digest{}
			for _, bank := range banks {
				img = append(img, eventlog.Digest{Bank: bank, Value: hashOf(bank, []byte("a PE image"))})
			}
			want = append(want, b.AddDigests(4, eventlog.EvEFIBootServicesApp, img, []byte("image load event")))

			l, err := eventlog.Parse(b.Bytes())
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(l.Banks, banks) {
				t.Errorf("Banks = %v, want %v", l.Banks, banks)
			}
			if b.Len() != len(want) || len(l.Events) != len(want) {
				t.Fatalf("%d events parsed, builder has %d, want %d", len(l.Events), b.Len(), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(l.Events[i], want[i]) {
					t.Errorf("event %d = %+v, want %+v", i, l.Events[i], want[i])
				}
			}
			for i, e := range l.Events {
				if e.Index != i {
					t.Errorf("event %d has Index %d", i, e.Index)
				}
				for _, bank := range banks {
					d := e.Digest(bank)
					var want []byte
					switch {
					case e.Type == eventlog.EvNoAction:
						want = make([]byte, bank.Size())
					case i == len(l.Events)-1: // the AddDigests event
						want = hashOf(bank, []byte("a PE image"))
					default:
						want = hashOf(bank, e.Data)
					}
					if !bytes.Equal(d, want) {
						t.Errorf("event %d: %s digest %x, want %x", i, bank, d, want)
					}
				}
			}
		})
	}
}

func bankNames(banks []evidence.Bank) string {
	s := make([]string, len(banks))
	for i, b := range banks {
		s[i] = string(b)
	}
	return strings.Join(s, "+")
}

func TestNewBuilderDefaultsToSHA256(t *testing.T) {
	b := eventlog.NewBuilder()
	if got := b.Banks(); !reflect.DeepEqual(got, []evidence.Bank{evidence.SHA256}) {
		t.Errorf("Banks() = %v, want [sha256]", got)
	}
	b = eventlog.NewBuilder("md5", evidence.SHA1)
	if got := b.Banks(); !reflect.DeepEqual(got, []evidence.Bank{evidence.SHA1}) {
		t.Errorf("Banks() = %v, want [sha1]", got)
	}
}

// replayByHand extends PCRs the slow, obvious way, as the reference for Replay.
func replayByHand(bank evidence.Bank, evs []eventlog.Event, drtm bool) (vals [evidence.NumPCRs][]byte, ext [evidence.NumPCRs]bool) {
	for i := range vals {
		vals[i] = make([]byte, bank.Size())
		if i >= 17 && i <= 22 && !drtm {
			vals[i] = bytes.Repeat([]byte{0xff}, bank.Size())
		}
	}
	for _, e := range evs {
		if e.Type == eventlog.EvNoAction {
			if s := string(e.Data); strings.HasPrefix(s, "StartupLocality\x00") && len(s) == 17 {
				vals[0][bank.Size()-1] = e.Data[16]
			}
			continue
		}
		vals[e.PCR] = hashOf(bank, vals[e.PCR], e.Digest(bank))
		ext[e.PCR] = true
	}
	return vals, ext
}

func TestReplay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		locality byte
		drtm     bool
		pcrs     []int // events added after the sample boot
	}{
		{name: "srtm", locality: 0},
		{name: "startup locality 3", locality: 3},
		{name: "startup locality 4 (H-CRTM)", locality: 4},
		{name: "drtm pcrs from zero", drtm: true, pcrs: []int{17, 18, 18, 19}},
		{name: "drtm pcrs from ones without a launch", pcrs: []int{17, 22}},
		{name: "pcr 23 (application)", pcrs: []int{23, 23}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256, evidence.SHA384)
			evs := sampleBoot(b, tc.locality)
			for i, pcr := range tc.pcrs {
				evs = append(evs, b.Add(pcr, eventlog.EvTXTMLEHash, []byte{byte(i)}))
			}
			l, err := eventlog.Parse(b.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for _, bank := range b.Banks() {
				got, ext, err := l.Replay(bank, tc.drtm)
				if err != nil {
					t.Fatalf("Replay(%s): %v", bank, err)
				}
				want, wantExt := replayByHand(bank, evs, tc.drtm)
				for i := range got {
					if !bytes.Equal(got[i], want[i]) {
						t.Errorf("%s PCR %d = %x, want %x", bank, i, got[i], want[i])
					}
				}
				if ext != wantExt {
					t.Errorf("%s extended = %v, want %v", bank, ext, wantExt)
				}
			}
			// PCR 0 starts at the locality: check one value against the
			// specification's formula directly.
			got, _, _ := l.Replay(evidence.SHA256, tc.drtm)
			start := make([]byte, 32)
			start[31] = tc.locality
			pcr0 := hashOf(evidence.SHA256, start, evs[1].Digest(evidence.SHA256))
			pcr0 = hashOf(evidence.SHA256, pcr0, evs[2].Digest(evidence.SHA256))
			pcr0 = hashOf(evidence.SHA256, pcr0, evs[4].Digest(evidence.SHA256))
			if !bytes.Equal(got[0], pcr0) {
				t.Errorf("PCR 0 = %x, want %x", got[0], pcr0)
			}
		})
	}
}

func TestReplayUntouchedPCRs(t *testing.T) {
	l, err := eventlog.Parse(eventlog.NewBuilder().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, drtm := range []bool{false, true} {
		vals, ext, err := l.Replay(evidence.SHA256, drtm)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			want := make([]byte, 32)
			if i >= 17 && i <= 22 && !drtm {
				want = bytes.Repeat([]byte{0xff}, 32)
			}
			if !bytes.Equal(v, want) || ext[i] {
				t.Errorf("drtm=%v: PCR %d = %x extended=%v, want %x unextended", drtm, i, v, ext[i], want)
			}
		}
	}
}

func TestReplayErrors(t *testing.T) {
	sha256Log := func(add func(b *eventlog.Builder)) *eventlog.Log {
		b := eventlog.NewBuilder(evidence.SHA256)
		add(b)
		l, err := eventlog.Parse(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		name string
		log  *eventlog.Log
		bank evidence.Bank
		want string
	}{
		{
			name: "bank not in log",
			log:  sha256Log(func(b *eventlog.Builder) { b.Add(0, eventlog.EvPostCode, []byte("x")) }),
			bank: evidence.SHA1,
			want: "no sha1 digests",
		},
		{
			name: "startup locality after pcr 0 extended",
			log: sha256Log(func(b *eventlog.Builder) {
				b.Add(0, eventlog.EvPostCode, []byte("x"))
				b.Add(0, eventlog.EvNoAction, []byte("StartupLocality\x00\x03"))
			}),
			bank: evidence.SHA256,
			want: "after PCR 0 was extended",
		},
		{
			name: "startup locality 2",
			log: sha256Log(func(b *eventlog.Builder) {
				b.Add(0, eventlog.EvNoAction, []byte("StartupLocality\x00\x02"))
			}),
			bank: evidence.SHA256,
			want: "StartupLocality 2",
		},
		{
			name: "hand-made log: pcr out of range",
			log: &eventlog.Log{Banks: []evidence.Bank{evidence.SHA256}, Events: []eventlog.Event{
				{PCR: 24, Type: eventlog.EvPostCode, Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: make([]byte, 32)}}},
			}},
			bank: evidence.SHA256,
			want: "out of range",
		},
		{
			name: "hand-made log: short digest",
			log: &eventlog.Log{Banks: []evidence.Bank{evidence.SHA256}, Events: []eventlog.Event{
				{PCR: 1, Type: eventlog.EvPostCode, Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: make([]byte, 20)}}},
			}},
			bank: evidence.SHA256,
			want: "20 bytes, want 32",
		},
		{
			name: "hand-made log: digest missing",
			log: &eventlog.Log{Banks: []evidence.Bank{evidence.SHA1, evidence.SHA256}, Events: []eventlog.Event{
				{PCR: 1, Type: eventlog.EvPostCode, Digests: []eventlog.Digest{{Bank: evidence.SHA1, Value: make([]byte, 20)}}},
			}},
			bank: evidence.SHA256,
			want: "event 0 carries no sha256 digest",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.log.Replay(tc.bank, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Replay error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReplayHandMadeLogInAnyDigestOrder(t *testing.T) {
	d1, d256 := make([]byte, 20), make([]byte, 32)
	d256[0] = 1
	l := &eventlog.Log{Banks: []evidence.Bank{evidence.SHA1, evidence.SHA256}, Events: []eventlog.Event{
		{PCR: 2, Type: eventlog.EvPostCode, Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: d256}, {Bank: evidence.SHA1, Value: d1}}},
	}}
	vals, ext, err := l.Replay(evidence.SHA256, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := hashOf(evidence.SHA256, make([]byte, 32), d256); !bytes.Equal(vals[2], want) || !ext[2] {
		t.Errorf("PCR 2 = %x (extended %v), want %x", vals[2], ext[2], want)
	}
}

func TestExtend(t *testing.T) {
	for _, bank := range evidence.Banks {
		pcr, d := bytes.Repeat([]byte{1}, bank.Size()), bytes.Repeat([]byte{2}, bank.Size())
		if got, want := eventlog.Extend(bank, pcr, d), hashOf(bank, pcr, d); !bytes.Equal(got, want) {
			t.Errorf("Extend(%s) = %x, want %x", bank, got, want)
		}
		if pcr[0] != 1 {
			t.Errorf("Extend(%s) modified its input", bank)
		}
	}
	if got := eventlog.Extend(evidence.SHA256, make([]byte, 20), make([]byte, 32)); got != nil {
		t.Errorf("Extend with a short PCR = %x, want nil", got)
	}
	if got := eventlog.Extend("md5", make([]byte, 16), make([]byte, 16)); got != nil {
		t.Errorf("Extend(md5) = %x, want nil", got)
	}
}

// le builds little-endian bytes for hand-written logs.
type le []byte

func (b le) u32(v uint32) le  { return binary.LittleEndian.AppendUint32(b, v) }
func (b le) u16(v uint16) le  { return binary.LittleEndian.AppendUint16(b, v) }
func (b le) raw(v ...byte) le { return append(b, v...) }

// header writes a spec ID event with the given body.
func header(spec le) le {
	return le{}.u32(0).u32(eventlog.EvNoAction).raw(make([]byte, 20)...).u32(uint32(len(spec))).raw(spec...)
}

// specBody writes a TCG_EfiSpecIDEvent for the given (alg, size) pairs.
func specBody(algs ...[2]uint16) le {
	b := le("Spec ID Event03\x00").u32(0).raw(0, 2, 0, 2).u32(uint32(len(algs)))
	for _, a := range algs {
		b = b.u16(a[0]).u16(a[1])
	}
	return b.raw(0)
}

var (
	algSHA1   = [2]uint16{0x0004, 20}
	algSHA256 = [2]uint16{0x000b, 32}
	algSM3    = [2]uint16{0x0012, 32}
)

// sha1Event writes a TCG_PCR_EVENT (SHA-1 format) whose digest is the
// SHA-1 of data.
func sha1Event(pcr, typ uint32, data []byte) le {
	return le{}.u32(pcr).u32(typ).raw(hashOf(evidence.SHA1, data)...).u32(uint32(len(data))).raw(data...)
}

// event2 writes a TCG_PCR_EVENT2 with one digest per (alg, size) pair.
func event2(pcr, typ uint32, algs [][2]uint16, data []byte) le {
	b := le{}.u32(pcr).u32(typ).u32(uint32(len(algs)))
	for _, a := range algs {
		b = b.u16(a[0]).raw(bytes.Repeat([]byte{0xab}, int(a[1]))...)
	}
	return b.u32(uint32(len(data))).raw(data...)
}

func cat(parts ...le) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestParseAcceptsUnknownAlgorithm(t *testing.T) {
	// An SM3 bank is recorded by some TPMs; its digests are skipped.
	algs := [][2]uint16{algSM3, algSHA256}
	log := cat(header(specBody(algs...)), event2(3, eventlog.EvPostCode, algs, []byte("x")))
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l.Banks, []evidence.Bank{evidence.SHA256}) || len(l.Events) != 1 || len(l.Events[0].Digests) != 1 {
		t.Fatalf("parsed %+v, want one sha256 bank and one event with one digest", l)
	}
}

func TestParseRejects(t *testing.T) {
	one := [][2]uint16{algSHA256}
	two := [][2]uint16{algSHA1, algSHA256}
	okHeader := header(specBody(algSHA1, algSHA256))
	okEvent := event2(0, eventlog.EvPostCode, two, []byte("code"))
	big := func() []byte {
		b := cat(okHeader)
		for range eventlog.MaxEvents + 1 {
			b = append(b, event2(1, eventlog.EvPostCode, two, nil)...)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		log  []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"header pcr 1", cat(le{}.u32(1).u32(3).raw(make([]byte, 20)...).u32(uint32(len(specBody(algSHA256)))).raw(specBody(algSHA256)...)), "want the spec ID event"},
		{"header type ev_post_code", cat(le{}.u32(0).u32(1).raw(make([]byte, 20)...).u32(uint32(len(specBody(algSHA256)))).raw(specBody(algSHA256)...)), "want the spec ID event"},
		{"header digest not zero", cat(le{}.u32(0).u32(3).raw(bytes.Repeat([]byte{1}, 20)...).u32(uint32(len(specBody(algSHA256)))).raw(specBody(algSHA256)...)), "non-zero digest"},
		{"header data past end", cat(le{}.u32(0).u32(3).raw(make([]byte, 20)...).u32(1000).raw(specBody(algSHA256)...)), "data bytes"},
		{"spec version 1.2", cat(header(le("Spec ID Event03\x00").u32(0).raw(2, 1, 0, 2).u32(1).u16(0xb).u16(32).raw(0))), "version 1.2"},
		{"uintn size 3", cat(header(le("Spec ID Event03\x00").u32(0).raw(0, 2, 0, 3).u32(1).u16(0xb).u16(32).raw(0))), "uintnSize"},
		{"zero algorithms", cat(header(specBody())), "0 algorithms"},
		{"too many algorithms", cat(header(le("Spec ID Event03\x00").u32(0).raw(0, 2, 0, 2).u32(17))), "17 algorithms"},
		{"algorithm listed twice", cat(header(specBody(algSHA256, algSHA256))), "twice"},
		{"sha256 of size 20", cat(header(specBody([2]uint16{0xb, 20}))), "digest size 20"},
		{"unknown algorithm of size 0", cat(header(specBody([2]uint16{0x12, 0}, algSHA256))), "digest size 0"},
		{"unknown algorithm of size 65", cat(header(specBody([2]uint16{0x12, 65}, algSHA256))), "digest size 65"},
		{"only unknown algorithms", cat(header(specBody(algSM3))), "no PCR bank"},
		{"vendor info past end", cat(header(append(specBody(algSHA256)[:len(specBody(algSHA256))-1], 5))), "vendor info"},
		{"spec ID trailing bytes", cat(header(append(specBody(algSHA256), 0))), "trailing"},
		{"event pcr 24", cat(okHeader, event2(24, eventlog.EvPostCode, two, nil)), "PCR index 24"},
		{"event pcr 0xffffffff", cat(okHeader, event2(0xffffffff, eventlog.EvPostCode, two, nil)), "out of range"},
		{"three digests of two", cat(okHeader, event2(0, eventlog.EvPostCode, [][2]uint16{algSHA1, algSHA256, algSHA1}, nil)), "3 digests"},
		{"no-action count over the list", cat(okHeader, event2(0xffffffff, eventlog.EvNoAction, [][2]uint16{algSHA1, algSHA256, algSHA256}, nil)), "3 digests"},
		{"event pcr 24 with one digest of two", cat(okHeader, event2(24, eventlog.EvIPL, one, nil)), "PCR index 24 out of range for EV_IPL"},
		{"sha1 format: pcr 24", sha1Event(24, eventlog.EvPostCode, nil), "PCR index 24 out of range for EV_POST_CODE"},
		{"sha1 format: pcr 0xffffffff", cat(sha1Event(0, eventlog.EvPostCode, nil), sha1Event(0xffffffff, eventlog.EvSeparator, nil)), "event 1 at offset 32: PCR index 4294967295"},
		{"sha1 format: data past end", sha1Event(0, eventlog.EvPostCode, []byte("abc"))[:34], "3 bytes of event data, 2 left"},
		{"sha1 format: trailing partial event", append(sha1Event(0, eventlog.EvPostCode, nil), 1, 2), "truncated"},
		{"sha1 format: data over limit", le{}.u32(0).u32(1).raw(make([]byte, 20)...).u32(eventlog.MaxEventData + 1), "limit"},
		{"digest of unlisted algorithm", cat(okHeader, event2(0, eventlog.EvPostCode, [][2]uint16{algSHA1, algSM3}, nil)), "does not list"},
		{"same digest twice", cat(okHeader, event2(0, eventlog.EvPostCode, [][2]uint16{algSHA256, algSHA256}, nil)), "two digests"},
		{"event data past end", cat(okHeader, okEvent)[:len(okHeader)+len(okEvent)-1], "left in the log"},
		{"event data over limit", cat(okHeader, le{}.u32(0).u32(1).u32(2).u16(4).raw(make([]byte, 20)...).u16(0xb).raw(make([]byte, 32)...).u32(eventlog.MaxEventData+1)), "limit"},
		{"trailing partial event", append(cat(okHeader, okEvent), 1, 2, 3), "truncated"},
		{"digest cut short", cat(okHeader, okEvent)[:len(okHeader)+12+2+10], "truncated"},
		{"log over size limit", make([]byte, evidence.MaxEventLog+1), "limit"},
		{"too many events", big(), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := eventlog.Parse(tc.log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, %v; want an error containing %q", l, err, tc.want)
			}
		})
	}
}

func TestParseEveryTruncation(t *testing.T) {
	b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
	sampleBoot(b, 3)
	full := b.Bytes()
	// Cutting the log at an event boundary leaves a valid shorter log; every
	// other cut must fail.
	boundaries := map[int]bool{}
	c := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
	boundaries[len(c.Bytes())] = true
	l, err := eventlog.Parse(full)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Events {
		c.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
		boundaries[len(c.Bytes())] = true
	}
	if !bytes.Equal(c.Bytes(), full) {
		t.Fatal("rebuilding the parsed events did not reproduce the log")
	}
	for n := range len(full) {
		_, err := eventlog.Parse(full[:n])
		if boundaries[n] && err != nil {
			t.Errorf("log cut at event boundary %d: %v", n, err)
		}
		if !boundaries[n] && err == nil {
			t.Errorf("log cut at %d of %d parsed", n, len(full))
		}
	}
}

func TestParseAliasesInput(t *testing.T) {
	b := eventlog.NewBuilder(evidence.SHA256)
	b.Add(4, eventlog.EvIPL, []byte("data"))
	raw := b.Bytes()
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	// The documented contract: Data aliases the input, and appending to it
	// must not overwrite what follows.
	_ = append(l.Events[0].Data, 'X')
	_ = append(l.Events[0].Digests[0].Value, 'X')
	l2, err := eventlog.Parse(raw)
	if err != nil || !reflect.DeepEqual(l, l2) {
		t.Fatalf("appending to parsed slices changed the input: %v", err)
	}
}

// TestRealLogs parses captured firmware logs and checks that Replay agrees
// with go-attestation: the values we replay are ones go-attestation's
// EventLog.Verify accepts, and it verifies exactly the events we parsed.
func TestRealLogs(t *testing.T) {
	for _, name := range realLogs {
		t.Run(name, func(t *testing.T) {
			raw := readTestdata(t, name)
			l, err := eventlog.Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(l.Events) < 10 {
				t.Fatalf("%d events, want a real boot's worth", len(l.Events))
			}
			el, err := attest.ParseEventLog(raw)
			if err != nil {
				t.Fatalf("attest.ParseEventLog: %v", err)
			}
			for _, bank := range l.Banks {
				vals, ext, err := l.Replay(bank, false)
				if err != nil {
					t.Fatalf("Replay(%s): %v", bank, err)
				}
				var pcrs []attest.PCR
				for i := range vals {
					if ext[i] {
						pcrs = append(pcrs, attest.PCR{Index: i, Digest: vals[i], DigestAlg: cryptoHash(bank)})
					}
				}
				events, err := el.Verify(pcrs)
				if err != nil {
					t.Fatalf("%s: go-attestation does not accept our replay: %v", bank, err)
				}
				var ours []eventlog.Event
				for _, e := range l.Events {
					if e.Type != eventlog.EvNoAction {
						ours = append(ours, e)
					}
				}
				if len(events) != len(ours) {
					t.Errorf("%s: go-attestation verified %d events, we extended %d", bank, len(events), len(ours))
				}
				for i, ge := range events[:min(len(events), len(ours))] {
					e := ours[i]
					if ge.Index != e.PCR || uint32(ge.Type) != e.Type || !bytes.Equal(ge.Data, e.Data) || !bytes.Equal(ge.Digest, e.Digest(bank)) {
						t.Errorf("%s: event %d is PCR %d %s %x, go-attestation has PCR %d %s %x",
							bank, e.Index, e.PCR, eventlog.TypeName(e.Type), e.Digest(bank), ge.Index, eventlog.TypeName(uint32(ge.Type)), ge.Digest)
					}
				}

				// A changed digest must change our replay, and go-attestation
				// must then reject the values we replayed before.
				tampered := cloneLog(l)
				for i := range tampered.Events {
					if tampered.Events[i].Type != eventlog.EvNoAction {
						d := tampered.Events[i].Digest(bank)
						d[0] ^= 1
						pcr := tampered.Events[i].PCR
						got, _, err := tampered.Replay(bank, false)
						if err != nil {
							t.Fatal(err)
						}
						if bytes.Equal(got[pcr], vals[pcr]) {
							t.Errorf("%s: changing event %d did not change PCR %d", bank, i, pcr)
						}
						break
					}
				}
			}
		})
	}
}

func cloneLog(l *eventlog.Log) *eventlog.Log {
	c := &eventlog.Log{Banks: l.Banks}
	for _, e := range l.Events {
		ce := e
		ce.Digests = nil
		for _, d := range e.Digests {
			ce.Digests = append(ce.Digests, eventlog.Digest{Bank: d.Bank, Value: bytes.Clone(d.Value)})
		}
		c.Events = append(c.Events, ce)
	}
	return c
}

func TestTypeName(t *testing.T) {
	for _, tc := range []struct {
		typ  uint32
		want string
	}{
		{eventlog.EvPostCode, "EV_POST_CODE"},
		{eventlog.EvNoAction, "EV_NO_ACTION"},
		{eventlog.EvSeparator, "EV_SEPARATOR"},
		{eventlog.EvEFIBootServicesApp, "EV_EFI_BOOT_SERVICES_APPLICATION"},
		{eventlog.EvEFIVariableAuthority, "EV_EFI_VARIABLE_AUTHORITY"},
		{eventlog.EvTXTMLEHash, "EVTYPE_MLE_HASH"},
		{eventlog.EvTXTSinitPubKeyHash, "EVTYPE_SINIT_PUBKEY_HASH"},
		{0x1234, "0x1234"},
		{0x800000ff, "0x800000ff"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := eventlog.TypeName(tc.typ); got != tc.want {
				t.Errorf("TypeName(%#x) = %q, want %q", tc.typ, got, tc.want)
			}
		})
	}
}
