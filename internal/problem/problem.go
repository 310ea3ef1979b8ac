// Package problem classifies errors that a client caused, so that domain
// packages can say "invalid" or "conflict" without knowing HTTP, and one
// renderer (package httpjson) picks the status and the user-safe message.
package problem

import (
	"errors"
	"fmt"
)

// Kind is the class of a client-caused failure.
type Kind int

// The kinds of problems a request can have.
const (
	Invalid      Kind = iota + 1 // malformed or semantically wrong input
	Unauthorized                 // no or bad credential
	Forbidden                    // credential lacks the right
	NotFound                     // the named thing does not exist
	Conflict                     // the request contradicts stored state
	TooLarge                     // the request exceeds a size limit
	TooMany                      // rate limited
)

// Error is an error whose Message may be shown to the client.
type Error struct {
	Kind    Kind
	Message string
	Err     error // the cause, for logs; never shown
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New makes a problem of kind k with a client-safe message.
func New(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Wrap makes a problem of kind k that keeps err as its cause.
func Wrap(k Kind, err error, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of the first problem in err's chain, or 0.
func KindOf(err error) Kind {
	var p *Error
	if errors.As(err, &p) {
		return p.Kind
	}
	return 0
}
