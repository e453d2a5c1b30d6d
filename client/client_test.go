package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

const testToken = "s3cret"

// fakeServer is an httptest server whose routes the test supplies; it
// rejects requests without the test token, as the real server does.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD PATH?QUERY"
}

func newFakeServer(t *testing.T, routes map[string]http.HandlerFunc) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		if r.URL.Path != "/v1/healthz" && r.Header.Get("Authorization") != "Bearer "+testToken {
			writeError(w, http.StatusUnauthorized, "Unauthenticated", "missing or wrong token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(f.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fakeServer) lastRequest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[len(f.requests)-1]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorResponse{Error: api.Error{Code: code, Message: msg}})
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		status   int
		body     string // raw body; JSON error when empty
		code     string
		msg      string
		sentinel error
	}{
		{status: 404, code: "NotFound", msg: `instance "web" not found`, sentinel: errdefs.ErrNotFound},
		{status: 409, code: "AlreadyExists", msg: `instance "web" already exists`, sentinel: errdefs.ErrAlreadyExists},
		{status: 409, code: "Conflict", msg: "instance is running; stop it or use force", sentinel: errdefs.ErrConflict},
		{status: 409, code: "FailedPrecondition", msg: "not running", sentinel: errdefs.ErrFailedPrecondition},
		{status: 400, code: "InvalidArgument", msg: "memory: bad quantity", sentinel: errdefs.ErrInvalidArgument},
		{status: 401, code: "Unauthenticated", msg: "bad token", sentinel: errdefs.ErrUnauthenticated},
		{status: 403, code: "PermissionDenied", msg: "quota", sentinel: errdefs.ErrPermissionDenied},
		{status: 503, code: "Unavailable", msg: "no hosts", sentinel: errdefs.ErrUnavailable},
		{status: 502, body: "<html>bad gateway</html>", sentinel: errdefs.ErrUnavailable},
		{status: 404, body: "404 page not found", sentinel: errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.code+tt.body, func(t *testing.T) {
			f := newFakeServer(t, map[string]http.HandlerFunc{
				"GET /v1/instances/{name}": func(w http.ResponseWriter, r *http.Request) {
					if tt.body != "" {
						w.WriteHeader(tt.status)
						io.WriteString(w, tt.body)
						return
					}
					writeError(w, tt.status, tt.code, tt.msg)
				},
			})
			_, err := f.client(t).GetInstance(context.Background(), "web")
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("GetInstance error %v is not %v", err, tt.sentinel)
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("error %#v is not an *APIError with status %d", err, tt.status)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("error text %q, want the server's message %q", err.Error(), tt.msg)
			}
			if tt.body != "" && !strings.Contains(err.Error(), tt.body) {
				t.Errorf("error text %q does not quote the body %q", err.Error(), tt.body)
			}
		})
	}
}

func TestUnknownCodeIsNotClassified(t *testing.T) {
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /v1/version": func(w http.ResponseWriter, r *http.Request) {
			writeError(w, 500, "Internal", "boom")
		},
	})
	_, err := f.client(t).Version(context.Background())
	if err == nil || err.Error() != "boom" {
		t.Fatalf("err = %v, want boom", err)
	}
	for _, s := range []error{errdefs.ErrNotFound, errdefs.ErrUnavailable, errdefs.ErrInvalidArgument} {
		if errors.Is(err, s) {
			t.Errorf("internal error matches %v", s)
		}
	}
}

func TestWrongTokenIsUnauthenticated(t *testing.T) {
	f := newFakeServer(t, nil)
	c, err := New(f.URL, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListInstances(context.Background()); !errors.Is(err, errdefs.ErrUnauthenticated) {
		t.Fatalf("err = %v, want Unauthenticated", err)
	}
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := New(addr, testToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Version(context.Background())
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want Unavailable naming %s", err, addr)
	}
	if _, err := c.Exec(context.Background(), "x", ExecOptions{Cmd: []string{"true"}}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("exec err = %v, want Unavailable", err)
	}
}

func TestNewRejectsBadAddresses(t *testing.T) {
	for _, addr := range []string{"", "ftp://host", "unix://", "http://"} {
		if _, err := New(addr, "t"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%q) err = %v, want InvalidArgument", addr, err)
		}
	}
}

