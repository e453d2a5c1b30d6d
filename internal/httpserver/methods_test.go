package httpserver

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kanga-run/kanga/errdefs"
)

// TestMethodsNotAllowed: a path served under other methods gets its Allow
// header and a MethodNotAllowed error; an unknown path gets nil, for the
// caller's 404.
func TestMethodsNotAllowed(t *testing.T) {
	m := NewMethods()
	m.Add(http.MethodGet, "/v1/things/{name}")
	m.Add(http.MethodDelete, "/v1/things/{name}")
	m.Add(http.MethodPost, "/v1/things")
	for _, tt := range []struct {
		method, path string
		allow        string // "": the path is unknown
	}{
		{"PUT", "/v1/things/a", "GET, HEAD, DELETE"},
		{"GET", "/v1/things", "POST"},
		{"GET", "/v1/nothing", ""},
		{"GET", "/v1/things/a/b", ""},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			err := m.NotAllowed(w, httptest.NewRequest(tt.method, tt.path, nil))
			if tt.allow == "" {
				if err != nil || w.Header().Get("Allow") != "" {
					t.Fatalf("NotAllowed = %v, Allow %q; want nil and no header", err, w.Header().Get("Allow"))
				}
				return
			}
			if !errors.Is(err, errdefs.ErrMethodNotAllowed) {
				t.Errorf("NotAllowed = %v, want ErrMethodNotAllowed", err)
			}
			if got := w.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

// TestTooLarge names the limit of a MaxBytesReader's error and leaves
// other errors alone.
func TestTooLarge(t *testing.T) {
	if err := TooLarge(&http.MaxBytesError{Limit: 10}); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("TooLarge(MaxBytesError) = %v, want ErrTooLarge", err)
	}
	if err := TooLarge(errors.New("other")); err != nil {
		t.Errorf("TooLarge(other) = %v, want nil", err)
	}
}
