package nova

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/verdict"
)

// The two URL prefixes OpenAttestation servers answered on: Nova's default
// attestation_api_url, and the one OAT 1.5+ documented.
const (
	PrefixNova = "/OpenAttestationWebServices/V1.0"
	PrefixOAT  = "/AttestationService/resources"
)

// Limits on a PollHosts request. Nova sends every compute node it knows in
// one request, often as FQDNs of 30–60 bytes, so the body limit leaves room
// for the host limit at about 80 bytes a name; both keep one hostile request
// to a bounded amount of memory and CPU.
const (
	MaxPollBody  = 8 << 20
	MaxPollHosts = 100_000
	MaxHostName  = evidence.MaxHostName // no longer name can be enrolled
)

// vtimeLayout is RFC 3339 in UTC with a literal Z and no fraction, the form
// every Nova release parses (iso8601.parse_date).
const vtimeLayout = "2006-01-02T15:04:05Z"

// Verdicts is the read side of the verdict cache that PollHosts answers from.
// Verdict must not block on a node; ok is false for a host never attested.
type Verdicts interface {
	Verdict(host string) (v verdict.Verdict, ok bool)
}

// PollHostsConfig configures PollHosts.
type PollHostsConfig struct {
	// Now is the clock levels are read at; nil means time.Now.
	Now func() time.Time
}

// Paths lists the URL paths PollHosts is answered on, for mounting it on a
// mux: {prefix}/PollHosts for each prefix, PrefixNova and PrefixOAT when
// none is given. A trailing slash is dropped (Nova joins
// attestation_api_url and "PollHosts" with a slash).
func Paths(prefixes ...string) []string {
	if len(prefixes) == 0 {
		prefixes = []string{PrefixNova, PrefixOAT}
	}
	var paths []string
	for _, prefix := range prefixes {
		prefix = "/" + strings.Trim(prefix, "/")
		if prefix == "/" {
			prefix = ""
		}
		paths = append(paths, prefix+"/PollHosts")
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

// PollHosts is the http.Handler for POST {prefix}/PollHosts. The mux it is
// mounted on routes the path (Paths) and the middleware in front of it
// authenticates Nova's x-auth-blob; PollHosts itself answers the method and
// the body. Apart from a pool of reusable buffers it holds no mutable state;
// it is safe for concurrent use.
type PollHosts struct {
	now      func() time.Time
	verdicts Verdicts
	// bufs holds *[]byte for request bodies and answers, reused because
	// this is the scheduler's path and garbage costs it latency. Names
	// decoded from a body are copies, never views into a pooled buffer.
	bufs sync.Pool
}

// NewPollHosts returns a PollHosts handler answering from v.
func NewPollHosts(cfg PollHostsConfig, v Verdicts) *PollHosts {
	p := &PollHosts{now: cfg.Now, verdicts: v}
	if p.now == nil {
		p.now = time.Now
	}
	return p
}

// ServeHTTP answers one PollHosts request. Every answer is JSON: 200 with one
// entry per requested name, or an error status with {"error": "..."}, which
// Nova reads as "every host unknown" (fail closed).
func (p *PollHosts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "PollHosts accepts only POST")
		return
	}
	bufp := p.getBuf()
	defer p.putBuf(bufp)
	body, err := readBody(w, r, (*bufp)[:0])
	*bufp = body
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxPollBody))
			return
		}
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	hosts, err := parsePollRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ansp := p.getBuf()
	defer p.putBuf(ansp)
	// An entry is the name plus at most 80 bytes of keys, level and vtime.
	ans := slices.Grow((*ansp)[:0], 16+len(body)+80*len(hosts))
	ans = p.appendAnswer(ans, hosts)
	*ansp = ans
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(ans)))
	w.WriteHeader(http.StatusOK)
	// The status is sent; a failed write means the client went away.
	_, _ = w.Write(ans)
}

// appendAnswer appends the JSON answer for hosts to buf:
//
//	{"hosts":[{"host_name":"node1","trust_lvl":"trusted","vtime":"2016-02-29T22:29:26Z"},...]}
//
// Every level is read at one instant, so one answer is consistent. Every
// entry has all three keys: Nova indexes them directly and a missing one is a
// KeyError in its scheduler. host_name echoes the requested name byte for
// byte. The answer is written by hand because it is on the scheduler's path
// and encoding/json's reflection costs more than the lookups.
func (p *PollHosts) appendAnswer(buf []byte, hosts []string) []byte {
	now := p.now().UTC()
	var vtimes vtimeCache
	buf = append(buf, `{"hosts":[`...)
	for i, host := range hosts {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"host_name":`...)
		buf = appendJSONString(buf, host)
		level, vtime := verdict.Unknown, now
		if v, ok := p.verdicts.Verdict(host); ok {
			// An expired verdict reads Unknown, and that holds as of now: an
			// old vtime would make Nova re-poll every host on every request.
			if level = v.At(now); level != verdict.Unknown && v.VTime.Before(now) {
				// Nova caches an entry until vtime + attestation_auth_timeout,
				// so a vtime in the future (from a clock that was ahead) would
				// pin it there: it is never later than now.
				vtime = v.VTime
			}
		}
		buf = append(buf, `,"trust_lvl":"`...)
		buf = append(buf, level...)
		buf = append(buf, `","vtime":"`...)
		buf = vtimes.append(buf, vtime)
		buf = append(buf, `"}`...)
	}
	return append(buf, "]}\n"...)
}

// vtimeCache formats vtimes (vtimeLayout, UTC), remembering the text of
// recent seconds: a fleet's verdicts were established within one
// re-attestation interval, so an answer holds few distinct seconds, and
// formatting each entry anew was a tenth of the request's cost.
type vtimeCache [64]struct {
	sec  int64
	set  bool
	text [len(vtimeLayout)]byte
}

func (c *vtimeCache) append(buf []byte, t time.Time) []byte {
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return t.AppendFormat(buf, vtimeLayout) // does not fit the layout's width
	}
	sec := t.Unix()
	e := &c[uint64(sec)%uint64(len(c))]
	if !e.set || e.sec != sec {
		e.sec, e.set = sec, true
		t.AppendFormat(e.text[:0], vtimeLayout)
	}
	return append(buf, e.text[:]...)
}

// readBody appends the whole request body, at most MaxPollBody bytes, to
// buf, growing it once from Content-Length when the client sent one.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, error) {
	claimed := r.ContentLength
	if claimed > MaxPollBody {
		claimed = 0
	}
	return httpjson.AppendBody(buf, http.MaxBytesReader(w, r.Body, MaxPollBody), claimed)
}

// maxPooled is the largest buffer kept for reuse; the rare huge request
// does not pin its memory.
const maxPooled = 4 << 20

func (p *PollHosts) putBuf(b *[]byte) {
	if cap(*b) <= maxPooled {
		p.bufs.Put(b)
	}
}

// getBuf returns a buffer from the pool or a new one.
func (p *PollHosts) getBuf() *[]byte {
	if b, ok := p.bufs.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

// appendJSONString appends s as a JSON string. Host names are printable
// ASCII in practice and are copied as they are; anything else goes through
// encoding/json, which escapes it correctly.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			quoted, err := json.Marshal(s)
			if err != nil {
				// Marshal of a string cannot fail; keep the answer valid JSON.
				return append(buf, `""`...)
			}
			return append(buf, quoted...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	// The status is already sent; a failed write means the client went away.
	_ = enc.Encode(v)
}
