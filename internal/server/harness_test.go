package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
	"github.com/kanga-run/kanga/internal/controlplane"
	"github.com/kanga-run/kanga/internal/store"
	"github.com/kanga-run/kanga/internal/tenant"
)

// The handler tests run against the real store on one embedded etcd per
// test binary; every test works in tenants of its own, so tests do not see
// each other's instances.

var (
	storeOnce   sync.Once
	storeDir    string
	sharedStore *store.Store
	storeErr    error
	// stopControlPlane ends the scheduler loop and the fake host's lease.
	stopControlPlane = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopControlPlane()
	if sharedStore != nil {
		_ = sharedStore.Close()
	}
	if storeDir != "" {
		_ = os.RemoveAll(storeDir)
	}
	os.Exit(code)
}

// testStore returns the shared store, starting it on first use.
func testStore(t testing.TB) *store.Store {
	t.Helper()
	storeOnce.Do(func() {
		storeDir, storeErr = os.MkdirTemp("", "kanga-server-test-")
		if storeErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sharedStore, storeErr = store.Open(ctx, store.Config{DataDir: storeDir})
		if storeErr != nil {
			return
		}
		stopControlPlane, storeErr = startControlPlane(ctx, sharedStore)
	})
	if storeErr != nil {
		t.Fatalf("open store: %v", storeErr)
	}
	return sharedStore
}

// startControlPlane registers the fake host (kept Ready by a lease) and
// runs the scheduler loop that places instances, as kanga up does.
func startControlPlane(ctx context.Context, st *store.Store) (func(), error) {
	fh := newFakeHost()
	// The registered capacity is larger than what Capacity reports (the
	// largest spec the API accepts): instances of every test pile up on
	// this one host, and none of them runs.
	bg, cancel := context.WithCancel(context.Background())
	held, err := st.HoldHost(bg, api.Host{
		Name:           fh.Name(),
		Capacity:       api.HostCapacity{CPUs: 64, MemoryBytes: 256 << 30, Pods: 10000},
		RuntimeClasses: fh.RuntimeClasses(),
	}, 5*time.Second, store.HoldOptions{})
	if err != nil {
		cancel()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); <-held }()
	cp := controlplane.New(controlplane.Config{Store: st, ID: "server-test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go func() {
		defer wg.Done()
		_ = cp.Run(bg)
	}()
	return func() { cancel(); wg.Wait() }, nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testTenant is a tenant with a token; ctx carries the tenant, for
// reaching past the API into the store as the agent would.
type testTenant struct {
	name  string
	token string
	ctx   context.Context
}

// testEnv is a server on a fake host and the real store, with two tenants.
type testEnv struct {
	t      *testing.T
	store  *store.Store
	host   *fakeHost
	server *Server
	url    string
	// hc validates every response against api/openapi.yaml.
	hc   *http.Client
	a, b testTenant
}

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newEnv starts a server whose state-change waits give up after
// waitTimeout (0: the server's default).
func newEnv(t *testing.T, waitTimeout time.Duration) *testEnv {
	t.Helper()
	return newEnvWith(t, waitTimeout, Options{})
}

// newEnvWith is newEnv with opts (logger, version and clock are the
// harness's).
func newEnvWith(t *testing.T, waitTimeout time.Duration, opts Options) *testEnv {
	t.Helper()
	st := testStore(t)
	host := newFakeHost()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.Version = "v0.0.0-test"
	opts.Now = func() time.Time { return testNow }
	opts.Hosts = fakeDirectory{host}
	srv := New(st, opts)
	// Set before the server starts: the handlers read it concurrently.
	if waitTimeout > 0 {
		srv.waitTimeout = waitTimeout
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	e := &testEnv{t: t, store: st, host: host, server: srv, url: hs.URL}
	e.hc = &http.Client{Transport: &validatingTransport{base: hs.Client().Transport, v: testValidator(t)}}
	id := randomHex(t, 4)
	for _, tt := range []struct {
		p    *testTenant
		name string
	}{{&e.a, "ta-" + id}, {&e.b, "tb-" + id}} {
		tt.p.name = tt.name
		tt.p.token = "tok-" + tt.name + "-" + randomHex(t, 8)
		tt.p.ctx = tenant.WithName(context.Background(), tt.name)
		if err := st.PutToken(t.Context(), tt.p.token, tt.name); err != nil {
			t.Fatalf("PutToken: %v", err)
		}
	}
	return e
}

// client returns the SDK's client for a tenant, with responses validated.
func (e *testEnv) client(tn testTenant) *client.Client {
	e.t.Helper()
	c, err := client.New(e.url, tn.token, client.WithHTTPClient(e.hc))
	if err != nil {
		e.t.Fatalf("client.New: %v", err)
	}
	return c
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
	err    error // only from testEnv.send: the request failed
}

func (r response) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, r.body)
}

