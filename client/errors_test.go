package client_test

// These tests use the client as an SDK user outside this module does: only
// the public packages client, api, errdefs and errdefs/errhttp.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/errdefs/errhttp"
)

// TestErrorsIs: a 404, 409 or 429 from an HTTP server, with the API's
// error body (answered as the API server answers: errhttp.ToHTTP for the
// status, errdefs.Code for the body) or without one (as a proxy answers),
// comes back from the client as an error that errors.Is matches against
// the errdefs sentinel, and against no other.
func TestErrorsIs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error // what the server's handler failed with
		bare       int   // status of a response without an error body
		status     int
		want       error
		retryAfter time.Duration
	}{
		{name: "404", err: fmt.Errorf("instance %q not found: %w", "web", errdefs.ErrNotFound), status: 404, want: errdefs.ErrNotFound},
		{name: "409 already exists", err: fmt.Errorf("instance %q: %w", "web", errdefs.ErrAlreadyExists), status: 409, want: errdefs.ErrAlreadyExists},
		{name: "409 failed precondition", err: fmt.Errorf("instance is running: %w", errdefs.ErrFailedPrecondition), status: 409, want: errdefs.ErrFailedPrecondition},
		{name: "429", err: fmt.Errorf("creates in flight: %w", errdefs.ErrTooManyRequests), status: 429, want: errdefs.ErrTooManyRequests, retryAfter: 7 * time.Second},
		{name: "bare 404", bare: 404, status: 404, want: errdefs.ErrNotFound},
		{name: "bare 409", bare: 409, status: 409, want: errdefs.ErrConflict},
		{name: "bare 429", bare: 429, status: 429, want: errdefs.ErrTooManyRequests, retryAfter: 7 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter > 0 {
					w.Header().Set("Retry-After", fmt.Sprint(int(tc.retryAfter.Seconds())))
				}
				if tc.bare != 0 {
					w.WriteHeader(tc.bare)
					io.WriteString(w, http.StatusText(tc.bare))
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(errhttp.ToHTTP(tc.err))
				_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: errdefs.Code(tc.err), Message: tc.err.Error()}})
			}))
			defer srv.Close()
			// No retries: the test is about the error of one answer.
			c, err := client.New(srv.URL, "token", client.WithBusyRetry(0))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.CreateInstance(context.Background(), api.CreateInstanceRequest{Name: "web"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want errors.Is %v", err, tc.want)
			}
			for _, other := range []error{errdefs.ErrNotFound, errdefs.ErrConflict, errdefs.ErrAlreadyExists,
				errdefs.ErrFailedPrecondition, errdefs.ErrTooManyRequests, errdefs.ErrUnavailable} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("err = %v also matches %v", err, other)
				}
			}
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tc.status || ae.Code != errdefs.Code(tc.want) {
				t.Fatalf("err = %#v, want an *APIError with status %d and code %s", err, tc.status, errdefs.Code(tc.want))
			}
			if ae.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", ae.RetryAfter, tc.retryAfter)
			}
			if tc.err != nil && err.Error() != tc.err.Error() {
				t.Errorf("err text %q, want the server's %q", err.Error(), tc.err.Error())
			}
		})
	}
}

// TestUnknownCodeFallsBackToStatus: a class a newer server may add is
// still classified by its status.
func TestUnknownCodeFallsBackToStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorResponse{Error: api.Error{Code: "NoSuchClassYet", Message: "gone elsewhere"}})
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetInstance(context.Background(), "web")
	var ae *client.APIError
	if !errors.Is(err, errdefs.ErrNotFound) || !errors.As(err, &ae) || ae.Code != "NoSuchClassYet" {
		t.Fatalf("err = %#v, want NotFound keeping the code NoSuchClassYet", err)
	}
}
