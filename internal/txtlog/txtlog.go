// Package txtlog finds the TPM 2.0 DRTM event log that an Intel TXT launch
// (SINIT and tboot) leaves in the TXT heap, in physical memory.
//
// The way there (Intel TXT Software Development Guide, "TXT Configuration
// Registers" and appendix C "Intel TXT Heap Memory"): the public
// configuration space at physical 0xFED30000 holds TXT.HEAP.BASE (offset
// 0x300) and TXT.HEAP.SIZE (0x308). The heap holds four tables, each
// preceded by a uint64 size that counts the size field itself: BiosData,
// OsMleData, OsSinitData, SinitMleData. OsSinitData from version 6 on ends
// in extended data elements (uint32 type, uint32 size including the
// header), terminated by type 0. For TPM 2.0 the element of type 8,
// HEAP_EVENT_LOG_POINTER_ELEMENT2_1, gives the event container: its
// PhysicalAddress, AllocatedEventContainerSize, and FirstRecordOffset and
// NextRecordOffset, between which the records lie: a TCG_PCR_EVENT Spec ID
// header, then TCG_PCR_EVENT2 records, a crypto-agile log as
// internal/eventlog parses it.
//
// Read is pure over an io.ReaderAt of physical memory (/dev/mem in
// production, a byte image in tests). What it returns is as untrusted as
// any event log: it means something only once it replays to quoted PCRs.
package txtlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"trustpool/internal/evidence"
)

// Physical addresses and offsets of the TXT public configuration space.
const (
	PublicSpace = 0xFED30000
	heapBaseReg = 0x300 // TXT.HEAP.BASE
	heapSizeReg = 0x308 // TXT.HEAP.SIZE
)

// Heap layout constants.
const (
	// osSinitExtOffset is where OsSinitData's extended data elements
	// start: version, flags (uint32 each), MLE page table, MLE size, MLE
	// header base, the four VT-d PMR fields, LCP PO base and size (uint64
	// each), capabilities (uint32), EFI RSDT pointer (uint64).
	osSinitExtOffset = 4 + 4 + 9*8 + 4 + 8
	// minOsSinitVersion is the first OsSinitData version with extended
	// data elements.
	minOsSinitVersion = 6

	extTypeEnd          = 0
	extTypeEventLogPtr2 = 8 // HEAP_EVENT_LOG_POINTER_ELEMENT2_1
	extHeaderSize       = 8
	eventLogPtr2Size    = 8 + 4 + 4 + 4

	// maxHeap bounds TXT.HEAP.SIZE: real heaps are under 1 MiB.
	maxHeap = 64 << 20
)

// ErrNoTXT means no TXT launch can be found in this memory: the public
// configuration registers are absent, or the heap is empty.
var ErrNoTXT = errors.New("no Intel TXT heap")

// Location is where the DRTM log lies in physical memory.
type Location struct {
	HeapBase, HeapSize uint64
	// Container is the event container's physical address and allocated size.
	Container, Allocated uint64
	// First and Next bound the records within the container.
	First, Next uint32
}

// Read locates the TPM 2.0 DRTM event log through the TXT registers and heap
// in mem (physical memory) and returns its bytes: a crypto-agile log of the
// form eventlog.Parse reads. A plain error says what could not be found.
func Read(mem io.ReaderAt) ([]byte, error) {
	loc, err := Locate(mem)
	if err != nil {
		return nil, err
	}
	// The records run from First to Next. The Spec ID header is the first
	// record; should a SINIT put First past it, the header sits at the
	// container's start.
	start := uint64(loc.First)
	if start != 0 {
		sig := make([]byte, 16)
		if err := readAt(mem, sig, loc.Container+start+32); err == nil && string(sig) != "Spec ID Event03\x00" {
			start = 0
		}
	}
	out := make([]byte, uint64(loc.Next)-start)
	if err := readAt(mem, out, loc.Container+start); err != nil {
		return nil, fmt.Errorf("read TXT event log at 0x%x: %w", loc.Container+start, err)
	}
	return out, nil
}

