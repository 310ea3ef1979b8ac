package ekcert

import (
	"encoding/asn1"
	"encoding/hex"
	"strings"
	"testing"
)

// swtpmSAN is the SubjectAltName value of an EK certificate that Debian's
// swtpm_setup 0.7.1 made with swtpm_localca (openssl asn1parse of the
// certificate): one RDN per attribute, UTF8Strings.
const swtpmSAN = "3046a444304231163014060567810502010c0b69643a30303030313031343110300e060567810502020c05737774706d31163014060567810502030c0b69643a3230313931303233"

func TestParseTPMSAN(t *testing.T) {
	a := tpmAttrs(testInfo)
	manufacturer, model, version := a[0], a[1], a[2]
	printable := func(x attr) attr { x.tag = tagPrintableString; return x }
	withValue := func(x attr, v string) attr { x.value = v; return x }
	dnsName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("node1.example")}

	tests := []struct {
		name    string
		der     func(t *testing.T) []byte
		want    Info
		wantErr string // substring; empty for success
	}{
		{
			name: "swtpm_setup",
			der:  func(t *testing.T) []byte { return must(hex.DecodeString(swtpmSAN)) },
			want: Info{Manufacturer: "id:00001014", Model: "swtpm", Version: "id:20191023"},
		},
		{
			name: "one RDN per attribute",
			der:  func(t *testing.T) []byte { return tpmSAN(t, testInfo) },
			want: testInfo,
		},
		{
			name: "multi-valued RDN",
			der:  func(t *testing.T) []byte { return encodeSAN(t, encodeName(t, a)) },
			want: testInfo,
		},
		{
			name: "other order, PrintableString",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{printable(version), printable(model)}, []attr{printable(manufacturer)}))
			},
			want: testInfo,
		},
		{
			name:    "empty",
			der:     func(t *testing.T) []byte { return nil },
			wantErr: "decode GeneralNames",
		},
		{
			name:    "not DER",
			der:     func(t *testing.T) []byte { return []byte("directoryName") },
			wantErr: "decode GeneralNames",
		},
		{
			name:    "trailing bytes",
			der:     func(t *testing.T) []byte { return append(tpmSAN(t, testInfo), 0) },
			wantErr: "trailing bytes after GeneralNames",
		},
		{
			name: "truncated",
			der: func(t *testing.T) []byte {
				der := tpmSAN(t, testInfo)
				return der[:len(der)-1]
			},
			wantErr: "decode GeneralNames",
		},
		{
			name:    "no names",
			der:     func(t *testing.T) []byte { return encodeSAN(t) },
			wantErr: "0 GeneralNames",
		},
		{
			name: "two directoryNames",
			der: func(t *testing.T) []byte {
				n := encodeName(t, a)
				return encodeSAN(t, n, n)
			},
			wantErr: "2 GeneralNames",
		},
		{
			name: "DNS name",
			der: func(t *testing.T) []byte {
				return must(asn1.Marshal([]asn1.RawValue{dnsName}))
			},
			wantErr: "want a directoryName",
		},
		{
			name: "directoryName and DNS name",
			der: func(t *testing.T) []byte {
				dir := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: generalNameDirectory, IsCompound: true, Bytes: encodeName(t, a)}
				return must(asn1.Marshal([]asn1.RawValue{dir, dnsName}))
			},
			wantErr: "2 GeneralNames",
		},
		{
			name: "directoryName implicitly tagged",
			der: func(t *testing.T) []byte {
				// [4] IMPLICIT would put the RDNs straight into the tag.
				name := encodeName(t, a)
				var raw asn1.RawValue
				must(asn1.Unmarshal(name, &raw))
				return encodeSAN(t, raw.Bytes)
			},
			wantErr: "decode directoryName",
		},
		{
			name: "trailing bytes in directoryName",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, append(encodeName(t, a), 5, 0))
			},
			wantErr: "trailing bytes after directoryName",
		},
		{
			name:    "no manufacturer",
			der:     func(t *testing.T) []byte { return encodeSAN(t, encodeName(t, []attr{model, version})) },
			wantErr: "no TPM manufacturer",
		},
		{
			name:    "no model",
			der:     func(t *testing.T) []byte { return encodeSAN(t, encodeName(t, []attr{manufacturer}, []attr{version})) },
			wantErr: "no TPM model",
		},
		{
			name:    "no version",
			der:     func(t *testing.T) []byte { return encodeSAN(t, encodeName(t, []attr{manufacturer, model})) },
			wantErr: "no TPM version",
		},
		{
			name: "repeated model",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, a, []attr{withValue(model, "other")}))
			},
			wantErr: "repeated",
		},
		{
			name: "unknown attribute",
			der: func(t *testing.T) []byte {
				cn := attr{asn1.ObjectIdentifier{2, 5, 4, 3}, tagUTF8String, "node1"}
				return encodeSAN(t, encodeName(t, a, []attr{cn}))
			},
			wantErr: "unexpected attribute 2.5.4.3",
		},
		{
			name: "empty model",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{manufacturer, withValue(model, ""), version}))
			},
			wantErr: "value of 0 bytes",
		},
		{
			name: "long version",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{manufacturer, model, withValue(version, strings.Repeat("1", maxAttrValue+1))}))
			},
			wantErr: "value of 129 bytes",
		},
		{
			name: "BMPString",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{manufacturer, {oidModel, 30, "\x00S\x00L"}, version}))
			},
			wantErr: "neither UTF8String nor PrintableString",
		},
		{
			name: "value is a SEQUENCE",
			der: func(t *testing.T) []byte {
				name := must(asn1.Marshal([]attributeSET{{
					{Type: oidManufacturer, Value: asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: must(asn1.Marshal("id:49465800"))}},
				}}))
				return encodeSAN(t, name)
			},
			wantErr: "is not a string",
		},
		{
			name: "invalid UTF-8",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{manufacturer, withValue(model, "SLB\xff"), version}))
			},
			wantErr: "not valid UTF-8",
		},
		{
			name: "PrintableString with an underscore",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{manufacturer, printable(withValue(model, "SLB_9670")), version}))
			},
			wantErr: "PrintableString holds byte 0x5f",
		},
		{
			name: "manufacturer not a vendor ID",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{withValue(manufacturer, "Infineon"), model, version}))
			},
			wantErr: "and 8 hex digits",
		},
		{
			name: "manufacturer ID not hex",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{withValue(manufacturer, "id:4946580G"), model, version}))
			},
			wantErr: "and 8 hex digits",
		},
		{
			name: "manufacturer ID too short",
			der: func(t *testing.T) []byte {
				return encodeSAN(t, encodeName(t, []attr{withValue(manufacturer, "id:494658"), model, version}))
			},
			wantErr: "and 8 hex digits",
		},
		{
			name:    "oversized",
			der:     func(t *testing.T) []byte { return make([]byte, maxSAN+1) },
			wantErr: "exceeds",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTPMSAN(tc.der(t))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseTPMSAN = %+v, %v; want error containing %q", got, err, tc.wantErr)
				}
				if got != (Info{}) {
					t.Errorf("parseTPMSAN returned %+v with its error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTPMSAN: %v", err)
			}
			if got != tc.want {
				t.Errorf("parseTPMSAN = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseTPMSAN feeds arbitrary SubjectAltName values (node-supplied, in
// the EK certificate) to the parser: it must not panic, and what it accepts
// must satisfy the documented rules and survive a re-encoding.
func FuzzParseTPMSAN(f *testing.F) {
	f.Add(must(hex.DecodeString(swtpmSAN)))
	f.Add(tpmSAN(f, testInfo))
	f.Add(encodeSAN(f, encodeName(f, tpmAttrs(testInfo))))
	f.Add(encodeSAN(f, encodeName(f, tpmAttrs(testInfo)[:2])))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		info, err := parseTPMSAN(der)
		if err != nil {
			if info != (Info{}) {
				t.Fatalf("error %v with a non-zero Info %+v", err, info)
			}
			return
		}
		if !isVendorID(info.Manufacturer) || info.Model == "" || info.Version == "" {
			t.Fatalf("accepted %x as %+v", der, info)
		}
		again, err := parseTPMSAN(tpmSAN(t, info))
		if err != nil || again != info {
			t.Fatalf("re-encoded %+v parses as %+v, %v", info, again, err)
		}
	})
}
