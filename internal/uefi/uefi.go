// Package uefi decodes the event data that UEFI firmware and boot loaders
// write into a TCG event log: UEFI_VARIABLE_DATA (the Secure Boot variables
// SecureBoot, PK, KEK, db, dbx measured into PCR 7), EFI_SIGNATURE_LISTs
// (the contents of PK, KEK, db and dbx), UEFI_IMAGE_LOAD_EVENT device paths
// (the boot applications of PCR 4) and GRUB's EV_IPL texts (PCR 8).
//
// Everything here reads untrusted bytes: event data is whatever the agent
// sent. Decoders are bounded (every length is checked against the bytes that
// remain, counts are capped) and return errors, never panic. Whether decoded
// data means anything is the caller's business: only data whose event digest
// covers it, in a bank the quote proved, may decide a verdict.
//
// The package is pure: no I/O, no TPM access.
package uefi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf16"
)

// GUID is an EFI_GUID as it is stored: the first three fields little-endian.
type GUID [16]byte

// String writes g in the registry format, 8-4-4-4-12 hex digits.
func (g GUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], []byte{g[3], g[2], g[1], g[0]})
	b[8] = '-'
	hex.Encode(b[9:13], []byte{g[5], g[4]})
	b[13] = '-'
	hex.Encode(b[14:18], []byte{g[7], g[6]})
	b[18] = '-'
	hex.Encode(b[19:23], g[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], g[10:16])
	return string(b[:])
}

// mustGUID parses a registry-format GUID; it is used for constants only.
func mustGUID(s string) GUID {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		panic("uefi: bad GUID " + s)
	}
	raw, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		panic("uefi: bad GUID " + s)
	}
	g = GUID{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]}
	copy(g[8:], raw[8:])
	return g
}

// Well-known GUIDs (UEFI specification 2.10, sections 3.3 and 32.4.1).
var (
	// GlobalVariable owns SecureBoot, PK and KEK.
	GlobalVariable = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	// ImageSecurityDatabase owns db and dbx.
	ImageSecurityDatabase = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	// CertX509 marks a signature list of DER X.509 certificates.
	CertX509 = mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
	// CertSHA256 marks a signature list of SHA-256 image digests.
	CertSHA256 = mustGUID("c1c41626-504c-4092-aca9-41f936934328")
)

// Limits on what the decoders accept. A real dbx holds a few hundred
// entries in a few dozen lists; these leave generous room above that while
// bounding the work hostile data can cause. Event data itself is capped by
// the event-log parser (1 MiB).
const (
	MaxNameChars  = 256
	MaxLists      = 4096
	MaxSignatures = 65536
	maxPathNodes  = 64
)

// Variable is a decoded UEFI_VARIABLE_DATA: the data of an
// EV_EFI_VARIABLE_DRIVER_CONFIG (or _BOOT, _AUTHORITY) event.
type Variable struct {
	Vendor GUID
	Name   string
	Data   []byte // aliases the input
}

// ParseVariable decodes UEFI_VARIABLE_DATA (TCG PC Client Platform Firmware
// Profile, section 10.2.6): VariableName (GUID), UnicodeNameLength and
// VariableDataLength (UINT64, little-endian), the UTF-16 name, the data. The
// lengths must account for every byte.
func ParseVariable(b []byte) (Variable, error) {
	const header = 16 + 8 + 8
	if len(b) < header {
		return Variable{}, fmt.Errorf("variable data: %d bytes, shorter than the %d-byte header", len(b), header)
	}
	var v Variable
	copy(v.Vendor[:], b[:16])
	nameLen := binary.LittleEndian.Uint64(b[16:24])
	dataLen := binary.LittleEndian.Uint64(b[24:32])
	rest := uint64(len(b) - header)
	if nameLen > MaxNameChars || nameLen*2 > rest {
		return Variable{}, fmt.Errorf("variable data: name of %d characters does not fit", nameLen)
	}
	if dataLen != rest-nameLen*2 {
		return Variable{}, fmt.Errorf("variable data: %d data bytes declared, %d present", dataLen, rest-nameLen*2)
	}
	name := make([]uint16, nameLen)
	for i := range name {
		name[i] = binary.LittleEndian.Uint16(b[header+2*i:])
	}
	v.Name = string(utf16.Decode(name))
	v.Data = b[header+2*nameLen:]
	return v, nil
}

// Signature is one EFI_SIGNATURE_DATA entry of a signature list.
type Signature struct {
	Owner GUID
	Data  []byte // the certificate or hash; aliases the input
}

