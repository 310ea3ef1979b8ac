package evidence

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestDecode(t *testing.T) {
	const doc = `{"quote":"AQI=","signature":"AwQ=","pcrs":[{"bank":"sha256","index":0,"digest":"AAAA"}]}`
	ev, err := Decode([]byte(doc + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev.Quote, []byte{1, 2}) || len(ev.PCRs) != 1 || string(ev.Received) != doc+"\n" {
		t.Errorf("decoded %+v", ev)
	}
	// The same document inside a larger one decodes alike.
	var wrapped struct{ Evidence Evidence }
	if err := json.Unmarshal([]byte(`{"Evidence":`+doc+`}`), &wrapped); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wrapped.Evidence.Signature, ev.Signature) || string(wrapped.Evidence.Received) != doc {
		t.Errorf("nested: %+v", wrapped.Evidence)
	}
	for name, bad := range map[string]string{
		"trailing data":  doc + `{}`,
		"unknown field":  `{"quote":"AQI=","signature":"AwQ=","pcrs":[],"extra":1}`,
		"nested unknown": `{"quote":"AQI=","signature":"AwQ=","pcrs":[{"bank":"sha256","index":0,"digest":"AAAA","x":1}]}`,
		"not an object":  `[]`,
		"empty":          ``,
		"truncated":      doc[:len(doc)-1],
		// Members two parsers could read differently.
		"duplicate member":     `{"quote":"AQI=","quote":"AwQ=","signature":"AwQ=","pcrs":[]}`,
		"nested duplicate":     `{"quote":"AQI=","signature":"AwQ=","pcrs":[{"bank":"sha256","index":0,"index":1,"digest":"AAAA"}]}`,
		"member in other case": `{"Quote":"AQI=","signature":"AwQ=","pcrs":[]}`,
		"invalid UTF-8":        "{\"quote\":\"AQI=\",\"signature\":\"AwQ=\",\"pcrs\":[{\"bank\":\"sha\xff\",\"index\":0,\"digest\":\"AAAA\"}]}",
		"base64 not padded":    `{"quote":"AQI","signature":"AwQ=","pcrs":[]}`,
		"number for bytes":     `{"quote":1,"signature":"AwQ=","pcrs":[]}`,
		"fractional PCR index": `{"quote":"AQI=","signature":"AwQ=","pcrs":[{"bank":"sha256","index":0.5,"digest":"AAAA"}]}`,
	} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if err := json.Unmarshal([]byte(`{"Evidence":{"quote":"AQI=","extra":1}}`), &wrapped); err == nil {
		t.Error("nested document with an unknown field decoded")
	}
}

// BenchmarkDecode decodes an evidence document of a fleet node's size
// (an 11 KB document: a 5.5 KB event log, a DRTM log, 24 PCRs).
func BenchmarkDecode(b *testing.B) {
	ev := Evidence{Quote: make([]byte, 150), Signature: make([]byte, 262), EventLog: make([]byte, 5500), DRTMLog: make([]byte, 900)}
	for i := range ev.EventLog {
		ev.EventLog[i] = byte(i * 7)
	}
	for i := range 24 {
		ev.PCRs = append(ev.PCRs, PCR{Bank: "sha256", Index: i, Digest: make([]byte, 32)})
	}
	doc, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(doc); err != nil {
			b.Fatal(err)
		}
	}
}