func TestInstanceCalls(t *testing.T) {
	inst := api.Instance{Name: "web", Tenant: "t1", Status: api.InstanceStatus{Phase: api.PhaseRunning}}
	var created api.CreateInstanceRequest
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			if err := json.NewDecoder(r.Body).Decode(&created); err != nil {
				writeError(w, 400, "InvalidArgument", err.Error())
				return
			}
			writeJSON(w, http.StatusCreated, inst)
		},
		"GET /v1/instances": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.InstanceList{Items: []api.Instance{inst, {Name: "db"}}})
		},
		"GET /v1/instances/{name}": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.Instance{Name: r.PathValue("name")})
		},
		"DELETE /v1/instances/{name}": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		},
		"POST /v1/instances/{name}/stop": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, inst)
		},
		"GET /v1/version": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.Version{Version: "1.2.3", Tenant: "t1"})
		},
	})
	c := f.client(t)
	ctx := context.Background()

	req := api.CreateInstanceRequest{Name: "web", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{Name: "busybox", Image: "busybox"}}}}
	got, err := c.CreateInstance(ctx, req)
	if err != nil || got.Name != "web" {
		t.Fatalf("CreateInstance = %+v, %v", got, err)
	}
	if !reflect.DeepEqual(created, req) {
		t.Errorf("server received %+v, want %+v", created, req)
	}

	list, err := c.ListInstances(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListInstances = %+v, %v", list, err)
	}

	// Names are path-escaped.
	got, err = c.GetInstance(ctx, "a b")
	if err != nil || got.Name != "a b" {
		t.Fatalf("GetInstance = %+v, %v", got, err)
	}

	if err := c.DeleteInstance(ctx, "web", true); err != nil {
		t.Fatal(err)
	}
	if r := f.lastRequest(); r != "DELETE /v1/instances/web?force=true" {
		t.Errorf("request %q", r)
	}
	if err := c.DeleteInstance(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if r := f.lastRequest(); r != "DELETE /v1/instances/web" {
		t.Errorf("request %q", r)
	}

	if _, err := c.StopInstance(ctx, "web", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if r := f.lastRequest(); r != "POST /v1/instances/web/stop?timeout=2" {
		t.Errorf("request %q", r)
	}
	if _, err := c.StopInstance(ctx, "web", -1); err != nil {
		t.Fatal(err)
	}
	if r := f.lastRequest(); r != "POST /v1/instances/web/stop" {
		t.Errorf("request %q", r)
	}

	v, err := c.Version(ctx)
	if err != nil || v.Version != "1.2.3" || v.Tenant != "t1" {
		t.Fatalf("Version = %+v, %v", v, err)
	}
}

func TestWaitRetriesAfterServerTimeout(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /v1/instances/{name}/wait": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if r.URL.Query().Get("condition") != "terminal" {
				writeError(w, 400, "InvalidArgument", "bad condition")
				return
			}
			if n < 2 {
				writeError(w, http.StatusGatewayTimeout, "DeadlineExceeded", "still waiting")
				return
			}
			writeJSON(w, 200, api.Instance{Name: "web", Status: api.InstanceStatus{Phase: api.PhaseSucceeded}})
		},
	})
	inst, err := f.client(t).WaitInstance(context.Background(), "web", WaitTerminal)
	if err != nil || inst.Status.Phase != api.PhaseSucceeded {
		t.Fatalf("WaitInstance = %+v, %v", inst, err)
	}
	if calls != 2 {
		t.Errorf("server saw %d waits, want 2", calls)
	}
}

func TestLogs(t *testing.T) {
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"GET /v1/instances/{name}/logs": func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			if q.Get("follow") != "true" || q.Get("container") != "app" {
				writeError(w, 400, "InvalidArgument", "query "+r.URL.RawQuery)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "line 1\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, "line 2\n")
		},
	})
	rc, err := f.client(t).Logs(context.Background(), "web", LogsOptions{Follow: true, Container: "app"})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "line 1\nline 2\n" {
		t.Fatalf("logs = %q, %v", b, err)
	}
}

