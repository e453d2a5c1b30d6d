// Package errdefs is Kanga's one error taxonomy. Code anywhere wraps one of
// these sentinels with %w and a message that says what went wrong, on which
// object and how to fix it; callers test the class with errors.Is (or the
// Is* helpers). The package is public so that users of the Go SDK (package
// client) can test the class of a server's answer:
//
//	if errors.Is(err, errdefs.ErrNotFound) { ... }
//
// The taxonomy knows nothing of transports: its mapping to HTTP statuses
// lives in errdefs/errhttp, used by the API server and the client alike.
package errdefs

import (
	"context"
	"errors"
	"strings"
)

var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrConflict           = errors.New("conflict")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrUnavailable        = errors.New("unavailable")
	ErrNotImplemented     = errors.New("not implemented")
	// ErrTooLarge is a request (body, document, upload) larger than the
	// receiver accepts.
	ErrTooLarge = errors.New("too large")
	// ErrMethodNotAllowed is a request for an existing resource with a
	// method it does not support.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrTooManyRequests is a request refused because the receiver is at
	// a limit of work in flight (admission, backpressure); the same
	// request succeeds later, so clients retry it after a pause.
	ErrTooManyRequests = errors.New("too many requests")
)

// CodeInternal is the class of an error that wraps none of the taxonomy's
// sentinels: a bug or an unexpected failure.
const CodeInternal = "Internal"

// classes is ordered: the first sentinel an error wraps decides its class.
// The names are the wire codes of api.Error.Code.
var classes = []struct {
	err  error
	code string
}{
	{ErrInvalidArgument, "InvalidArgument"},
	{ErrNotFound, "NotFound"},
	{ErrAlreadyExists, "AlreadyExists"},
	{ErrConflict, "Conflict"},
	{ErrFailedPrecondition, "FailedPrecondition"},
	{ErrUnauthenticated, "Unauthenticated"},
	{ErrPermissionDenied, "PermissionDenied"},
	{ErrUnavailable, "Unavailable"},
	{ErrNotImplemented, "NotImplemented"},
	{ErrTooLarge, "TooLarge"},
	{ErrMethodNotAllowed, "MethodNotAllowed"},
	{ErrTooManyRequests, "TooManyRequests"},
	{context.DeadlineExceeded, "DeadlineExceeded"},
	{context.Canceled, "Canceled"},
}

// Class returns the sentinel that decides err's class (the first of the
// taxonomy err wraps), or nil when err wraps none (class Internal).
func Class(err error) error {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.err
		}
	}
	return nil
}

// Code returns the name of err's class ("NotFound", "Conflict", ...), or
// CodeInternal for an error that wraps none of the taxonomy.
func Code(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// FromCode returns the sentinel of a class name, so that a receiver can
// rebuild the sender's error class; nil for Internal and unknown names.
func FromCode(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// Message is err's text for a reader told its class apart (an API error's
// code, the CLI's exit code), without the trailing ": not found" that
// wrapping the sentinel adds when the text already says it: `instance "x"
// not found: not found` becomes `instance "x" not found`. A text that says
// the class only in the suffix (`volume "x": already exists`) keeps it.
func Message(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	class := Class(err)
	if class == nil {
		return msg
	}
	word := class.Error()
	suffix := ": " + word
	for strings.HasSuffix(msg, suffix) {
		rest := strings.TrimSuffix(msg, suffix)
		if !strings.Contains(strings.ToLower(rest), word) {
			break
		}
		msg = rest
	}
	return msg
}

func IsInvalidArgument(err error) bool    { return errors.Is(err, ErrInvalidArgument) }
func IsNotFound(err error) bool           { return errors.Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool      { return errors.Is(err, ErrAlreadyExists) }
func IsConflict(err error) bool           { return errors.Is(err, ErrConflict) }
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }
func IsUnauthenticated(err error) bool    { return errors.Is(err, ErrUnauthenticated) }
func IsPermissionDenied(err error) bool   { return errors.Is(err, ErrPermissionDenied) }
func IsUnavailable(err error) bool        { return errors.Is(err, ErrUnavailable) }
func IsNotImplemented(err error) bool     { return errors.Is(err, ErrNotImplemented) }
func IsTooLarge(err error) bool           { return errors.Is(err, ErrTooLarge) }
func IsMethodNotAllowed(err error) bool   { return errors.Is(err, ErrMethodNotAllowed) }
func IsTooManyRequests(err error) bool    { return errors.Is(err, ErrTooManyRequests) }
