package nova

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParsePollRequest feeds arbitrary bodies to the PollHosts decoder. Any
// body it accepts must respect the limits, and the names must survive the
// whole handler byte for byte: the answer echoes each requested name.
func FuzzParsePollRequest(f *testing.F) {
	for _, seed := range []string{
		`{"count": 2, "hosts": ["node2", "node1"]}`,
		`{"count": 5, "hosts": "node1"}`,
		`{"hosts":["node1"]}`,
		`{"hosts":[]}`,
		`{"hosts":["a","a",""]}`,
		`{"hosts":["n\u00f6de","a\"b<c>&\\"]}`,
		`{"hosts":["\ud800"]}`,
		`{"count":1,"hosts":["node1"],"x":1}`,
		`{"hosts":["node1"],"hosts":[]}`,
		`{"hosts":[null]}`,
		`{"count":-1,"hosts":[]}`,
		`{"count":1e3,"hosts":[]}`,
		`{"hosts":["x"]} []`,
		`[`,
		"{\"hosts\":[\"\xff\"]}",
		`{"count":01,"hosts":[]}`,
		`{"count":0,"hosts":[]}`,
		`{"count":-0,"hosts":[]}`,
		`{"count":1.0,"hosts":[]}`,
		`{"count":9223372036854775808,"hosts":[]}`,
		`{"hosts":["a\u0001\/\n"]}`,
		"{\"hosts\":[\"a\x01\"]}",
		`{"hosts":["a\x"]}`,
		`{"hosts":["\"]}`,
		`{"hosts":["\ud83d\ude00"]}`,
		"{ }",
		" { \"hosts\" : [ \"a\" , \"b\" ] , \"count\" : 2 } \n",
		`{"hosts":[ ]}`,
		"\ufeff{\"hosts\":[]}",
		`{"hosts":["a"]}x`,
		`{"hosts":["a"],}`,
		`{"ho\u0073ts":["a"]}`,
		`{"HOSTS":["a"]}`,
	} {
		f.Add([]byte(seed))
	}
	h := NewPollHosts(PollHostsConfig{}, cache{})
	f.Fuzz(func(t *testing.T, body []byte) {
		hosts, err := parsePollRequest(body)
		ref, refErr := referenceParse(body)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("parsePollRequest: %v; encoding/json reference: %v", err, refErr)
		}
		if err != nil {
			return
		}
		if !slices.Equal(hosts, ref) {
			t.Fatalf("parsePollRequest = %q, encoding/json reference = %q", hosts, ref)
		}
		if len(hosts) > MaxPollHosts {
			t.Fatalf("accepted %d hosts", len(hosts))
		}
		for _, name := range hosts {
			if len(name) > MaxHostName {
				t.Fatalf("accepted a %d-byte name", len(name))
			}
		}
		// Re-encoding the names must decode to the same names.
		again, err := json.Marshal(map[string]any{"count": len(hosts), "hosts": hosts})
		if err != nil {
			t.Fatal(err)
		}
		if back, err := parsePollRequest(again); err != nil || !slices.Equal(back, hosts) {
			t.Fatalf("re-encoded %s: got %q, %v; want %q", again, back, err, hosts)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PrefixNova+"/PollHosts", strings.NewReader(string(body))))
		if rec.Code != http.StatusOK {
			t.Fatalf("handler answered %d to a body the decoder accepts: %s", rec.Code, rec.Body)
		}
		var ans struct {
			Hosts []struct {
				HostName string `json:"host_name"`
				TrustLvl string `json:"trust_lvl"`
				VTime    string `json:"vtime"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
		if len(ans.Hosts) != len(hosts) {
			t.Fatalf("%d entries for %d names", len(ans.Hosts), len(hosts))
		}
		for i, e := range ans.Hosts {
			if e.HostName != hosts[i] || e.TrustLvl != "unknown" || !vtimeRE.MatchString(e.VTime) {
				t.Fatalf("entry %d = %+v for name %q", i, e, hosts[i])
			}
		}
	})
}

// referenceParse is the same contract as parsePollRequest written plainly
// with encoding/json's token API: the fuzz target checks that both accept
// and reject the same bodies and read the same names.
func referenceParse(body []byte) ([]string, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not an object: %v %v", tok, err)
	}
	var hosts []string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := tok.(string)
		if seen[key] || (key != "count" && key != "hosts") {
			return nil, fmt.Errorf("key %q", key)
		}
		seen[key] = true
		if tok, err = dec.Token(); err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case json.Number:
			if key != "count" || strings.ContainsAny(string(v), ".eE-") {
				return nil, fmt.Errorf("%s = %v", key, v)
			}
			if _, err := v.Int64(); err != nil {
				return nil, err
			}
		case string:
			if key != "hosts" || len(v) > MaxHostName {
				return nil, fmt.Errorf("%s = %q", key, v)
			}
			hosts = []string{v}
		case json.Delim:
			if key != "hosts" || v != '[' {
				return nil, fmt.Errorf("%s = %v", key, v)
			}
			hosts = []string{}
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return nil, err
				}
				name, ok := tok.(string)
				if !ok || len(name) > MaxHostName || len(hosts) == MaxPollHosts {
					return nil, fmt.Errorf("name %v", tok)
				}
				hosts = append(hosts, name)
			}
			if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
				return nil, fmt.Errorf("list end: %v %v", tok, err)
			}
		default:
			return nil, fmt.Errorf("%s = %v", key, tok)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, fmt.Errorf("object end: %v %v", tok, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data")
	}
	if !seen["hosts"] {
		return nil, errors.New("no hosts")
	}
	return hosts, nil
}