// fakeExec upgrades the connection, reads client frames until stdin closed
// and (if wantResize) a resize arrived, then echoes stdin on stdout, reports
// the received data on stderr and exits with code.
func fakeExec(t *testing.T, wantResize bool, code int, got *execSeen) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != api.StreamProtocol || !strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
			writeError(w, 400, "InvalidArgument", "not an upgrade")
			return
		}
		got.query = r.URL.Query()
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.StreamProtocol + "\r\n\r\n")
		rw.Flush()
		var stdin []byte
		closed, resized := false, !wantResize
		for !closed || !resized {
			stream, p, err := api.ReadFrame(rw.Reader)
			if err != nil {
				t.Errorf("server reading frame: %v", err)
				return
			}
			switch stream {
			case api.StreamStdin:
				stdin = append(stdin, p...)
			case api.StreamStdinClose:
				closed = true
			case api.StreamResize:
				if err := json.Unmarshal(p, &got.size); err != nil {
					t.Error(err)
				}
				resized = true
			}
		}
		fw := api.NewFrameWriter(rw)
		fw.WriteFrame(api.StreamStdout, stdin)
		fw.WriteFrame(api.StreamStderr, []byte("err output"))
		fw.WriteJSON(api.StreamExit, api.ExitStatus{ExitCode: code})
		rw.Flush()
	}
}

type execSeen struct {
	query map[string][]string
	size  api.TerminalSize
}

func TestExec(t *testing.T) {
	var seen execSeen
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/instances/{name}/exec": fakeExec(t, true, 3, &seen),
	})
	resize := make(chan api.TerminalSize, 1)
	resize <- api.TerminalSize{Width: 120, Height: 40}
	var stdout, stderr strings.Builder
	code, err := f.client(t).Exec(context.Background(), "web", ExecOptions{
		Container: "app",
		Cmd:       []string{"sh", "-c", "cat; exit 3"},
		Env:       []string{"A=1", "B=2"},
		WorkDir:   "/tmp",
		TTY:       true,
		Stdin:     strings.NewReader("hello stdin"),
		Stdout:    &stdout,
		Stderr:    &stderr,
		Resize:    resize,
	})
	if err != nil || code != 3 {
		t.Fatalf("Exec = %d, %v; want 3, nil", code, err)
	}
	if stdout.String() != "hello stdin" || stderr.String() != "err output" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	wantQuery := map[string][]string{
		"container": {"app"}, "cmd": {"sh", "-c", "cat; exit 3"}, "env": {"A=1", "B=2"},
		"workdir": {"/tmp"}, "tty": {"true"}, "stdin": {"true"},
	}
	if !reflect.DeepEqual(seen.query, wantQuery) {
		t.Errorf("query %v, want %v", seen.query, wantQuery)
	}
	if seen.size != (api.TerminalSize{Width: 120, Height: 40}) {
		t.Errorf("resize %+v", seen.size)
	}
}

func TestExecNilStdinClosesAtOnce(t *testing.T) {
	var seen execSeen
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/instances/{name}/exec": fakeExec(t, false, 0, &seen),
	})
	code, err := f.client(t).Exec(context.Background(), "web", ExecOptions{Cmd: []string{"true"}})
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
}

func TestExecErrors(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		sentinel error
		msg      string
	}{
		{
			name: "json error instead of upgrade",
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeError(w, 409, "FailedPrecondition", "instance web is not running")
			},
			sentinel: errdefs.ErrFailedPrecondition,
			msg:      "instance web is not running",
		},
		{
			name: "error frame",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, rw, _ := w.(http.Hijacker).Hijack()
				defer conn.Close()
				rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.StreamProtocol + "\r\n\r\n")
				api.NewFrameWriter(rw).WriteJSON(api.StreamError, api.Error{Code: "NotFound", Message: `executable "nope" not found`})
				rw.Flush()
			},
			sentinel: errdefs.ErrNotFound,
			msg:      `executable "nope" not found`,
		},
		{
			name: "connection closed without exit",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, rw, _ := w.(http.Hijacker).Hijack()
				rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.StreamProtocol + "\r\n\r\n")
				api.NewFrameWriter(rw).WriteFrame(api.StreamStdout, []byte("partial"))
				rw.Flush()
				conn.Close()
			},
			sentinel: errdefs.ErrUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t, map[string]http.HandlerFunc{"POST /v1/instances/{name}/exec": tt.handler})
			code, err := f.client(t).Exec(context.Background(), "web", ExecOptions{Cmd: []string{"nope"}})
			if code != -1 || !errors.Is(err, tt.sentinel) {
				t.Fatalf("Exec = %d, %v; want -1 and %v", code, err, tt.sentinel)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("error %q, want %q", err.Error(), tt.msg)
			}
		})
	}
	if _, err := (&Client{}).Exec(context.Background(), "web", ExecOptions{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Exec without command: %v", err)
	}
}

