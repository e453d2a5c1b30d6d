package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/httpserver"
)

// testLimits are httpserver.DefaultLimits scaled down so that the tests wait
// seconds, not minutes.
var testLimits = httpserver.Limits{
	ReadHeaderTimeout: time.Second,
	BodyTimeout:       time.Second,
	StreamWindow:      time.Second,
	StreamMinBytes:    1 << 10,
	WriteTimeout:      2 * time.Second,
	IdleTimeout:       5 * time.Second,
	MaxHeaderBytes:    8 << 10,
}

// syncBuffer is a log sink the server writes to from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// served is the API of a testEnv behind httpserver.New on a real TCP
// listener, as kanga up serves it; log holds what net/http logged.
type served struct {
	addr string
	log  *syncBuffer
}

func serveWithLimits(t *testing.T, e *testEnv, l httpserver.Limits) served {
	t.Helper()
	log := &syncBuffer{}
	hs := httpserver.New(e.server.Handler(), l, slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return served{addr: ln.Addr().String(), log: log}
}

// trickle sends head, then the body one byte every interval, until the
// server closes the connection; it returns what the server answered and
// how long the connection lasted. It gives up after limit.
func trickle(addr, head string, interval, limit time.Duration) (string, time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head); err != nil {
		return "", 0, err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := c.Write([]byte(" ")); err != nil { // JSON whitespace, for ever
					return
				}
			}
		}
	}()
	_ = c.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return string(got), time.Since(start), fmt.Errorf("the connection was still open after %s", limit)
	}
	// A reset after the answer is a close too.
	return string(got), time.Since(start), nil
}

// TestSlowBodiesCut is finding 7: a handful of connections trickling a
// body at a byte a second are cut, those without a valid token at once,
// the others when BodyTimeout (or, for an import, the minimum rate) runs
// out; net/http logs no panic.
func TestSlowBodiesCut(t *testing.T) {
	e := newEnv(t, 0)
	s := serveWithLimits(t, e, testLimits)
	post := func(path, token string, size int) string {
		h := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: kanga\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, size)
		if token != "" {
			h += "Authorization: Bearer " + token + "\r\n"
		}
		return h + "\r\n"
	}
	tests := []struct {
		name, head string
		status     int    // of the answer before the close
		msg        string // in the answer
	}{
		{"no token", post("/v1/instances", "", 100000), 401, "missing bearer token"},
		{"wrong token", post("/v1/instances", "not-a-token", 100000), 401, "not valid"},
		{"no route", post("/v1/nope", "", 100000), 404, "no API endpoint"},
		{"create", post("/v1/instances", e.a.token, 100000), 400, "did not arrive within 1s"},
		{"pull", post("/v1/images/pull", e.a.token, 100000), 400, "did not arrive within 1s"},
		// The import's progress went out already: the error is the
		// stream's last line.
		{"import below the minimum rate", post("/v1/images/import", e.a.token, 10<<20), 200, "slower than 1024 bytes in 1s"},
	}
	var wg sync.WaitGroup
	for _, tt := range tests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, took, err := trickle(s.addr, tt.head, 100*time.Millisecond, 20*time.Second)
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				return
			}
			if !strings.HasPrefix(got, "HTTP/1.1 "+strconv.Itoa(tt.status)+" ") || !strings.Contains(got, tt.msg) {
				t.Errorf("%s: answered %q, want %d mentioning %q", tt.name, got, tt.status, tt.msg)
			}
			t.Logf("%s: cut after %s", tt.name, took.Round(10*time.Millisecond))
		}()
	}
	wg.Wait()
	if strings.Contains(s.log.String(), "panic") {
		t.Errorf("net/http logged a panic:\n%s", s.log)
	}
}

// TestSlowHeadersAndLargeHeaders: headers are cut by ReadHeaderTimeout and
// limited by MaxHeaderBytes.
func TestSlowHeadersAndLargeHeaders(t *testing.T) {
	e := newEnv(t, 0)
	s := serveWithLimits(t, e, testLimits)
	if _, _, err := trickle(s.addr, "GET /v1/version HTTP/1.1\r\nHost: kanga\r\nX-Slow: ", 100*time.Millisecond, 20*time.Second); err != nil {
		t.Errorf("slow headers: %v", err)
	}
	big := "GET /v1/version HTTP/1.1\r\nHost: kanga\r\nX-Big: " + strings.Repeat("b", 2*testLimits.MaxHeaderBytes) + "\r\n\r\n"
	got, _, err := trickle(s.addr, big, time.Hour, 20*time.Second)
	if err != nil || !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Errorf("large headers: %q, %v; want 431", got, err)
	}
}

