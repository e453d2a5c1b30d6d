package server

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/images/archive"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/agent/image"
	"github.com/kanga-run/kanga/internal/httpserver"
	"github.com/kanga-run/kanga/internal/store"
)

// The fuzz targets run their seed corpus (below and in testdata/fuzz/) in
// every `go test`; `go test -fuzz FuzzX -fuzztime 5m ./internal/server/`
// explores further, and what it finds goes into testdata/fuzz/FuzzX as a
// regression input. They check that nothing a client sends crashes the
// server or gets a 500 (the host and the store are healthy), and that
// every answer has the documented shape.

// archiveHost is the fake host with a real archive reader: the image
// service's archive filter and containerd's own importer (the code kanga's
// image service runs) into a content store on disk, so that the fuzzer
// feeds tar and OCI parsing, not a stub.
type archiveHost struct {
	*fakeHost
	store content.Store
}

func (h *archiveHost) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	progress(api.Progress{Status: "reading archive"})
	safe := image.SafeArchive(r)
	defer safe.Close()
	desc, err := archive.ImportIndex(ctx, h.store, safe)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("read image archive: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return []api.Image{{Name: "kanga.test/fuzzed:latest", Digest: desc.Digest.String()}}, nil
}

// fuzzServer is one API server on a real listener for a whole fuzz run
// (net/http's body handling is part of what is fuzzed), with what
// net/http logs kept for a look for panics.
type fuzzServer struct {
	url   string
	token string
	admin string
	hc    *http.Client
	log   *syncBuffer
}

func newFuzzServer(f *testing.F) *fuzzServer {
	e := newEnvFor(f)
	cs, err := local.NewStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	srv := New(e.store, Options{
		Hosts:  fakeDirectory{&archiveHost{fakeHost: newFakeHost(), store: cs}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ScheduleWait: -1,
	})
	logs := &syncBuffer{}
	ts := httptest.NewUnstartedServer(httpserver.LimitBodies(srv.Handler(), httpserver.DefaultLimits))
	ts.Config.ErrorLog = log.New(logs, "", 0)
	ts.Start()
	f.Cleanup(ts.Close)
	return &fuzzServer{url: ts.URL, token: e.a.token, admin: e.admin, hc: ts.Client(), log: logs}
}

// check sends req and checks the answer's shape.
func (s *fuzzServer) check(t *testing.T, req *http.Request) {
	t.Helper()
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	// 501 and 503 are answers (this host cannot prewarm; no registry);
	// 500 is a bug.
	if resp.StatusCode == http.StatusInternalServerError {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	switch ct := resp.Header.Get("Content-Type"); {
	case resp.StatusCode >= 400:
		var er api.ErrorResponse
		if err := json.Unmarshal(body, &er); err != nil || errdefs.FromCode(er.Error.Code) == nil || er.Error.Message == "" {
			t.Fatalf("%s %s: %d with a malformed error %q", req.Method, req.URL.Path, resp.StatusCode, body)
		}
	case ct == "application/x-ndjson":
		var last api.Progress
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			last = api.Progress{}
			if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
				t.Fatalf("%s %s: progress line %q: %v", req.Method, req.URL.Path, sc.Bytes(), err)
			}
		}
		if !last.Done && last.Error == nil {
			t.Fatalf("%s %s: the stream ended without done or error: %q", req.Method, req.URL.Path, body)
		}
	}
	if strings.Contains(s.log.String(), "panic") {
		t.Fatalf("net/http recovered a panic:\n%s", s.log)
	}
}

