package txtlog_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/txtlog"
	"trustpool/internal/verify/verifytest"
)

// mem is sparse physical memory: regions at their base addresses. Reading
// outside every region fails, as /dev/mem does for unmapped addresses.
type mem map[uint64][]byte

func (m mem) ReadAt(p []byte, off int64) (int, error) {
	for base, b := range m {
		if uint64(off) >= base && uint64(off)+uint64(len(p)) <= base+uint64(len(b)) {
			return copy(p, b[uint64(off)-base:]), nil
		}
	}
	return 0, io.EOF
}

const (
	heapBase  = 0x7a000000
	heapSize  = 0xe0000
	container = 0x7b000000
	allocated = 0x10000
)

type le []byte

func (b le) u32(v uint32) le { return binary.LittleEndian.AppendUint32(b, v) }
func (b le) u64(v uint64) le { return binary.LittleEndian.AppendUint64(b, v) }

// table is a heap table with its uint64 size (counting itself) in front.
func table(body []byte) le   { return le{}.u64(uint64(8 + len(body))).raw(body) }
func (b le) raw(v []byte) le { return append(b, v...) }

// osSinit is an OsSinitData table of the given version: the fixed fields
// (version, flags, nine uint64s, capabilities, EFI RSDT pointer), then
// extended data elements.
func osSinit(version uint32, elems ...le) le {
	b := le{}.u32(version).u32(0)
	for range 9 {
		b = b.u64(0x1000)
	}
	b = b.u32(0).u64(0)
	for _, e := range elems {
		b = append(b, e...)
	}
	return b
}

func elem(typ uint32, data []byte) le { return le{}.u32(typ).u32(uint32(8 + len(data))).raw(data) }

func logPtr(addr uint64, alloc, first, next uint32) le {
	return elem(8, le{}.u64(addr).u32(alloc).u32(first).u32(next))
}

var end = elem(0, nil)

// image lays out a TXT host's memory as the TXT Software Development Guide
// describes it: the public registers, a heap of four tables, the event
// container.
func image(sinit le, log []byte) mem {
	regs := make([]byte, 0x400)
	binary.LittleEndian.PutUint64(regs[0x300:], heapBase)
	binary.LittleEndian.PutUint64(regs[0x308:], heapSize)
	heap := make([]byte, heapSize)
	var h le
	h = append(h, table(le{}.u32(6).u32(0).u64(0).u64(0).u32(8).u32(0).u32(0).raw(end))...) // BiosData v6
	h = append(h, table(make([]byte, 0x40))...)                                             // OsMleData (tboot's)
	h = append(h, table(sinit)...)
	h = append(h, table(le{}.u32(9).raw(make([]byte, 0x80)))...) // SinitMleData
	copy(heap, h)
	c := make([]byte, allocated)
	copy(c, log)
	return mem{txtlog.PublicSpace: regs, heapBase: heap, container: c}
}

func TestRead(t *testing.T) {
	log := verifytest.DRTMLog("xen-4.17").Bytes()
	custom := elem(4, bytes.Repeat([]byte{0xcc}, 16))
	m := image(osSinit(7, custom, logPtr(container, allocated, 0, uint32(len(log))), end), log)
	got, err := txtlog.Read(m)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !bytes.Equal(got, log) {
		t.Fatalf("Read returned %d bytes, want the %d-byte log", len(got), len(log))
	}
	l, err := eventlog.Parse(got)
	if err != nil {
		t.Fatalf("the log read does not parse: %v", err)
	}
	if _, _, err := l.Replay(evidence.SHA256, true); err != nil {
		t.Fatal(err)
	}
	loc, err := txtlog.Locate(m)
	if err != nil || loc.HeapBase != heapBase || loc.Container != container || loc.Allocated != allocated || loc.Next != uint32(len(log)) {
		t.Errorf("Locate = %+v, %v", loc, err)
	}

	// A FirstRecordOffset past the Spec ID header: the header at the
	// container's start is kept.
	hdr := len(eventlog.NewBuilder(evidence.SHA1, evidence.SHA256).Bytes())
	m = image(osSinit(7, logPtr(container, allocated, uint32(hdr), uint32(len(log))), end), log)
	if got, err := txtlog.Read(m); err != nil || !bytes.Equal(got, log) {
		t.Errorf("First past the header: %d bytes, %v", len(got), err)
	}
}