// TestStreamsOutlastBodyTimeout: what may legitimately take long is not
// cut: an import that keeps a decent rate for several BodyTimeouts, and a
// handler that works long after it read its body.
func TestStreamsOutlastBodyTimeout(t *testing.T) {
	e := newEnv(t, 0)
	s := serveWithLimits(t, e, testLimits)

	// 2 KiB every 100 ms for 3 s: 20 KiB/s, well above the minimum rate.
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte("a"), 2<<10)
		for range 30 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	req, err := http.NewRequestWithContext(t.Context(), "POST", "http://"+s.addr+"/v1/images/import", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), `"done":true`) {
		t.Errorf("import at 20 KiB/s for 3 s: %d %q %v, want done", resp.StatusCode, body, err)
	}

	// A handler that answers long after it read its body keeps the
	// connection (the deadline is lifted at the body's end).
	slow := httpserver.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(3 * testLimits.BodyTimeout)
		if r.Context().Err() != nil {
			return
		}
		fmt.Fprintf(w, "read %d", len(b))
	}), testLimits, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = slow.Serve(ln) }()
	defer slow.Close()
	resp, err = http.Post("http://"+ln.Addr().String()+"/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "read 5" {
		t.Errorf("slow handler answered %q, want %q", body, "read 5")
	}
}

// TestOversizedBodies is finding 10: a JSON body over 1 MiB is a 413
// that says so, on every JSON endpoint, not "not valid JSON".
func TestOversizedBodies(t *testing.T) {
	e, admin := adminEnv(t)
	huge := strings.Repeat("x", 10<<20)
	bodies := map[string]string{
		"/v1/instances":      `{"name":"big","spec":{"containers":[{"image":"kanga.test/busybox","env":[{"name":"A","value":"` + huge + `"}]}]}}`,
		"/v1/tenants":        `{"name":"` + huge + `"}`,
		"/v1/images/pull":    `{"ref":"` + huge + `"}`,
		"/v1/images/prewarm": `{"ref":"` + huge + `"}`,
	}
	for path, body := range bodies {
		t.Run(path, func(t *testing.T) {
			r := e.do(t, "POST", path, admin, body)
			wantError(t, r, http.StatusRequestEntityTooLarge, "TooLarge", "larger than 1048576 bytes")
		})
	}
	// The SDK sees the class.
	_, err := e.client(e.a).CreateInstance(t.Context(), api.CreateInstanceRequest{Name: "big", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
		Image: imgBusybox, Env: []api.EnvVar{{Name: "A", Value: huge}},
	}}}})
	if !errors.Is(err, errdefs.ErrTooLarge) {
		t.Errorf("SDK CreateInstance with a 10 MB env value = %v, want ErrTooLarge", err)
	}
}

// TestImportFailureKeepsConnection is finding 8 at the HTTP level: an
// import that fails after reading a part of its body, on one kept-alive
// connection, several times over: every answer is a clean error and
// net/http logs no "invalid concurrent Body.Read call" panic.
func TestImportFailureKeepsConnection(t *testing.T) {
	e := newEnv(t, 0)
	s := serveWithLimits(t, e, httpserver.DefaultLimits)
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, size := range []int{100 << 10, 10 << 10, 300 << 10} {
		body := partialReadMarker + strings.Repeat("g", size)
		fmt.Fprintf(c, "POST /v1/images/import HTTP/1.1\r\nHost: kanga\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", e.a.token, len(body), body)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("import of %d bytes of garbage: %v", size, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "not an image archive") {
			t.Errorf("import of %d bytes of garbage: %d %s, want 400", size, resp.StatusCode, b)
		}
	}
	time.Sleep(100 * time.Millisecond) // the server's wait for the next request
	if strings.Contains(s.log.String(), "panic") {
		t.Errorf("net/http logged a panic:\n%s", s.log)
	}
}

// quietLogsHost writes a line, stays quiet for longer than the write
// timeout, and writes another: a logs -f of an instance that prints
// seldom.
type quietLogsHost struct {
	*fakeHost
	quiet time.Duration
}

func (h quietLogsHost) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	if _, err := io.WriteString(w, "first\n"); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(h.quiet):
	}
	_, err := io.WriteString(w, "second\n")
	return err
}

// TestQuietStreamOverHTTP2: the write timeout bounds each write, not the
// quiet between writes, also on HTTP/2 (the API over TLS), where a stream
// whose deadline passes is reset whether it writes or not.
func TestQuietStreamOverHTTP2(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "quiet")
	srv := New(e.store, Options{Hosts: fakeDirectory{quietLogsHost{fakeHost: newFakeHost(), quiet: 2 * testLimits.WriteTimeout}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ts := httptest.NewUnstartedServer(httpserver.LimitBodies(srv.Handler(), testLimits))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	req, err := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/instances/quiet/logs?follow=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.a.token)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "first\nsecond\n" {
		t.Errorf("logs -f quiet for twice the write timeout = %q, %v; want both lines", body, err)
	}
}
