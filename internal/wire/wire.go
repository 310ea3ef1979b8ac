// Package wire reads binary structures with bounds checks: the TPM's
// big-endian ones (quotes, public areas) and the little-endian ones of
// UEFI event logs. It never panics on short or hostile input: the first
// read past the end sets Err, and later reads return zero values, so
// callers check Err once after a group of reads. Returned slices alias
// the input.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrShort reports a structure that runs past the end of its buffer.
var ErrShort = errors.New("truncated")

// Reader reads b from its start in one byte order.
type Reader struct {
	b     []byte
	off   int
	err   error
	order binary.ByteOrder
}

// BigEndian reads b in the TPM's byte order.
func BigEndian(b []byte) Reader { return Reader{b: b, order: binary.BigEndian} }

// LittleEndian reads b in the byte order of UEFI event logs.
func LittleEndian(b []byte) Reader { return Reader{b: b, order: binary.LittleEndian} }

// Len is how many bytes are left.
func (r *Reader) Len() int { return len(r.b) - r.off }

// Offset is how many bytes were read.
func (r *Reader) Offset() int { return r.off }

// Err is the first error, nil while every read fitted.
func (r *Reader) Err() error { return r.err }

// Fail records err as the reader's error, unless it has one already.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Bytes reads n bytes (a slice of the input, its capacity capped).
func (r *Reader) Bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.Len() {
		r.err = ErrShort
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

func (r *Reader) U8() uint8 {
	if v := r.Bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *Reader) U16() uint16 {
	if v := r.Bytes(2); v != nil {
		return r.order.Uint16(v)
	}
	return 0
}

func (r *Reader) U32() uint32 {
	if v := r.Bytes(4); v != nil {
		return r.order.Uint32(v)
	}
	return 0
}

func (r *Reader) U64() uint64 {
	if v := r.Bytes(8); v != nil {
		return r.order.Uint64(v)
	}
	return 0
}

// Sized16 reads a 16-bit size, then that many bytes, at most max (a
// TPM2B).
func (r *Reader) Sized16(max int) []byte {
	n := int(r.U16())
	if r.err == nil && n > max {
		r.err = fmt.Errorf("%d-byte field, limit %d", n, max)
		return nil
	}
	return r.Bytes(n)
}

// End reports the reader's error, or an error if bytes are left over.
func (r *Reader) End() error {
	if r.err != nil {
		return r.err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d trailing bytes", r.Len())
	}
	return nil
}
