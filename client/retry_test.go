package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// busyThen is a fake create endpoint that refuses the first n requests
// with 429 and Retry-After (seconds), then records the instance; it keeps
// the names it was sent.
func busyThen(n int, retryAfter string, names *[]string, mu *sync.Mutex) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateInstanceRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		*names = append(*names, req.Name)
		refuse := len(*names) <= n
		mu.Unlock()
		if refuse {
			w.Header().Set("Retry-After", retryAfter)
			writeError(w, http.StatusTooManyRequests, "TooManyRequests", "too many instance creates in flight: 4 of at most 4")
			return
		}
		writeJSON(w, http.StatusCreated, api.Instance{Name: req.Name})
	}
}

func TestCreateRetriesTooManyRequests(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	f := newFakeServer(t, map[string]http.HandlerFunc{"POST /v1/instances": busyThen(2, "1", &names, &mu)})
	c := f.client(t)
	var retries []Retry
	ctx := WithRetryObserver(context.Background(), func(r Retry) { retries = append(retries, r) })
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	inst, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: "web"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if inst.Name != "web" {
		t.Errorf("created %q, want web", inst.Name)
	}
	if len(retries) != 2 {
		t.Fatalf("observed %d retries, want 2: %+v", len(retries), retries)
	}
	for i, r := range retries {
		if r.Attempt != i+1 || r.Method != http.MethodPost || r.Path != "/v1/instances" {
			t.Errorf("retry %d = %+v", i, r)
		}
		// The pause is at least what the server asked, with at most half
		// of it again as jitter.
		if r.Wait < time.Second || r.Wait > 1500*time.Millisecond {
			t.Errorf("retry %d waits %s, want 1s to 1.5s", i, r.Wait)
		}
		if !errors.Is(r.Err, errdefs.ErrTooManyRequests) {
			t.Errorf("retry %d error %v is not TooManyRequests", i, r.Err)
		}
	}
	// The body goes again, whole, with every attempt.
	if len(names) != 3 || names[0] != "web" || names[1] != "web" || names[2] != "web" {
		t.Errorf("server saw names %q, want web three times", names)
	}
}

func TestRetryStopsBeforeTheDeadline(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	f := newFakeServer(t, map[string]http.HandlerFunc{"POST /v1/instances": busyThen(1000, "30", &names, &mu)})
	c := f.client(t)
	retried := 0
	ctx := WithRetryObserver(context.Background(), func(Retry) { retried++ })
	// A pause of 30 s would pass the deadline: the refusal comes back at
	// once rather than after the deadline.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.CreateInstance(ctx, api.CreateInstanceRequest{Name: "web"})
	if !errors.Is(err, errdefs.ErrTooManyRequests) {
		t.Fatalf("err = %v, want TooManyRequests", err)
	}
	ae, ok := errorsAsAPI(err)
	if !ok || ae.StatusCode != http.StatusTooManyRequests || ae.RetryAfter != 30*time.Second {
		t.Errorf("APIError = %+v, want status 429 and RetryAfter 30s", ae)
	}
	if retried != 0 || len(names) != 1 {
		t.Errorf("retried %d times, server saw %d requests; want 0 and 1", retried, len(names))
	}
	if ctx.Err() != nil {
		t.Error("the client waited for the deadline instead of giving up before it")
	}
}

func TestBusyRetryOff(t *testing.T) {
	var (
		mu    sync.Mutex
		names []string
	)
	f := newFakeServer(t, map[string]http.HandlerFunc{"POST /v1/instances": busyThen(1, "1", &names, &mu)})
	c, err := New(f.URL, testToken, WithBusyRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateInstance(context.Background(), api.CreateInstanceRequest{Name: "web"})
	if !errors.Is(err, errdefs.ErrTooManyRequests) || len(names) != 1 {
		t.Errorf("err = %v after %d requests, want TooManyRequests after 1", err, len(names))
	}
}

// Other errors are not retried: only a 429 says the request did nothing.
func TestOtherErrorsAreNotRetried(t *testing.T) {
	var n atomic.Int32
	f := newFakeServer(t, map[string]http.HandlerFunc{"POST /v1/instances": func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "Unavailable", "no host is connected")
	}})
	_, err := f.client(t).CreateInstance(context.Background(), api.CreateInstanceRequest{Name: "web"})
	if !errors.Is(err, errdefs.ErrUnavailable) || n.Load() != 1 {
		t.Errorf("err = %v after %d requests, want Unavailable after 1", err, n.Load())
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 0 ", 0},
		{"-4", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
