package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{fmt.Errorf("memory %q: %w", "x", ErrInvalidArgument), "InvalidArgument", 400},
		{fmt.Errorf("instance: %w", ErrNotFound), "NotFound", 404},
		{fmt.Errorf("name: %w", ErrAlreadyExists), "AlreadyExists", 409},
		{fmt.Errorf("running: %w", ErrFailedPrecondition), "FailedPrecondition", 409},
		{fmt.Errorf("token: %w", ErrUnauthenticated), "Unauthenticated", 401},
		{fmt.Errorf("class: %w", ErrPermissionDenied), "PermissionDenied", 403},
		{fmt.Errorf("host: %w", ErrUnavailable), "Unavailable", 503},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "DeadlineExceeded", 504},
		{fmt.Errorf("body: %w", ErrTooLarge), "TooLarge", 413},
		{fmt.Errorf("PUT /v1/instances: %w", ErrMethodNotAllowed), "MethodNotAllowed", 405},
		{fmt.Errorf("creates in flight: %w", ErrTooManyRequests), "TooManyRequests", 429},
		{errors.New("boom"), "Internal", 500},
		// The first class in the taxonomy wins when an error wraps two.
		{errors.Join(ErrNotFound, ErrInvalidArgument), "InvalidArgument", 400},
	} {
		code, status := Code(tc.err)
		if code != tc.code || status != tc.status {
			t.Errorf("Code(%v) = %s %d, want %s %d", tc.err, code, status, tc.code, tc.status)
		}
		if back := FromCode(code); tc.code != "Internal" && !errors.Is(tc.err, back) {
			t.Errorf("FromCode(%s) = %v does not match %v", code, back, tc.err)
		}
	}
	if FromCode("NoSuchCode") != nil {
		t.Error("FromCode of an unknown code is not nil")
	}
}
