package httpjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// DefaultMaxAnswer bounds an answer's body when Client.MaxAnswer is zero.
const DefaultMaxAnswer = 1 << 20

// ErrAnswer marks an error in what the peer answered: a status other than
// 2xx, a body over the limit, or a body that does not decode. Errors without
// it are the transport's (no connection, a timeout, a broken read): the peer
// may never have seen the request.
var ErrAnswer = errors.New("bad answer")

// StatusError is an answer with a status other than 2xx. Message is the
// peer's {"error": …} text, or the start of its body; it is the peer's
// word, not checked.
type StatusError struct {
	Code    int
	Status  string // "403 Forbidden"
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return e.Status
	}
	return e.Status + ": " + e.Message
}

// Is makes a StatusError match ErrAnswer.
func (e *StatusError) Is(target error) bool { return target == ErrAnswer }

// Client sends JSON requests and decodes JSON answers over HTTP: how the
// agent reaches the server, the server its agents, and the CLI and demo the
// API. The zero value is not usable: HTTP is required; its TLS
// configuration is who the client trusts.
type Client struct {
	HTTP *http.Client
	// Base is put in front of every path ("https://host:port"); empty
	// when paths are full URLs.
	Base string
	// Token, when set, is sent as a bearer token.
	Token string
	// MaxAnswer bounds an answer's body (DefaultMaxAnswer when zero).
	MaxAnswer int64
	// AllowUnknownFields decodes answers leniently. By default an answer
	// with a field that out does not have, or data after its JSON value,
	// is refused; the operator's verbs read partial views of the API's
	// answers and set it, so that a newer server does not break them.
	AllowUnknownFields bool
}

// Do sends in as JSON (when not nil) with method to Base+path and decodes
// a 2xx answer into out (when not nil and the body is not empty). Errors
// name the method and path; those about the answer match ErrAnswer.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	if err := c.do(ctx, method, c.Base+path, in, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// Raw is Do for an answer the caller decodes itself: the 2xx answer's
// bytes, at most MaxAnswer of them.
func (c *Client) Raw(ctx context.Context, method, path string, in any) ([]byte, error) {
	b, err := c.send(ctx, method, c.Base+path, in)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return b, nil
}

func (c *Client) do(ctx context.Context, method, url string, in, out any) error {
	b, err := c.send(ctx, method, url, in)
	if err != nil || out == nil || len(b) == 0 {
		return err
	}
	if c.AllowUnknownFields {
		err = json.Unmarshal(b, out)
	} else {
		err = DecodeStrict(b, out)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAnswer, err)
	}
	return nil
}

// send sends in as JSON (when not nil) and returns a 2xx answer's body.
func (c *Client) send(ctx context.Context, method, url string, in any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return ReadAnswer(resp, c.MaxAnswer)
}

// ReadAnswer returns a 2xx answer's body, at most limit bytes
// (DefaultMaxAnswer when not positive; a longer body is ErrAnswer), or the
// StatusError of another answer. It does not close the body.
func ReadAnswer(resp *http.Response, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxAnswer
	}
	if resp.StatusCode/100 != 2 {
		// An error answer is read only far enough for its message.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, &StatusError{Code: resp.StatusCode, Status: resp.Status, Message: errorMessage(b)}
	}
	b, err := readAll(resp, limit+1)
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: body exceeds %d bytes", ErrAnswer, limit)
	}
	return b, nil
}

// readAll reads at most limit bytes of resp's body into a buffer sized by
// its Content-Length, when that is small (a larger one grows as the bytes
// come: a claimed length is not an allocation the peer can ask for).
func readAll(resp *http.Response, limit int64) ([]byte, error) {
	const presize = 64 << 10
	claimed := resp.ContentLength
	if claimed > presize {
		claimed = 0
	}
	return AppendBody(nil, io.LimitReader(resp.Body, limit), claimed)
}

// AppendBody appends all of r to buf. A positive claimed length (a
// Content-Length the caller has bounded) grows buf once, with room to see
// io.EOF without growing again; beyond it buf grows as the bytes come.
func AppendBody(buf []byte, r io.Reader, claimed int64) ([]byte, error) {
	if claimed > 0 {
		buf = slices.Grow(buf, int(claimed)+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 4096)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// errorMessage is the text of an error answer: its {"error": …} when it
// has one, else its start, printable.
func errorMessage(b []byte) string {
	var e ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512]
	}
	return strings.ToValidUTF8(s, "?")
}

// DecodeStrict decodes exactly one JSON value from b into v: unknown
// fields and data after the value are errors.
func DecodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