// FuzzImportImage feeds archives to POST /v1/images/import over one
// kept-alive connection.
func FuzzImportImage(f *testing.F) {
	s := newFuzzServer(f)
	f.Add(ociArchive(f))
	f.Add([]byte{})
	f.Add([]byte("not a tar"))
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Add(tarOf(f, map[string]string{"index.json": `{"schemaVersion":2,"manifests":[{"digest":"sha256:00","size":1}]}`}))
	f.Add(tarOf(f, map[string]string{"manifest.json": `[{"Config":"../../etc/passwd","RepoTags":["x"],"Layers":["/dev/zero"]}]`}))
	f.Add(tarOf(f, map[string]string{"../escape": "x", "oci-layout": `{"imageLayoutVersion":"1.0.0"}`}))
	// A valid entry, then garbage: the importer stops with most of the
	// body unread (the request that made net/http panic, finding 8).
	entry := tarOf(f, map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`})
	f.Add(append(entry[:len(entry)-1024], bytes.Repeat([]byte("garbage!"), 4096)...))
	f.Fuzz(func(t *testing.T, archive []byte) {
		req, err := http.NewRequest("POST", s.url+"/v1/images/import", bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+s.token)
		req.Header.Set("Content-Type", "application/x-tar")
		s.check(t, req)
		s.sameConnection(t, req)
	})
}

// sameConnection sends req and then a health check on one connection: a
// request that leaves the connection broken (net/http recovered a panic
// after it) fails the second.
func (s *fuzzServer) sameConnection(t *testing.T, req *http.Request) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if body, err := req.GetBody(); err == nil {
		req.Body = body
	}
	health, _ := http.NewRequest("GET", s.url+"/v1/healthz", nil)
	for _, r := range []*http.Request{req, health} {
		if err := r.Write(c); err != nil {
			t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
		}
		resp, err := http.ReadResponse(br, r)
		if err != nil {
			t.Fatalf("%s %s on the connection of the import: %v", r.Method, r.URL.Path, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s: reading the answer: %v", r.Method, r.URL.Path, err)
		}
	}
}

// jsonEndpoints are the routes that take a JSON body, with an
// administrator's token where they need one.
var jsonEndpoints = []struct {
	path  string
	admin bool
}{
	{"/v1/instances", false},
	{"/v1/tenants", true},
	{"/v1/images/pull", false},
	{"/v1/images/prewarm", false},
}

// FuzzJSONEndpoints feeds bodies to every endpoint that takes JSON; the
// first byte picks the endpoint.
func FuzzJSONEndpoints(f *testing.F) {
	s := newFuzzServer(f)
	seeds := []string{
		`{"name":"web","spec":{"containers":[{"image":"kanga.test/busybox","command":["sh"]}]}}`,
		`{"name":"web","spec":{"containers":[{"image":"kanga.test/busybox"}],"resources":{"cpu":"500m","memory":"64Mi","pids":10},"ports":[{"hostPort":8080,"containerPort":80}]}}`,
		`{"spec":{"containers":[{"image":"kanga.test/busybox","env":[{"name":"A","value":"b"}],"workingDir":"/tmp"}],"restartPolicy":"Always","runtime":"crun","hostSelector":{"zone":"a"}}}`,
		`{"name":"t1","allowedRuntimes":["gvisor"],"defaultRuntime":"gvisor","schedulingPolicy":"spread"}`,
		`{"ref":"kanga.test/missing:latest"}`,
		`{"ref":"kanga.test/busybox","hosts":1}`,
		`{}`, `[]`, `null`, `{"name":1}`, `{"spec":{"containers":null}}`, "{\"name\":\"\u0000\"}", `{"a":` + strings.Repeat("[", 10000),
	}
	for i, seed := range seeds {
		for e := range jsonEndpoints {
			f.Add(byte(i+e), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which byte, body []byte) {
		ep := jsonEndpoints[int(which)%len(jsonEndpoints)]
		req, err := http.NewRequest("POST", s.url+ep.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		token := s.token
		if ep.admin {
			token = s.admin
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		s.check(t, req)
	})
}

var fuzzEnvSeq struct {
	sync.Mutex
	n int
}

// newEnvFor is newEnv for a fuzz target: two tenants and an
// administrator on the shared store.
func newEnvFor(f *testing.F) *fuzzEnv {
	st := testStore(f)
	fuzzEnvSeq.Lock()
	fuzzEnvSeq.n++
	n := fuzzEnvSeq.n
	fuzzEnvSeq.Unlock()
	id := fmt.Sprintf("%x-%d", sha256.Sum256([]byte(f.Name())), n)[:12]
	e := &fuzzEnv{store: st}
	e.a.name = "fz-" + id
	e.a.token = "tok-fz-" + id
	e.admin = "admin-fz-" + id
	if err := st.PutToken(context.Background(), e.a.token, e.a.name); err != nil {
		f.Fatal(err)
	}
	if err := st.PutAdminToken(context.Background(), e.admin, e.a.name); err != nil {
		f.Fatal(err)
	}
	return e
}

type fuzzEnv struct {
	store *store.Store
	a     testTenant
	admin string
}

// ociArchive is a minimal OCI image layout archive naming one image.
func ociArchive(f *testing.F) []byte {
	layer := tarOf(f, map[string]string{"hello": "hi\n"})
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromBytes(layer).String() + `"]},"config":{"Cmd":["/hello"]}}`)
	desc := func(mt string, b []byte) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	manifest, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: desc(ocispec.MediaTypeImageConfig, cfg), Layers: []ocispec.Descriptor{desc(ocispec.MediaTypeImageLayer, layer)},
	})
	md := desc(ocispec.MediaTypeImageManifest, manifest)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "kanga.test/fuzzed:latest"}
	index, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}})
	files := map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`, "index.json": string(index)}
	for _, b := range [][]byte{layer, cfg, manifest} {
		files["blobs/sha256/"+digest.FromBytes(b).Encoded()] = string(b)
	}
	return tarOf(f, files)
}

func tarOf(f *testing.F, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			f.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			f.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}
