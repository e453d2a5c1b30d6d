package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/hostcontract"
	"github.com/kanga-run/kanga/internal/httpstream"
	"github.com/kanga-run/kanga/internal/requestid"
	"github.com/kanga-run/kanga/internal/tenant"
)

// Images the fake host knows.
const (
	imgBusybox = "kanga.test/busybox:latest" // has a cmd
	imgScratch = "kanga.test/scratch:latest" // has neither entrypoint nor cmd
)

// fakeHost is a Host without containers: images are a map, logs are a
// canned string, exec echoes stdin. It records what the server asked of it
// so tests can check what crossed the interface.
type fakeHost struct {
	images map[string]hostcontract.ImageConfig

	mu       sync.Mutex
	exitCode int                       // returned by Exec
	lastExec *hostcontract.ExecRequest // the last ExecRequest, without its streams
	// lastExecID is the request ID the last Exec's context carried.
	lastExecID string
	logCalls   []logCall
	imported   int64    // bytes of the last import body
	removed    []string // tenant/image of RemoveImage, tenant/* of RemoveTenant
	// removeErr, if set, fails RemoveImage and RemoveTenant.
	removeErr error
	// kills records Kill's calls as "instance/container/signal".
	kills []string
}

// Kill implements hostcontract.Killer by recording the call.
func (h *fakeHost) Kill(_ context.Context, inst *api.Instance, container string, sig syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kills = append(h.kills, fmt.Sprintf("%s/%s/%d", inst.Name, container, sig))
	return nil
}

// Top implements hostcontract.ProcessLister with one process a
// container, named after it.
func (h *fakeHost) Top(_ context.Context, inst *api.Instance) ([]api.Process, error) {
	var out []api.Process
	for i, c := range inst.Spec.Containers {
		out = append(out, api.Process{Container: c.Name, PID: i + 1, State: "S", Command: []string{"/bin/" + c.Name}})
	}
	return out, nil
}

type logCall struct {
	instance, container string
	follow              bool
}

func newFakeHost() *fakeHost {
	return &fakeHost{images: map[string]hostcontract.ImageConfig{
		imgBusybox: {Cmd: []string{"sh"}},
		imgScratch: {},
	}}
}

var fakeImageTime = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func fakeImage(ref string) api.Image {
	return api.Image{Name: ref, Digest: "sha256:" + fmt.Sprintf("%064x", len(ref)), Size: 1234, CreatedAt: fakeImageTime}
}

func (h *fakeHost) Name() string             { return "fake-host" }
func (h *fakeHost) RuntimeClasses() []string { return []string{"runc", "crun"} }

// Capacity is a small fake host: 2 cores, 4 GiB.
func (h *fakeHost) Capacity() hostcontract.Capacity {
	return hostcontract.Capacity{CPUs: 2, Memory: 4 << 30}
}

func (h *fakeHost) ImageConfig(ctx context.Context, ref string) (hostcontract.ImageConfig, error) {
	cfg, ok := h.images[ref]
	if !ok {
		// The real host's wording, so that tests check the server passes
		// it through.
		return hostcontract.ImageConfig{}, fmt.Errorf("image %s not found; add it with `kanga image import` or `kanga image pull %s`: %w", ref, ref, errdefs.ErrNotFound)
	}
	return cfg, nil
}

func (h *fakeHost) ListImages(ctx context.Context) ([]api.Image, error) {
	return []api.Image{fakeImage(imgBusybox), fakeImage(imgScratch)}, nil
}