// Locate finds the DRTM event container of a TXT launch in mem.
func Locate(mem io.ReaderAt) (Location, error) {
	var loc Location
	var regs [16]byte
	if err := readAt(mem, regs[:], PublicSpace+heapBaseReg); err != nil {
		return loc, fmt.Errorf("%w: cannot read the TXT public configuration registers at 0x%x: %v", ErrNoTXT, PublicSpace, err)
	}
	loc.HeapBase = binary.LittleEndian.Uint64(regs[0:8])
	loc.HeapSize = binary.LittleEndian.Uint64(regs[8:16])
	switch {
	case loc.HeapBase == ^uint64(0) || loc.HeapSize == ^uint64(0):
		return loc, fmt.Errorf("%w: the TXT registers read all-ones (no TXT chipset)", ErrNoTXT)
	case loc.HeapBase == 0 || loc.HeapSize == 0:
		return loc, fmt.Errorf("%w: TXT.HEAP.BASE 0x%x, TXT.HEAP.SIZE 0x%x (TXT not enabled or not launched)", ErrNoTXT, loc.HeapBase, loc.HeapSize)
	case loc.HeapSize > maxHeap:
		return loc, fmt.Errorf("TXT.HEAP.SIZE 0x%x is over the %d MiB limit", loc.HeapSize, maxHeap>>20)
	}

	// Walk BiosData and OsMleData to OsSinitData.
	off := uint64(0)
	var osSinit, osSinitSize uint64
	for i, name := range []string{"BiosData", "OsMleData", "OsSinitData"} {
		var b [8]byte
		if off+8 > loc.HeapSize {
			return loc, fmt.Errorf("TXT heap: %s size at heap offset 0x%x is past the heap's end 0x%x", name, off, loc.HeapSize)
		}
		if err := readAt(mem, b[:], loc.HeapBase+off); err != nil {
			return loc, fmt.Errorf("TXT heap: read %s size: %w", name, err)
		}
		size := binary.LittleEndian.Uint64(b[:])
		if size < 8 || size > loc.HeapSize-off {
			return loc, fmt.Errorf("TXT heap: %s size 0x%x at heap offset 0x%x does not fit the heap (0x%x bytes)", name, size, off, loc.HeapSize)
		}
		if i == 2 {
			osSinit, osSinitSize = loc.HeapBase+off+8, size-8
		}
		off += size
	}
	table := make([]byte, osSinitSize)
	if err := readAt(mem, table, osSinit); err != nil {
		return loc, fmt.Errorf("TXT heap: read OsSinitData: %w", err)
	}
	if len(table) < 4 {
		return loc, errors.New("TXT heap: OsSinitData is too short for its version")
	}
	if v := binary.LittleEndian.Uint32(table); v < minOsSinitVersion {
		return loc, fmt.Errorf("TXT heap: OsSinitData version %d has no extended data elements (version %d or later has), so no TPM 2.0 event log pointer", v, minOsSinitVersion)
	}
	if len(table) < osSinitExtOffset {
		return loc, fmt.Errorf("TXT heap: OsSinitData is %d bytes, too short for its fixed fields (%d)", len(table), osSinitExtOffset)
	}

	// The extended data elements.
	elems := table[osSinitExtOffset:]
	for len(elems) > 0 {
		if len(elems) < extHeaderSize {
			return loc, errors.New("TXT heap: OsSinitData ends inside an extended data element header")
		}
		typ := binary.LittleEndian.Uint32(elems[0:4])
		size := binary.LittleEndian.Uint32(elems[4:8])
		if typ == extTypeEnd {
			break
		}
		if size < extHeaderSize || uint64(size) > uint64(len(elems)) {
			return loc, fmt.Errorf("TXT heap: OsSinitData extended element of type %d has size %d, %d bytes left", typ, size, len(elems))
		}
		if typ == extTypeEventLogPtr2 {
			d := elems[extHeaderSize:size]
			if len(d) < eventLogPtr2Size {
				return loc, fmt.Errorf("TXT heap: HEAP_EVENT_LOG_POINTER_ELEMENT2_1 has %d data bytes, want %d", len(d), eventLogPtr2Size)
			}
			loc.Container = binary.LittleEndian.Uint64(d[0:8])
			loc.Allocated = uint64(binary.LittleEndian.Uint32(d[8:12]))
			loc.First = binary.LittleEndian.Uint32(d[12:16])
			loc.Next = binary.LittleEndian.Uint32(d[16:20])
			switch {
			case loc.Container == 0:
				return loc, errors.New("TXT heap: the TPM 2.0 event log pointer is zero")
			case loc.First > loc.Next || uint64(loc.Next) > loc.Allocated:
				return loc, fmt.Errorf("TXT heap: event log records 0x%x to 0x%x do not lie within its 0x%x-byte container", loc.First, loc.Next, loc.Allocated)
			case loc.Next == loc.First:
				return loc, errors.New("TXT heap: the TPM 2.0 event log is empty")
			case uint64(loc.Next) > evidence.MaxEventLog:
				return loc, fmt.Errorf("TXT heap: event log of 0x%x bytes is over the %d-byte limit", loc.Next, evidence.MaxEventLog)
			}
			return loc, nil
		}
		elems = elems[size:]
	}
	return loc, errors.New("TXT heap: OsSinitData has no HEAP_EVENT_LOG_POINTER_ELEMENT2_1 (type 8): no TPM 2.0 DRTM event log (a TPM 1.2 launch, or tboot did not ask SINIT for one)")
}

// readAt fills b from mem at physical address addr.
func readAt(mem io.ReaderAt, b []byte, addr uint64) error {
	if addr > 1<<62 {
		return fmt.Errorf("address 0x%x out of range", addr)
	}
	n, err := mem.ReadAt(b, int64(addr))
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