func TestExecCancel(t *testing.T) {
	release := make(chan struct{})
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/instances/{name}/exec": func(w http.ResponseWriter, r *http.Request) {
			conn, rw, _ := w.(http.Hijacker).Hijack()
			defer conn.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.StreamProtocol + "\r\n\r\n")
			api.NewFrameWriter(rw).WriteFrame(api.StreamStdout, []byte("started"))
			rw.Flush()
			<-release // never sends an exit status
		},
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	out := &notifyWriter{wrote: make(chan struct{}, 1)}
	go func() { <-out.wrote; cancel() }()
	_, err := f.client(t).Exec(ctx, "web", ExecOptions{Cmd: []string{"sleep", "inf"}, Stdout: out})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

type notifyWriter struct{ wrote chan struct{} }

func (w *notifyWriter) Write(p []byte) (int, error) {
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func TestImportImage(t *testing.T) {
	archive := strings.Repeat("x", 4096)
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/images/import": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if string(b) != archive || r.ContentLength != int64(len(archive)) || r.Header.Get("Content-Type") != "application/x-tar" {
				writeError(w, 400, "InvalidArgument", "bad upload")
				return
			}
			enc := json.NewEncoder(w)
			enc.Encode(api.Progress{Status: "unpacking", Current: 1, Total: 2})
			enc.Encode(api.Progress{Done: true, Images: []api.Image{{Name: "busybox:latest", Digest: "sha256:abc"}}})
		},
	})
	var seen []api.Progress
	images, err := f.client(t).ImportImage(context.Background(), strings.NewReader(archive), int64(len(archive)), func(p api.Progress) {
		seen = append(seen, p)
	})
	if err != nil || len(images) != 1 || images[0].Name != "busybox:latest" {
		t.Fatalf("ImportImage = %+v, %v", images, err)
	}
	if len(seen) != 2 || seen[0].Status != "unpacking" || !seen[1].Done {
		t.Errorf("progress %+v", seen)
	}
}

func TestProgressStreamEndings(t *testing.T) {
	tests := []struct {
		name     string
		lines    []api.Progress
		sentinel error
		msg      string
	}{
		{
			name:     "error line",
			lines:    []api.Progress{{Status: "resolving"}, {Error: &api.Error{Code: "NotFound", Message: "registry: manifest unknown"}}},
			sentinel: errdefs.ErrNotFound,
			msg:      "registry: manifest unknown",
		},
		{
			name:     "truncated",
			lines:    []api.Progress{{Status: "resolving"}},
			sentinel: errdefs.ErrUnavailable,
		},
		{
			name:     "done without image",
			lines:    []api.Progress{{Done: true}},
			sentinel: errdefs.ErrUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t, map[string]http.HandlerFunc{
				"POST /v1/images/pull": func(w http.ResponseWriter, r *http.Request) {
					var pr api.PullRequest
					json.NewDecoder(r.Body).Decode(&pr)
					if pr.Ref != "127.0.0.1:5000/busybox:1" {
						writeError(w, 400, "InvalidArgument", "ref "+pr.Ref)
						return
					}
					for _, l := range tt.lines {
						json.NewEncoder(w).Encode(l)
					}
				},
			})
			_, err := f.client(t).PullImage(context.Background(), "127.0.0.1:5000/busybox:1", nil)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want %v", err, tt.sentinel)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("error %q, want %q", err.Error(), tt.msg)
			}
		})
	}
}

