// Package httpjson is JSON over HTTP for every trustpool endpoint: on the
// serving side it decodes requests strictly with size limits, writes JSON
// answers and turns errors into an HTTP status and a message that is safe to
// show (the one place that decides both).
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"trustpool/internal/problem"
)

// JSON writes v with status.
func JSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

var statusOf = map[problem.Kind]int{
	problem.Invalid:      http.StatusBadRequest,
	problem.Unauthorized: http.StatusUnauthorized,
	problem.Forbidden:    http.StatusForbidden,
	problem.NotFound:     http.StatusNotFound,
	problem.Conflict:     http.StatusConflict,
	problem.TooLarge:     http.StatusRequestEntityTooLarge,
	problem.TooMany:      http.StatusTooManyRequests,
}

// Error writes err. A problem.Error shows its message; anything else is an
// internal error whose details go to the log, not to the client.
func Error(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var p *problem.Error
	if errors.As(err, &p) {
		JSON(w, statusOf[p.Kind], ErrorBody{Error: p.Message})
		return
	}
	log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	JSON(w, http.StatusInternalServerError, ErrorBody{Error: "internal error"})
}

// Decode reads one JSON value of at most limit bytes into v, strictly:
// unknown fields, trailing data and oversized bodies are problems, reported
// with a message that says what is wrong.
func Decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return problem.New(problem.Invalid, "content type %q: want application/json", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err, limit)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return problem.New(problem.Invalid, "request body has data after the JSON value")
	}
	return nil
}

func decodeProblem(err error, limit int64) error {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return problem.New(problem.TooLarge, "request body exceeds %d bytes", limit)
	case errors.Is(err, io.EOF):
		return problem.New(problem.Invalid, "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(problem.Invalid, "request body is truncated JSON")
	case errors.As(err, &syntax):
		return problem.New(problem.Invalid, "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		return problem.New(problem.Invalid, "field %q: want %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return problem.New(problem.Invalid, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return problem.Wrap(problem.Invalid, err, "%s", fmt.Sprint(err))
}
