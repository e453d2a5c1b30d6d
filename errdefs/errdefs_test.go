package errdefs

import (
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"strings"
	"testing"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err   error
		code  string
		class error
	}{
		{fmt.Errorf("memory %q: %w", "x", ErrInvalidArgument), "InvalidArgument", ErrInvalidArgument},
		{fmt.Errorf("instance: %w", ErrNotFound), "NotFound", ErrNotFound},
		{fmt.Errorf("name: %w", ErrAlreadyExists), "AlreadyExists", ErrAlreadyExists},
		{fmt.Errorf("version: %w", ErrConflict), "Conflict", ErrConflict},
		{fmt.Errorf("running: %w", ErrFailedPrecondition), "FailedPrecondition", ErrFailedPrecondition},
		{fmt.Errorf("token: %w", ErrUnauthenticated), "Unauthenticated", ErrUnauthenticated},
		{fmt.Errorf("class: %w", ErrPermissionDenied), "PermissionDenied", ErrPermissionDenied},
		{fmt.Errorf("host: %w", ErrUnavailable), "Unavailable", ErrUnavailable},
		{fmt.Errorf("prewarm: %w", ErrNotImplemented), "NotImplemented", ErrNotImplemented},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "DeadlineExceeded", context.DeadlineExceeded},
		{fmt.Errorf("request: %w", context.Canceled), "Canceled", context.Canceled},
		{fmt.Errorf("body: %w", ErrTooLarge), "TooLarge", ErrTooLarge},
		{fmt.Errorf("PUT /v1/instances: %w", ErrMethodNotAllowed), "MethodNotAllowed", ErrMethodNotAllowed},
		{fmt.Errorf("creates in flight: %w", ErrTooManyRequests), "TooManyRequests", ErrTooManyRequests},
		{errors.New("boom"), CodeInternal, nil},
		{nil, CodeInternal, nil},
		// The first class in the taxonomy wins when an error wraps two.
		{errors.Join(ErrNotFound, ErrInvalidArgument), "InvalidArgument", ErrInvalidArgument},
	} {
		if code := Code(tc.err); code != tc.code {
			t.Errorf("Code(%v) = %s, want %s", tc.err, code, tc.code)
		}
		if class := Class(tc.err); class != tc.class {
			t.Errorf("Class(%v) = %v, want %v", tc.err, class, tc.class)
		}
		if back := FromCode(tc.code); back != tc.class {
			t.Errorf("FromCode(%s) = %v, want %v", tc.code, back, tc.class)
		}
	}
	if FromCode("NoSuchCode") != nil {
		t.Error("FromCode of an unknown code is not nil")
	}
}

func TestIs(t *testing.T) {
	for _, tc := range []struct {
		is  func(error) bool
		err error
	}{
		{IsInvalidArgument, ErrInvalidArgument},
		{IsNotFound, ErrNotFound},
		{IsAlreadyExists, ErrAlreadyExists},
		{IsConflict, ErrConflict},
		{IsFailedPrecondition, ErrFailedPrecondition},
		{IsUnauthenticated, ErrUnauthenticated},
		{IsPermissionDenied, ErrPermissionDenied},
		{IsUnavailable, ErrUnavailable},
		{IsNotImplemented, ErrNotImplemented},
		{IsTooLarge, ErrTooLarge},
		{IsMethodNotAllowed, ErrMethodNotAllowed},
		{IsTooManyRequests, ErrTooManyRequests},
	} {
		if !tc.is(fmt.Errorf("wrapped: %w", tc.err)) {
			t.Errorf("Is%s does not match its own sentinel wrapped", Code(tc.err))
		}
		other := ErrInvalidArgument
		if tc.err == ErrInvalidArgument {
			other = ErrNotFound
		}
		if tc.is(other) || tc.is(errors.New(tc.err.Error())) {
			t.Errorf("Is%s matches another error", Code(tc.err))
		}
	}
}

// TestNoTransport keeps the taxonomy free of any transport: its HTTP
// mapping belongs in errdefs/errhttp.
func TestNoTransport(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi fs.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pkgs {
		for name, f := range p.Files {
			n++
			for _, imp := range f.Imports {
				if path := strings.Trim(imp.Path.Value, `"`); strings.HasPrefix(path, "net") || strings.Contains(path, "grpc") {
					t.Errorf("%s imports %s", name, path)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no source files parsed")
	}
}

func TestMessage(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("instance %q not found: %w", "x", ErrNotFound), `instance "x" not found`},
		// Said twice by two wrappings, as a forwarded error can be.
		{fmt.Errorf("%w: %w", fmt.Errorf("image y not found: %w", ErrNotFound), ErrNotFound), "image y not found"},
		// The suffix is the only place the class is said: kept.
		{fmt.Errorf("volume %q: %w", "x", ErrAlreadyExists), `volume "x": already exists`},
		{fmt.Errorf("is in use: conflict with z: %w", ErrConflict), "is in use: conflict with z"},
		{ErrNotFound, "not found"},
		{errors.New("boom: not found"), "boom: not found"},
		{nil, ""},
	} {
		if got := Message(tc.err); got != tc.want {
			t.Errorf("Message(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