func TestReadErrors(t *testing.T) {
	log := verifytest.DRTMLog("xen").Bytes()
	good := logPtr(container, allocated, 0, uint32(len(log)))
	noRegs := image(osSinit(7, good, end), log)
	delete(noRegs, txtlog.PublicSpace)
	ones := image(osSinit(7, good, end), log)
	copy(ones[txtlog.PublicSpace][0x300:], bytes.Repeat([]byte{0xff}, 16))
	zero := image(osSinit(7, good, end), log)
	copy(zero[txtlog.PublicSpace][0x300:], make([]byte, 16))
	badSize := image(osSinit(7, good, end), log)
	binary.LittleEndian.PutUint64(badSize[heapBase][0:], heapSize+1)

	for _, tc := range []struct {
		name  string
		m     mem
		want  string
		noTXT bool
	}{
		{"no TXT registers", noRegs, "cannot read the TXT public configuration registers", true},
		{"registers all-ones", ones, "all-ones", true},
		{"heap zero", zero, "TXT.HEAP.BASE 0x0", true},
		{"BiosData size past the heap", badSize, "BiosData size", false},
		{"OsSinitData version 5", image(osSinit(5, good, end), log), "version 5 has no extended data elements", false},
		{"no event log element", image(osSinit(7, elem(4, make([]byte, 16)), end), log), "no HEAP_EVENT_LOG_POINTER_ELEMENT2_1", false},
		{"no elements at all", image(osSinit(7), log), "no HEAP_EVENT_LOG_POINTER_ELEMENT2_1", false},
		{"TPM 1.2 log pointer only", image(osSinit(6, elem(5, le{}.u64(container)), end), log), "no HEAP_EVENT_LOG_POINTER_ELEMENT2_1", false},
		{"element size zero", image(osSinit(7, le{}.u32(4).u32(0)), log), "has size 0", false},
		{"element size past the table", image(osSinit(7, le{}.u32(4).u32(4096)), log), "has size 4096", false},
		{"short pointer element", image(osSinit(7, elem(8, make([]byte, 12)), end), log), "12 data bytes", false},
		{"null pointer", image(osSinit(7, logPtr(0, allocated, 0, 100), end), log), "pointer is zero", false},
		{"records past the container", image(osSinit(7, logPtr(container, 100, 0, 200), end), log), "do not lie within", false},
		{"empty log", image(osSinit(7, logPtr(container, allocated, 0, 0), end), log), "is empty", false},
		{"container unmapped", image(osSinit(7, logPtr(0x1000, allocated, 0, 100), end), log), "read TXT event log at 0x1000", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := txtlog.Read(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, txtlog.ErrNoTXT) != tc.noTXT {
				t.Fatalf("Read = %v, want an error containing %q (ErrNoTXT: %v)", err, tc.want, tc.noTXT)
			}
		})
	}
}

// FuzzLocate feeds Locate arbitrary heaps: it must never panic or read
// outside the heap it was given beyond the container it reports.
func FuzzLocate(f *testing.F) {
	log := verifytest.DRTMLog("xen").Bytes()
	m := image(osSinit(7, logPtr(container, allocated, 0, uint32(len(log))), end), log)
	f.Add(m[heapBase][:0x400])
	f.Add(m[heapBase][:0x80])
	f.Fuzz(func(t *testing.T, heap []byte) {
		regs := make([]byte, 0x400)
		binary.LittleEndian.PutUint64(regs[0x300:], heapBase)
		binary.LittleEndian.PutUint64(regs[0x308:], uint64(len(heap)))
		loc, err := txtlog.Locate(mem{txtlog.PublicSpace: regs, heapBase: heap})
		if err == nil && (loc.First > loc.Next || uint64(loc.Next) > loc.Allocated || loc.Container == 0) {
			t.Fatalf("Locate accepted %+v", loc)
		}
	})
}
