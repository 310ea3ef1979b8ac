package ekcert

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on the TPM SubjectAltName. A real one is under 100 bytes.
const (
	maxSAN       = 1 << 10
	maxAttrValue = 128
)

// ASN.1 universal tags of the string types that TPM attribute values use.
// The EK Credential Profile says UTF8String; some vendors use
// PrintableString.
const (
	tagUTF8String      = 12
	tagPrintableString = 19
)

// generalNameDirectory is the context-specific tag of a directoryName in
// GeneralName (RFC 5280 4.2.1.6).
const generalNameDirectory = 4

// attribute is one AttributeTypeAndValue of a Name. Value stays raw so that
// its string type can be checked.
type attribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// attributeSET is a RelativeDistinguishedName (SET OF AttributeTypeAndValue;
// encoding/asn1 encodes a slice type whose name ends in SET as a SET).
type attributeSET []attribute

// isSAN reports whether oid is id-ce-subjectAltName (2.5.29.17).
func isSAN(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17})
}

// tpmField returns the Info field that a TPM attribute OID names
// (TCG EK Credential Profile: tcg-at-tpmManufacturer 2.23.133.2.1,
// tcg-at-tpmModel 2.23.133.2.2, tcg-at-tpmVersion 2.23.133.2.3), or nil.
func (i *Info) tpmField(oid asn1.ObjectIdentifier) *string {
	switch {
	case oid.Equal(asn1.ObjectIdentifier{2, 23, 133, 2, 1}):
		return &i.Manufacturer
	case oid.Equal(asn1.ObjectIdentifier{2, 23, 133, 2, 2}):
		return &i.Model
	case oid.Equal(asn1.ObjectIdentifier{2, 23, 133, 2, 3}):
		return &i.Version
	}
	return nil
}

// parseTPMSAN parses the value of an EK certificate's SubjectAltName
// extension as the TCG EK Credential Profile defines it: GeneralNames
// holding exactly one directoryName whose Name carries the TPM manufacturer,
// model and version attributes, each exactly once, as UTF8String or
// PrintableString, in one multi-valued RDN or in separate RDNs.
//
// The extension is critical in EK certificates, so everything in it must be
// understood: any other kind of name, any other attribute, a missing or
// repeated attribute, or trailing bytes make it malformed. The manufacturer
// must be "id:" and eight hex digits (the TCG vendor ID).
func parseTPMSAN(der []byte) (Info, error) {
	if len(der) > maxSAN {
		return Info{}, fmt.Errorf("SubjectAltName of %d bytes exceeds %d", len(der), maxSAN)
	}
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &names)
	if err != nil {
		return Info{}, fmt.Errorf("decode GeneralNames: %w", err)
	}
	if len(rest) > 0 {
		return Info{}, errors.New("trailing bytes after GeneralNames")
	}
	if len(names) != 1 {
		return Info{}, fmt.Errorf("%d GeneralNames, want one directoryName", len(names))
	}
	gn := names[0]
	if gn.Class != asn1.ClassContextSpecific || gn.Tag != generalNameDirectory || !gn.IsCompound {
		return Info{}, fmt.Errorf("GeneralName with class %d tag %d, want a directoryName", gn.Class, gn.Tag)
	}
	// directoryName is [4] EXPLICIT Name: its contents are a whole Name.
	var rdns []attributeSET
	rest, err = asn1.Unmarshal(gn.Bytes, &rdns)
	if err != nil {
		return Info{}, fmt.Errorf("decode directoryName: %w", err)
	}
	if len(rest) > 0 {
		return Info{}, errors.New("trailing bytes after directoryName")
	}
	var info Info
	for _, rdn := range rdns {
		for _, a := range rdn {
			field := info.tpmField(a.Type)
			if field == nil {
				return Info{}, fmt.Errorf("unexpected attribute %v in the TPM directoryName", a.Type)
			}
			if *field != "" {
				return Info{}, fmt.Errorf("attribute %v repeated", a.Type)
			}
			v, err := attributeString(a.Value)
			if err != nil {
				return Info{}, fmt.Errorf("attribute %v: %w", a.Type, err)
			}
			*field = v
		}
	}
	switch {
	case info.Manufacturer == "":
		return Info{}, errors.New("no TPM manufacturer attribute (2.23.133.2.1)")
	case info.Model == "":
		return Info{}, errors.New("no TPM model attribute (2.23.133.2.2)")
	case info.Version == "":
		return Info{}, errors.New("no TPM version attribute (2.23.133.2.3)")
	}
	if !isVendorID(info.Manufacturer) {
		return Info{}, fmt.Errorf("TPM manufacturer %q is not \"id:\" and 8 hex digits", info.Manufacturer)
	}
	return info, nil
}

// attributeString returns a non-empty UTF8String or PrintableString value.
func attributeString(v asn1.RawValue) (string, error) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", fmt.Errorf("value with class %d tag %d is not a string", v.Class, v.Tag)
	}
	s := string(v.Bytes)
	switch v.Tag {
	case tagUTF8String:
		if !utf8.ValidString(s) {
			return "", errors.New("UTF8String is not valid UTF-8")
		}
	case tagPrintableString:
		for _, c := range v.Bytes {
			if !isPrintable(c) {
				return "", fmt.Errorf("PrintableString holds byte 0x%02x", c)
			}
		}
	default:
		return "", fmt.Errorf("value with tag %d is neither UTF8String nor PrintableString", v.Tag)
	}
	if s == "" || len(s) > maxAttrValue {
		return "", fmt.Errorf("value of %d bytes, want 1 to %d", len(s), maxAttrValue)
	}
	return s, nil
}

// isPrintable reports whether c is in ASN.1 PrintableString's alphabet.
func isPrintable(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case ' ', '\'', '(', ')', '+', ',', '-', '.', '/', ':', '=', '?':
		return true
	}
	return false
}

// isVendorID reports whether s is "id:" followed by eight hex digits, the
// form the TCG gives a TPM manufacturer (for example id:49465800 for
// Infineon, id:00001014 for IBM's swtpm).
func isVendorID(s string) bool {
	const prefix = "id:"
	if len(s) != len(prefix)+8 || s[:len(prefix)] != prefix {
		return false
	}
	for _, c := range []byte(s[len(prefix):]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