func TestPullImage(t *testing.T) {
	f := newFakeServer(t, map[string]http.HandlerFunc{
		"POST /v1/images/pull": func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(api.Progress{Done: true, Images: []api.Image{{Name: "busybox:1", Size: 10}}})
		},
		"GET /v1/images": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.ImageList{Items: []api.Image{{Name: "busybox:1"}}})
		},
	})
	c := f.client(t)
	img, err := c.PullImage(context.Background(), "busybox:1", nil)
	if err != nil || img.Name != "busybox:1" {
		t.Fatalf("PullImage = %+v, %v", img, err)
	}
	list, err := c.ListImages(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("ListImages = %+v, %v", list, err)
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "kanga.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var seen execSeen
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Version{Version: "v-unix"})
	})
	mux.HandleFunc("POST /v1/instances/{name}/exec", fakeExec(t, false, 7, &seen))
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	defer srv.Close()

	c, err := New("unix://"+sock, testToken)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Version(context.Background())
	if err != nil || v.Version != "v-unix" {
		t.Fatalf("Version over unix socket = %+v, %v", v, err)
	}
	code, err := c.Exec(context.Background(), "web", ExecOptions{Cmd: []string{"x"}})
	if err != nil || code != 7 {
		t.Fatalf("Exec over unix socket = %d, %v", code, err)
	}
}

func TestConfigFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub", ".kanga")
	path := filepath.Join(dir, "config.json")

	if _, err := LoadConfig(path); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("LoadConfig of a missing file: %v", err)
	}
	want := Config{Addr: "http://127.0.0.1:9999", Token: "tok"}
	if err := WriteConfig(path, want); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, dir: 0o700 | os.ModeDir} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s has mode %v, want %v", p, st.Mode(), mode)
		}
	}
	got, err := LoadConfig(path)
	if err != nil || got != want {
		t.Fatalf("LoadConfig = %+v, %v", got, err)
	}

	os.WriteFile(path, []byte("{not json"), 0o600)
	if _, err := LoadConfig(path); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("LoadConfig of bad JSON: %v", err)
	}
}

func TestResolveConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.json")
	if err := WriteConfig(file, Config{Addr: "http://file:1", Token: "filetok"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		path string
		want Config
	}{
		{name: "file from KANGA_CONFIG", env: map[string]string{EnvConfig: file}, want: Config{Addr: "http://file:1", Token: "filetok"}},
		{name: "explicit path wins over KANGA_CONFIG", env: map[string]string{EnvConfig: "/nonexistent"}, path: file, want: Config{Addr: "http://file:1", Token: "filetok"}},
		{name: "env overrides file", env: map[string]string{EnvConfig: file, EnvAddr: "http://env:2", EnvToken: "envtok"}, want: Config{Addr: "http://env:2", Token: "envtok"}},
		{name: "missing file gives default addr", env: map[string]string{EnvConfig: filepath.Join(dir, "none.json")}, want: Config{Addr: DefaultAddr}},
		{name: "home default", env: map[string]string{"HOME": dir, EnvToken: "t"}, want: Config{Addr: DefaultAddr, Token: "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{EnvConfig, EnvAddr, EnvToken} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := ResolveConfig(tt.path)
			if err != nil || got != tt.want {
				t.Fatalf("ResolveConfig = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}

	t.Run("home config", func(t *testing.T) {
		home := t.TempDir()
		t.Setenv("HOME", home)
		t.Setenv(EnvConfig, "")
		t.Setenv(EnvAddr, "")
		t.Setenv(EnvToken, "")
		p, err := DefaultConfigPath()
		if err != nil || p != filepath.Join(home, ".kanga", "config.json") {
			t.Fatalf("DefaultConfigPath = %q, %v", p, err)
		}
		if err := WriteConfig(p, Config{Addr: "unix:///run/k.sock", Token: "h"}); err != nil {
			t.Fatal(err)
		}
		c, err := FromEnv()
		if err != nil || c.Addr() != "unix:///run/k.sock" || c.token != "h" {
			t.Fatalf("FromEnv = %+v, %v", c, err)
		}
	})
}

func TestConfigOptions(t *testing.T) {
	if opts, err := (Config{Addr: "http://127.0.0.1:1"}).Options(); err != nil || len(opts) != 0 {
		t.Fatalf("no CA: %d options, %v; want none", len(opts), err)
	}
	_, err := (Config{CACert: "not a certificate"}).Options()
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "caCert") {
		t.Fatalf("bad CA: %v, want InvalidArgument naming caCert", err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"v-test"}`))
	}))
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	opts, err := (Config{CACert: ca}).Options()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, "t", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Version(context.Background()); err != nil || v.Version != "v-test" {
		t.Fatalf("version through the config's CA: %+v, %v", v, err)
	}
}