// do sends a request with the tenant's token (none when token is "").
// hdr holds extra headers as name, value pairs.
func (e *testEnv) do(t *testing.T, method, path, token, body string, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// decode decodes a JSON response body strictly into v.
func decode(t *testing.T, r response, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, r, err)
	}
}

// wantError checks an error response: its status, its code, and that its
// message contains every one of msgs.
func wantError(t *testing.T, r response, status int, code string, msgs ...string) {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var er api.ErrorResponse
	decode(t, r, &er)
	if er.Error.Code != code {
		t.Errorf("error code = %q, want %q; message %q", er.Error.Code, code, er.Error.Message)
	}
	for _, m := range msgs {
		if !strings.Contains(er.Error.Message, m) {
			t.Errorf("error message %q does not contain %q", er.Error.Message, m)
		}
	}
}

// wantStatus fails the test unless r has the given status.
func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
}

// createBody is the JSON of a create request for one busybox container.
func createBody(name string) string {
	return fmt.Sprintf(`{"name":%q,"spec":{"containers":[{"name":"main","image":%q}]}}`, name, imgBusybox)
}

// mustCreate creates an instance through the API.
func (e *testEnv) mustCreate(t *testing.T, tn testTenant, name string) api.Instance {
	t.Helper()
	r := e.do(t, "POST", "/v1/instances", tn.token, createBody(name))
	wantStatus(t, r, http.StatusCreated)
	var inst api.Instance
	decode(t, r, &inst)
	return inst
}

// setPhase does what the agent would: move the instance to phase.
func (e *testEnv) setPhase(t *testing.T, tn testTenant, name string, phase api.Phase) {
	t.Helper()
	if _, err := e.store.UpdateInstance(tn.ctx, name, func(in *api.Instance) error {
		in.Status.Phase = phase
		return nil
	}); err != nil {
		t.Fatalf("UpdateInstance(%s): %v", name, err)
	}
}

// stored returns the tenant's instance as stored.
func (e *testEnv) stored(t *testing.T, tn testTenant, name string) *api.Instance {
	t.Helper()
	inst, err := e.store.GetInstance(tn.ctx, name)
	if err != nil {
		t.Fatalf("store.GetInstance(%s): %v", name, err)
	}
	return inst
}

// storedNames lists the tenant's instance names, straight from the store.
func (e *testEnv) storedNames(t *testing.T, tn testTenant) []string {
	t.Helper()
	list, err := e.store.ListInstances(tn.ctx)
	if err != nil {
		t.Fatalf("store.ListInstances: %v", err)
	}
	names := []string{}
	for _, in := range list {
		names = append(names, in.Name)
	}
	return names
}

// --- OpenAPI response validation ---

var (
	validatorOnce sync.Once
	validatorVal  *responseValidator
	validatorErr  error
)

type responseValidator struct {
	doc    *openapi3.T
	router routers.Router
}

func testValidator(t *testing.T) *responseValidator {
	t.Helper()
	validatorOnce.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
		if err != nil {
			validatorErr = err
			return
		}
		// The document's only server is "/"; match paths as they are.
		doc.Servers = nil
		router, err := legacy.NewRouter(doc)
		if err != nil {
			validatorErr = err
			return
		}
		validatorVal = &responseValidator{doc: doc, router: router}
	})
	if validatorErr != nil {
		t.Fatalf("loading api/openapi.yaml for response validation: %v", validatorErr)
	}
	return validatorVal
}

// validatingTransport checks every response against api/openapi.yaml:
// its status must be documented for the operation and its body must match
// the documented schema. A mismatch becomes the request's error, so the
// test that made the request fails with it. It reads whole bodies, so it
// is not for streams that do not end.
type validatingTransport struct {
	base http.RoundTripper
	v    *responseValidator
}

