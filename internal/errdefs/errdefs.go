// Package errdefs is Kanga's one error taxonomy. Code anywhere wraps one of
// these sentinels with %w and a message that says what went wrong, on which
// object and how to fix it; only the API edge maps them to HTTP statuses.
package errdefs

import (
	"context"
	"errors"
	"net/http"
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

// classes is ordered: the first sentinel an error wraps decides its class.
var classes = []struct {
	err    error
	code   string
	status int
}{
	{ErrInvalidArgument, "InvalidArgument", http.StatusBadRequest},
	{ErrNotFound, "NotFound", http.StatusNotFound},
	{ErrAlreadyExists, "AlreadyExists", http.StatusConflict},
	{ErrConflict, "Conflict", http.StatusConflict},
	{ErrFailedPrecondition, "FailedPrecondition", http.StatusConflict},
	{ErrUnauthenticated, "Unauthenticated", http.StatusUnauthorized},
	{ErrPermissionDenied, "PermissionDenied", http.StatusForbidden},
	{ErrUnavailable, "Unavailable", http.StatusServiceUnavailable},
	{ErrNotImplemented, "NotImplemented", http.StatusNotImplemented},
	{ErrTooLarge, "TooLarge", http.StatusRequestEntityTooLarge},
	{ErrMethodNotAllowed, "MethodNotAllowed", http.StatusMethodNotAllowed},
	{ErrTooManyRequests, "TooManyRequests", http.StatusTooManyRequests},
	{context.DeadlineExceeded, "DeadlineExceeded", http.StatusGatewayTimeout},
	{context.Canceled, "Canceled", 499},
}

// Code returns the error's class name and HTTP status; unknown errors are
// Internal / 500.
func Code(err error) (string, int) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return "Internal", http.StatusInternalServerError
}

// FromCode returns the sentinel for a class name, so that a client can
// rebuild the server's error class from a response body.
func FromCode(code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}
