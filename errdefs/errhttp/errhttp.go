// Package errhttp maps Kanga's error taxonomy (package errdefs) to HTTP
// statuses and back. The API server answers with ToHTTP; the client, given
// a response without a JSON error body (a proxy's, say), rebuilds the class
// with ToNative.
package errhttp

import (
	"context"
	"fmt"
	"net/http"

	"github.com/kanga-run/kanga/errdefs"
)

// StatusClientClosedRequest is the status of a request whose client went
// away before the answer (nginx's 499); it is only ever logged and audited,
// since nobody is left to read it.
const StatusClientClosedRequest = 499

// ToHTTP returns the HTTP status of err's class; an error of no class is
// 500 Internal Server Error.
func ToHTTP(err error) int {
	switch errdefs.Class(err) {
	case errdefs.ErrInvalidArgument:
		return http.StatusBadRequest
	case errdefs.ErrNotFound:
		return http.StatusNotFound
	case errdefs.ErrAlreadyExists, errdefs.ErrConflict, errdefs.ErrFailedPrecondition:
		return http.StatusConflict
	case errdefs.ErrUnauthenticated:
		return http.StatusUnauthorized
	case errdefs.ErrPermissionDenied:
		return http.StatusForbidden
	case errdefs.ErrUnavailable:
		return http.StatusServiceUnavailable
	case errdefs.ErrNotImplemented:
		return http.StatusNotImplemented
	case errdefs.ErrTooLarge:
		return http.StatusRequestEntityTooLarge
	case errdefs.ErrMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case errdefs.ErrTooManyRequests:
		return http.StatusTooManyRequests
	case context.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case context.Canceled:
		return StatusClientClosedRequest
	}
	return http.StatusInternalServerError
}

// ToNative returns the error class of an HTTP error status. Where several
// classes share a status (409 is already exists, conflict and failed
// precondition) it returns the widest, errdefs.ErrConflict; a status of no
// class (500 and anything unexpected) returns an error that wraps none, so
// errdefs.Code reports it Internal.
func ToNative(status int) error {
	switch status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		// A proxy answers 502 when the server behind it is down.
		return errdefs.ErrUnavailable
	case http.StatusNotImplemented:
		return errdefs.ErrNotImplemented
	case http.StatusRequestEntityTooLarge:
		return errdefs.ErrTooLarge
	case http.StatusMethodNotAllowed:
		return errdefs.ErrMethodNotAllowed
	case http.StatusTooManyRequests:
		return errdefs.ErrTooManyRequests
	case http.StatusGatewayTimeout:
		return context.DeadlineExceeded
	case StatusClientClosedRequest:
		return context.Canceled
	}
	return unexpectedStatus(status)
}

// unexpectedStatus is a status that names no class of the taxonomy.
type unexpectedStatus int

func (s unexpectedStatus) Error() string {
	if text := http.StatusText(int(s)); text != "" {
		return fmt.Sprintf("unexpected HTTP status %d %s", int(s), text)
	}
	return fmt.Sprintf("unexpected HTTP status %d", int(s))
}
