package eventlog

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // registers crypto.SHA1 for Builder.Add
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/binary"

	"trustpool/internal/evidence"
)

// Builder writes crypto-agile (or, from NewSHA1Builder, SHA-1 format) event
// logs, as firmware does during a measured boot. The demo and tests use it to
// simulate nodes. It writes what it is told: AddDigests with a wrong-sized
// digest makes a log that Parse refuses, which is how tests make malformed
// logs, and AddDigests with fewer digests than banks makes the partial events
// Windows writes.
type Builder struct {
	banks  []evidence.Bank
	buf    []byte
	events int
	sha1   bool // SHA-1 format: TCG_PCR_EVENT records, no Spec ID header
}

// NewSHA1Builder starts a SHA-1 format log (TCG_PCR_EVENT records, no Spec
// ID header), as TPM 1.2 firmware, and some firmware on TPM 2.0 hosts,
// writes.
func NewSHA1Builder() *Builder {
	return &Builder{banks: []evidence.Bank{evidence.SHA1}, sha1: true}
}

// NewBuilder starts a log that records digests in the given banks, in that
// order, writing the Spec ID header. With no banks it records sha256.
// Banks trustpool does not know are dropped.
func NewBuilder(banks ...evidence.Bank) *Builder {
	b := &Builder{}
	for _, bank := range banks {
		if bank.Size() != 0 {
			b.banks = append(b.banks, bank)
		}
	}
	if len(b.banks) == 0 {
		b.banks = []evidence.Bank{evidence.SHA256}
	}

	spec := append([]byte(nil), specIDSignature...)
	spec = binary.LittleEndian.AppendUint32(spec, 0) // platformClass: client
	spec = append(spec, 0, 2, 0, 2)                  // version 2.0, errata 0, uintnSize 2 (UINT64)
	spec = binary.LittleEndian.AppendUint32(spec, uint32(len(b.banks)))
	for _, bank := range b.banks {
		spec = binary.LittleEndian.AppendUint16(spec, bank.AlgID())
		spec = binary.LittleEndian.AppendUint16(spec, uint16(bank.Size()))
	}
	spec = append(spec, 0) // no vendor info

	b.buf = binary.LittleEndian.AppendUint32(b.buf, 0)
	b.buf = binary.LittleEndian.AppendUint32(b.buf, EvNoAction)
	b.buf = append(b.buf, make([]byte, 20)...)
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(len(spec)))
	b.buf = append(b.buf, spec...)
	return b
}

// Banks returns the banks the log records, in header order.
func (b *Builder) Banks() []evidence.Bank { return append([]evidence.Bank(nil), b.banks...) }

// Add appends an event whose digest in each bank is the hash of data, as
// firmware measures an event that describes itself (EV_SEPARATOR,
// EV_EFI_ACTION, ...). EV_NO_ACTION events get all-zero digests, as the
// specification requires.
func (b *Builder) Add(pcr int, typ uint32, data []byte) Event {
	digests := make([]Digest, len(b.banks))
	for i, bank := range b.banks {
		v := make([]byte, bank.Size())
		if typ != EvNoAction {
			h := hashOf(bank).New()
			h.Write(data)
			v = h.Sum(v[:0])
		}
		digests[i] = Digest{Bank: bank, Value: v}
	}
	return b.AddDigests(pcr, typ, digests, data)
}

// AddDigests appends an event with the given digests, written in the order
// given: firmware measures an image or a variable and logs a description of
// it. It returns the event as Parse will return it (for a well-formed call).
// In a SHA-1 format log only the sha1 digest is written (20 zero bytes if
// digests has none).
func (b *Builder) AddDigests(pcr int, typ uint32, digests []Digest, data []byte) Event {
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(pcr))
	b.buf = binary.LittleEndian.AppendUint32(b.buf, typ)
	if b.sha1 {
		d := make([]byte, evidence.SHA1.Size())
		for _, x := range digests {
			if x.Bank == evidence.SHA1 {
				d = x.Value
			}
		}
		digests = []Digest{{Bank: evidence.SHA1, Value: d}}
		b.buf = append(b.buf, d...)
	} else {
		b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(len(digests)))
		for _, d := range digests {
			b.buf = binary.LittleEndian.AppendUint16(b.buf, d.Bank.AlgID())
			b.buf = append(b.buf, d.Value...)
		}
	}
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(len(data)))
	b.buf = append(b.buf, data...)

	e := Event{Index: b.events, PCR: pcr, Type: typ, Data: bytes.Clone(data)}
	if e.Data == nil {
		e.Data = []byte{}
	}
	for _, bank := range b.banks {
		for _, d := range digests {
			if d.Bank == bank {
				e.Digests = append(e.Digests, Digest{Bank: bank, Value: bytes.Clone(d.Value)})
				break
			}
		}
	}
	b.events++
	return e
}

// Len is the number of events added so far.
func (b *Builder) Len() int { return b.events }

// Bytes returns a copy of the log written so far.
func (b *Builder) Bytes() []byte { return bytes.Clone(b.buf) }

func hashOf(b evidence.Bank) crypto.Hash {
	switch b {
	case evidence.SHA1:
		return crypto.SHA1
	case evidence.SHA384:
		return crypto.SHA384
	}
	return crypto.SHA256
}
