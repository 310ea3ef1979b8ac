package wire_test

import (
	"errors"
	"strings"
	"testing"

	"trustpool/internal/wire"
)

func TestReader(t *testing.T) {
	b := []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09}
	be, le := wire.BigEndian(b), wire.LittleEndian(b)
	if got := be.U16(); got != 0x0102 {
		t.Errorf("big-endian U16 = %#x", got)
	}
	if got := le.U16(); got != 0x0201 {
		t.Errorf("little-endian U16 = %#x", got)
	}
	if got := be.U32(); got != 0x03040506 || be.Offset() != 6 || be.Len() != 3 {
		t.Errorf("U32 = %#x at %d, %d left", got, be.Offset(), be.Len())
	}
	// A read past the end: zero, ErrShort, and every later read zero too,
	// even one that would fit.
	if got := be.U64(); got != 0 || !errors.Is(be.Err(), wire.ErrShort) {
		t.Errorf("short U64 = %#x, %v", got, be.Err())
	}
	if got := be.U8(); got != 0 || be.Bytes(1) != nil || be.Offset() != 6 {
		t.Errorf("read after a short one = %#x at %d, want zero values and no progress", got, be.Offset())
	}
	be.Fail(errors.New("later")) // the first error stands
	if !errors.Is(be.End(), wire.ErrShort) {
		t.Errorf("End = %v, want the first error", be.End())
	}
	if v := le.Bytes(2); len(v) != 2 || cap(v) != 2 {
		t.Errorf("Bytes(2) = %x with capacity %d: want its capacity capped, so appends never write the input", v, cap(v))
	}
	if le.Bytes(-1) != nil || !errors.Is(le.Err(), wire.ErrShort) {
		t.Errorf("Bytes(-1): %v, want ErrShort", le.Err())
	}
}

func TestSized16AndEnd(t *testing.T) {
	r := wire.BigEndian([]byte{0x00, 0x02, 0xaa, 0xbb, 0xcc})
	if v := r.Sized16(2); string(v) != "\xaa\xbb" {
		t.Errorf("Sized16 = %x", v)
	}
	if err := r.End(); err == nil || !strings.Contains(err.Error(), "1 trailing bytes") {
		t.Errorf("End with a byte left = %v", err)
	}
	r = wire.BigEndian([]byte{0x00, 0x03, 1, 2, 3})
	if v := r.Sized16(2); v != nil || r.Err() == nil || !strings.Contains(r.Err().Error(), "limit 2") {
		t.Errorf("Sized16 over its limit = %x, %v", v, r.Err())
	}
	r = wire.BigEndian([]byte{0x00, 0x01, 7})
	if r.Sized16(1); r.End() != nil {
		t.Errorf("End of a reader read to its end = %v", r.End())
	}
}