func (h *fakeHost) ImportImage(ctx context.Context, r io.Reader, progress func(api.Progress)) ([]api.Image, error) {
	progress(api.Progress{Status: "reading archive"})
	head := make([]byte, len(partialReadMarker))
	m, err := io.ReadFull(r, head)
	if string(head[:m]) == partialReadMarker {
		// As the real host with a file that is no tar: it gives up after
		// the first header's 512 bytes and leaves the rest unread.
		_, _ = io.ReadFull(r, make([]byte, 512))
		return nil, fmt.Errorf("read image archive: archive/tar: invalid tar header; not an image archive: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	rest, err := io.Copy(io.Discard, r)
	if err != nil {
		return nil, err
	}
	n := int64(m) + rest
	h.mu.Lock()
	h.imported = n
	h.mu.Unlock()
	if n == 0 {
		return nil, fmt.Errorf("the archive is empty: %w", errdefs.ErrInvalidArgument)
	}
	if n == lateFailureSize {
		// A failure found late, once progress has gone out.
		time.Sleep(2 * httpstream.HoldBack)
		return nil, fmt.Errorf("image archive: layer sha256:0 is missing: %w", errdefs.ErrInvalidArgument)
	}
	progress(api.Progress{Status: "unpacking", Current: n, Total: n})
	return []api.Image{fakeImage("kanga.test/imported:latest")}, nil
}

func (h *fakeHost) PullImage(ctx context.Context, ref string, progress func(api.Progress)) (api.Image, error) {
	progress(api.Progress{Status: "resolving " + ref})
	if ref == "kanga.test/missing:latest" {
		return api.Image{}, fmt.Errorf("pull %s: manifest unknown: %w", ref, errdefs.ErrNotFound)
	}
	progress(api.Progress{Status: "downloading", Current: 10, Total: 10})
	return fakeImage(ref), nil
}

// partialReadMarker starts an archive the fake host rejects after reading
// a part of it.
const partialReadMarker = "GARBAGE!"

// lateFailureSize is the size of an archive the fake host rejects after
// it reported progress.
const lateFailureSize = 4321

// fakeLogs is what Logs writes for a container.
func fakeLogs(container string) string {
	return "hello from " + container + "\nsecond line\n"
}

func (h *fakeHost) Logs(ctx context.Context, inst *api.Instance, container string, follow bool, w io.Writer) error {
	h.mu.Lock()
	h.logCalls = append(h.logCalls, logCall{inst.Name, container, follow})
	h.mu.Unlock()
	_, err := io.WriteString(w, fakeLogs(container))
	return err
}

// Exec echoes stdin to stdout, names the container on stderr and returns
// the chosen exit code. The command "fail" fails to start.
func (h *fakeHost) Exec(ctx context.Context, inst *api.Instance, req hostcontract.ExecRequest) (int, error) {
	h.mu.Lock()
	rec := req
	rec.Stdin, rec.Stdout, rec.Stderr, rec.Resize = nil, nil, nil, nil
	if req.Stdin == nil {
		rec.Env = append(rec.Env, "FAKE_NO_STDIN=1")
	}
	h.lastExec = &rec
	h.lastExecID = requestid.From(ctx)
	code := h.exitCode
	h.mu.Unlock()

	if req.Cmd[0] == "fail" {
		return -1, fmt.Errorf("exec %q in container %s: executable file not found in $PATH: %w", req.Cmd[0], req.Container, errdefs.ErrNotFound)
	}
	if req.Stdin != nil {
		if _, err := io.Copy(req.Stdout, req.Stdin); err != nil {
			return -1, err
		}
	}
	if _, err := fmt.Fprintf(req.Stderr, "ran %v in %s\n", req.Cmd, req.Container); err != nil {
		return -1, err
	}
	return code, nil
}

func (h *fakeHost) setExitCode(code int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.exitCode = code
}

func (h *fakeHost) lastExecRequest() *hostcontract.ExecRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastExec
}

func (h *fakeHost) logCallsSeen() []logCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]logCall(nil), h.logCalls...)
}

var (
	_ hostcontract.Host         = (*fakeHost)(nil)
	_ hostcontract.ImageRemover = (*fakeHost)(nil)
)

// RemoveImage removes the fake's known images for any tenant (the fake
// does not keep images per tenant) and records the call.
func (h *fakeHost) RemoveImage(ctx context.Context, ref string) error {
	t, err := tenant.Name(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.removeErr != nil {
		return h.removeErr
	}
	if _, ok := h.images[ref]; !ok {
		return fmt.Errorf("image %s not found: %w", ref, errdefs.ErrNotFound)
	}
	h.removed = append(h.removed, t+"/"+ref)
	return nil
}

func (h *fakeHost) RemoveTenant(ctx context.Context, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.removeErr != nil {
		return h.removeErr
	}
	h.removed = append(h.removed, name+"/*")
	return nil
}

func (h *fakeHost) removals() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.removed...)
}

func (h *fakeHost) failRemovals(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeErr = err
}

// Stats returns a fixed sample for a known instance.
func (h *fakeHost) Stats(ctx context.Context, inst *api.Instance) (api.InstanceStats, error) {
	return api.InstanceStats{Time: testNow, CPUUsageNanos: 5e8, MemoryUsage: 1 << 20, Pids: 2}, nil
}

// SLA returns a report with one kept promise.
func (h *fakeHost) SLA(ctx context.Context, inst *api.Instance) (api.SLAReport, error) {
	return api.SLAReport{Instance: inst.Name, Since: testNow, Until: testNow,
		Items: []api.SLAItem{{Resource: "memory", Promised: "64Mi", Delivered: "peak 1Mi", Kept: true}}}, nil
}

func (h *fakeHost) lastExecRequestID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastExecID
}

// fakeDirectory is the API's host directory in the handler tests, in
// place of hostclient.Directory: its one fake host, which the harness
// registers and holds the lease of, so that the scheduler places every
// instance there.
type fakeDirectory struct{ h hostcontract.Host }

func (d fakeDirectory) Host(name string) (hostcontract.Host, bool) {
	if d.h == nil || name != d.h.Name() {
		return nil, false
	}
	return d.h, true
}

func (d fakeDirectory) All() []hostcontract.Host {
	if d.h == nil {
		return nil
	}
	return []hostcontract.Host{d.h}
}
