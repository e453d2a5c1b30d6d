package errhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func TestToHTTP(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{errdefs.ErrInvalidArgument, http.StatusBadRequest},
		{errdefs.ErrNotFound, http.StatusNotFound},
		{errdefs.ErrAlreadyExists, http.StatusConflict},
		{errdefs.ErrConflict, http.StatusConflict},
		{errdefs.ErrFailedPrecondition, http.StatusConflict},
		{errdefs.ErrUnauthenticated, http.StatusUnauthorized},
		{errdefs.ErrPermissionDenied, http.StatusForbidden},
		{errdefs.ErrUnavailable, http.StatusServiceUnavailable},
		{errdefs.ErrNotImplemented, http.StatusNotImplemented},
		{errdefs.ErrTooLarge, http.StatusRequestEntityTooLarge},
		{errdefs.ErrMethodNotAllowed, http.StatusMethodNotAllowed},
		{errdefs.ErrTooManyRequests, http.StatusTooManyRequests},
		{context.DeadlineExceeded, http.StatusGatewayTimeout},
		{context.Canceled, StatusClientClosedRequest},
		// Errors of no class.
		{errors.New("boom"), http.StatusInternalServerError},
		{nil, http.StatusInternalServerError},
		// Wrapped, and wrapping two classes: the taxonomy's first wins.
		{fmt.Errorf("instance %q: %w", "web", errdefs.ErrNotFound), http.StatusNotFound},
		{errors.Join(errdefs.ErrNotFound, errdefs.ErrInvalidArgument), http.StatusBadRequest},
	} {
		if got := ToHTTP(tc.err); got != tc.status {
			t.Errorf("ToHTTP(%v) = %d, want %d", tc.err, got, tc.status)
		}
	}
}

func TestToNative(t *testing.T) {
	for _, tc := range []struct {
		status int
		class  error // nil: no class (Internal)
	}{
		{http.StatusBadRequest, errdefs.ErrInvalidArgument},
		{http.StatusUnauthorized, errdefs.ErrUnauthenticated},
		{http.StatusForbidden, errdefs.ErrPermissionDenied},
		{http.StatusNotFound, errdefs.ErrNotFound},
		{http.StatusMethodNotAllowed, errdefs.ErrMethodNotAllowed},
		{http.StatusConflict, errdefs.ErrConflict},
		{http.StatusRequestEntityTooLarge, errdefs.ErrTooLarge},
		{http.StatusTooManyRequests, errdefs.ErrTooManyRequests},
		{StatusClientClosedRequest, context.Canceled},
		{http.StatusNotImplemented, errdefs.ErrNotImplemented},
		{http.StatusBadGateway, errdefs.ErrUnavailable},
		{http.StatusServiceUnavailable, errdefs.ErrUnavailable},
		{http.StatusGatewayTimeout, context.DeadlineExceeded},
		// Statuses of no class.
		{http.StatusInternalServerError, nil},
		{http.StatusTeapot, nil},
		{http.StatusOK, nil},
		{599, nil},
	} {
		err := ToNative(tc.status)
		if err == nil {
			t.Errorf("ToNative(%d) = nil, want an error", tc.status)
			continue
		}
		if class := errdefs.Class(err); class != tc.class {
			t.Errorf("ToNative(%d) = %v of class %v, want %v", tc.status, err, class, tc.class)
		}
		if tc.class == nil && errdefs.Code(err) != errdefs.CodeInternal {
			t.Errorf("ToNative(%d) = %v of code %s, want %s", tc.status, err, errdefs.Code(err), errdefs.CodeInternal)
		}
	}
	if got := ToNative(http.StatusTeapot).Error(); got != "unexpected HTTP status 418 I'm a teapot" {
		t.Errorf("ToNative(418) says %q", got)
	}
	if got := ToNative(599).Error(); got != "unexpected HTTP status 599" {
		t.Errorf("ToNative(599) says %q", got)
	}
}

// TestRoundTrip: every class the server sends comes back to a class that
// answers with the same status, so a client retrying or reporting on the
// status sees what the server meant.
func TestRoundTrip(t *testing.T) {
	for _, code := range []string{
		"InvalidArgument", "NotFound", "AlreadyExists", "Conflict", "FailedPrecondition",
		"Unauthenticated", "PermissionDenied", "Unavailable", "NotImplemented", "TooLarge",
		"MethodNotAllowed", "TooManyRequests", "DeadlineExceeded", "Canceled",
	} {
		sentinel := errdefs.FromCode(code)
		if sentinel == nil {
			t.Fatalf("FromCode(%s) = nil", code)
		}
		status := ToHTTP(sentinel)
		back := ToNative(status)
		if ToHTTP(back) != status {
			t.Errorf("%s: ToHTTP = %d, ToNative = %v, which maps to %d", code, status, back, ToHTTP(back))
		}
	}
}