func (vt *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := vt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := vt.v.validate(req, resp, body); err != nil {
		return nil, fmt.Errorf("%s %s: the %d response does not match api/openapi.yaml: %w\nbody: %s",
			req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
	return resp, nil
}

var errUnknownRoute = errors.New("no such route in the document")

// methodNotAllowed checks a 405: the document lacks the request's method
// on the path and has every method the Allow header names.
func (v *responseValidator) methodNotAllowed(req *http.Request, resp *http.Response, body []byte) error {
	allow := resp.Header.Get("Allow")
	if allow == "" {
		return fmt.Errorf("a 405 without an Allow header")
	}
	if _, _, err := v.router.FindRoute(req); err == nil {
		return fmt.Errorf("a 405 for an operation the document has")
	}
	for _, m := range strings.Split(allow, ", ") {
		if m == http.MethodHead {
			continue
		}
		other := req.Clone(req.Context())
		other.Method = m
		if _, _, err := v.router.FindRoute(other); err != nil {
			return fmt.Errorf("Allow names %s, which the document lacks on this path: %v", m, err)
		}
	}
	return v.visit("ErrorResponse", body)
}

// isRouteError compares by reason: the router returns new RouteErrors
// with the reasons of its sentinels.
func isRouteError(err, sentinel error) bool {
	var re *routers.RouteError
	return errors.As(err, &re) && re.Reason == sentinel.Error()
}

func (v *responseValidator) validate(req *http.Request, resp *http.Response, body []byte) error {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if req.URL.RawPath != "" {
		// A path parameter with an escaped '/' (an image reference) is one
		// segment, as the server's mux sees it; the router matches Path.
		req = req.Clone(req.Context())
		req.URL.Path = req.URL.RawPath
	}
	if resp.StatusCode == http.StatusMethodNotAllowed {
		return v.methodNotAllowed(req, resp, body)
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		// Requests to paths the API does not have must still get a
		// documented error body; a wrong method on a path it has, a 405
		// that says which methods it allows.
		switch {
		case isRouteError(err, routers.ErrMethodNotAllowed):
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
				return fmt.Errorf("a wrong method on a documented path got %d with Allow %q, want 405 with the allowed methods", resp.StatusCode, resp.Header.Get("Allow"))
			}
		case resp.StatusCode != http.StatusNotFound:
			return fmt.Errorf("%w, yet the status is not 404: %v", errUnknownRoute, err)
		}
		return v.visit("ErrorResponse", body)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
			// The document serves itself as a string; kin-openapi would
			// parse it as YAML. NDJSON is checked line by line below.
			ExcludeResponseBody: ct == "application/yaml" || ct == "application/x-ndjson",
		},
	}
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return err
	}
	if ct == "application/x-ndjson" && resp.StatusCode == http.StatusOK {
		// Each line is a document of the schema the operation names for
		// its NDJSON (Progress for image transfers).
		schema := "Progress"
		if r := route.Operation.Responses.Value("200"); r != nil && r.Value != nil {
			if mt := r.Value.Content.Get(ct); mt != nil && mt.Schema != nil && mt.Schema.Ref != "" {
				schema = mt.Schema.Ref[strings.LastIndex(mt.Schema.Ref, "/")+1:]
			}
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			if err := v.visit(schema, sc.Bytes()); err != nil {
				return fmt.Errorf("progress line %s: %w", sc.Bytes(), err)
			}
		}
	}
	return nil
}

// visit validates a JSON document against a component schema.
func (v *responseValidator) visit(schema string, doc []byte) error {
	var x any
	if err := json.Unmarshal(doc, &x); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return v.doc.Components.Schemas[schema].Value.VisitJSON(x, openapi3.MultiErrors())
}

// TestResponseValidator checks that the validating transport has teeth:
// responses that break the document fail the request.
func TestResponseValidator(t *testing.T) {
	v := testValidator(t)
	tests := []struct {
		name, method, path string
		status             int
		contentType, body  string
		ok                 bool
	}{
		{"valid", "GET", "/v1/version", 200, "application/json", `{"version":"v","tenant":"t"}`, true},
		{"missing required property", "GET", "/v1/version", 200, "application/json", `{"version":"v"}`, false},
		{"unknown property", "GET", "/v1/version", 200, "application/json", `{"version":"v","tenant":"t","x":1}`, false},
		{"undocumented status", "GET", "/v1/version", 418, "application/json", `{"error":{"code":"Internal","message":"m"}}`, false},
		{"null list", "GET", "/v1/instances", 200, "application/json", `{"items":null}`, false},
		{"unknown error code", "GET", "/v1/instances/x", 404, "application/json", `{"error":{"code":"Gone","message":"m"}}`, false},
		{"undocumented content type", "GET", "/v1/instances/x", 200, "text/html", `<html>`, false},
		{"unknown route answered", "GET", "/v1/nope", 200, "application/json", `{}`, false},
		{"unknown route, error body", "GET", "/v1/nope", 404, "application/json", `{"error":{"code":"NotFound","message":"m"}}`, true},
		{"wrong method, no Allow", "PUT", "/v1/instances", 405, "application/json", `{"error":{"code":"MethodNotAllowed","message":"m"}}`, false},
		{"wrong method, 404", "PUT", "/v1/instances", 404, "application/json", `{"error":{"code":"NotFound","message":"m"}}`, false},
		{"bad progress line", "POST", "/v1/images/pull", 200, "application/x-ndjson", "{\"status\":\"s\"}\n{\"done\":\"yes\"}\n", false},
		{"good progress lines", "POST", "/v1/images/pull", 200, "application/x-ndjson", "{\"status\":\"s\"}\n{\"done\":true}\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer hs.Close()
			hc := &http.Client{Transport: &validatingTransport{base: hs.Client().Transport, v: v}}
			req, err := http.NewRequestWithContext(t.Context(), tt.method, hs.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("validation error = %v, want ok = %v", err, tt.ok)
			}
		})
	}
}
