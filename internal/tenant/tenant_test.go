package tenant

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

func TestName(t *testing.T) {
	tests := []struct {
		name    string
		ctx     context.Context
		want    string
		wantErr error
	}{
		{"missing", context.Background(), "", errdefs.ErrFailedPrecondition},
		{"empty", WithName(context.Background(), ""), "", errdefs.ErrFailedPrecondition},
		{"set", WithName(context.Background(), "acme"), "acme", nil},
		{"innermost wins", WithName(WithName(context.Background(), "a"), "b"), "b", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Name(tt.ctx)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Name() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Name() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{Default, true},
		{"a", true},
		{"0", true},
		{"team-42", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"A", false},
		{"a_b", false},
		{"a.b", false},
		{"a/b", false},
		{"a b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.name)
			if tt.valid && err != nil {
				t.Fatalf("Validate(%q) = %v, want nil", tt.name, err)
			}
			if !tt.valid && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Validate(%q) = %v, want ErrInvalidArgument", tt.name, err)
			}
		})
	}
}