// SignatureList is one EFI_SIGNATURE_LIST.
type SignatureList struct {
	Type       GUID
	Signatures []Signature
}

// ParseSignatureLists decodes the contents of PK, KEK, db or dbx: a sequence
// of EFI_SIGNATURE_LISTs (UEFI specification 2.10, section 32.4.1), each
// SignatureType (GUID), SignatureListSize, SignatureHeaderSize and
// SignatureSize (UINT32, little-endian), a header, then entries of an owner
// GUID and SignatureSize-16 bytes of data. Sizes must account for every
// byte. An empty input is an empty database (a variable that was not set).
func ParseSignatureLists(b []byte) ([]SignatureList, error) {
	const header = 16 + 4 + 4 + 4
	var lists []SignatureList
	total := 0
	for off := 0; off < len(b); {
		if len(lists) == MaxLists {
			return nil, fmt.Errorf("signature lists: more than %d lists", MaxLists)
		}
		if len(b)-off < header {
			return nil, fmt.Errorf("signature list at byte %d: %d bytes left, shorter than the %d-byte header", off, len(b)-off, header)
		}
		var l SignatureList
		copy(l.Type[:], b[off:off+16])
		listSize := uint64(binary.LittleEndian.Uint32(b[off+16:]))
		hdrSize := uint64(binary.LittleEndian.Uint32(b[off+20:]))
		sigSize := uint64(binary.LittleEndian.Uint32(b[off+24:]))
		switch {
		case listSize < header || listSize > uint64(len(b)-off):
			return nil, fmt.Errorf("signature list at byte %d: size %d, %d bytes left", off, listSize, len(b)-off)
		case hdrSize > listSize-header:
			return nil, fmt.Errorf("signature list at byte %d: header of %d bytes does not fit", off, hdrSize)
		case sigSize <= 16:
			return nil, fmt.Errorf("signature list at byte %d: signature size %d, want more than the 16-byte owner", off, sigSize)
		case (listSize-header-hdrSize)%sigSize != 0:
			return nil, fmt.Errorf("signature list at byte %d: %d bytes of entries are not a multiple of the signature size %d", off, listSize-header-hdrSize, sigSize)
		}
		n := int((listSize - header - hdrSize) / sigSize)
		if total += n; total > MaxSignatures {
			return nil, fmt.Errorf("signature lists: more than %d signatures", MaxSignatures)
		}
		p := off + header + int(hdrSize)
		l.Signatures = make([]Signature, n)
		for i := range l.Signatures {
			s := &l.Signatures[i]
			copy(s.Owner[:], b[p:p+16])
			s.Data = b[p+16 : p+int(sigSize) : p+int(sigSize)]
			p += int(sigSize)
		}
		lists = append(lists, l)
		off += int(listSize)
	}
	return lists, nil
}

// ImagePath returns the file path named by the device path of a
// UEFI_IMAGE_LOAD_EVENT (the data of EV_EFI_BOOT_SERVICES_APPLICATION):
// ImageLocationInMemory, ImageLengthInMemory, ImageLinkTimeAddress,
// LengthOfDevicePath (UINT64 each), then the device path. It returns the
// last media file-path node (type 4, subtype 4), e.g. `\EFI\redhat\shimx64.efi`,
// or "" when there is none. It is a description for people: the event digest
// covers the image, not this path.
func ImagePath(b []byte) (string, error) {
	if len(b) < 32 {
		return "", errors.New("image load event: shorter than its 32-byte header")
	}
	dpLen := binary.LittleEndian.Uint64(b[24:32])
	if dpLen > uint64(len(b)-32) {
		return "", fmt.Errorf("image load event: device path of %d bytes, %d present", dpLen, len(b)-32)
	}
	dp := b[32 : 32+dpLen]
	path := ""
	for i := 0; len(dp) > 0; i++ {
		if i == maxPathNodes || len(dp) < 4 {
			return "", errors.New("image load event: malformed device path")
		}
		typ, sub, n := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:4]))
		if n < 4 || n > len(dp) {
			return "", errors.New("image load event: malformed device path")
		}
		if typ == 0x7f && sub == 0xff {
			break // end of the whole device path
		}
		if typ == 4 && sub == 4 {
			path = utf16z(dp[4:n])
		}
		dp = dp[n:]
	}
	return path, nil
}

// utf16z decodes little-endian UTF-16 up to the first NUL.
func utf16z(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
