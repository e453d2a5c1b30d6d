// Package testenv holds helpers for Kanga's integration tests: root checks,
// the locally built test images and a throwaway image registry on loopback.
//
// Everything a helper starts is stopped, and everything it creates removed,
// through t.Cleanup.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// module is the import path whose go.mod marks the repository root.
const module = "github.com/kanga-run/kanga"

// EnvImagesDir overrides where Images keeps the test images.
const EnvImagesDir = "KANGA_TEST_IMAGES"

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}

// RequireBinaries skips the test unless every named program is in PATH, or
// exists if given as an absolute path.
func RequireBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("requires %s (run scripts/install-deps.sh): %v", n, err)
		}
	}
}

// RepoRoot returns the repository root: the nearest directory above the
// working directory whose go.mod declares Kanga's module.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("get working directory: %v", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declaresModule(b) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod for %s above the working directory", module)
		}
		dir = parent
	}
}

func declaresModule(gomod []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" && f[1] == module {
			return true
		}
	}
	return false
}

// images caches the result of ensureImages for the life of the test binary.
var images struct {
	sync.Mutex
	dir string
}

// Images returns the directory holding the test images (see package
// testimage for names and files), building them if they are missing or were
// built from a different busybox. The directory is $KANGA_TEST_IMAGES if set,
// else testdata/images at the repository root, which `make images` also
// writes. Building happens at most once per test binary, under a file lock so
// test binaries running in parallel do not build it concurrently.
func Images(t testing.TB) string {
	t.Helper()
	images.Lock()
	defer images.Unlock()
	if images.dir != "" {
		return images.dir
	}
	if _, err := os.Stat(testimage.DefaultBusybox); err != nil {
		t.Skipf("requires %s (install busybox-static): %v", testimage.DefaultBusybox, err)
	}
	dir := os.Getenv(EnvImagesDir)
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "testdata", "images")
	}
	if err := ensureImages(context.Background(), dir); err != nil {
		t.Fatalf("test images: %v", err)
	}
	images.dir = dir
	return dir
}

// ImagePath returns the OCI archive of img, building the images if needed.
func ImagePath(t testing.TB, img testimage.Image) string {
	t.Helper()
	return filepath.Join(Images(t), img.File)
}

func ensureImages(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	ok, err := testimage.UpToDate(dir, testimage.Options{})
	if err != nil || ok {
		return err
	}
	return testimage.Build(ctx, dir, testimage.Options{})
}

// DockerRegistry is Debian's build of the distribution registry.
const DockerRegistry = "/usr/bin/docker-registry"

// StartRegistry starts a plain-HTTP image registry on a free loopback port,
// with its storage in a temporary directory, and returns its address
// (127.0.0.1:PORT). It waits until the registry answers /v2/ and stops it when
// the test ends.
func StartRegistry(t testing.TB) string {
	t.Helper()
	RequireBinaries(t, DockerRegistry)

	// A free port found by listening on :0 can be taken by someone else
	// before the registry binds it; a few attempts make that race harmless.
	var lastErr error
	for range 3 {
		addr, err := startRegistry(t)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("start registry: %v", lastErr)
	return ""
}

func startRegistry(t testing.TB) (string, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()

	cmd := exec.Command(DockerRegistry, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so nothing sent to the test's group reaches it
	// and it cannot outlive a kill of the group we own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", DockerRegistry, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	if err := waitReady(addr, exited, 30*time.Second); err != nil {
		stop()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w (%v)", err, waitErr)
		}
		out, _ := os.ReadFile(logPath)
		return "", fmt.Errorf("registry on %s: %w; log:\n%s", addr, err, out)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			if out, err := os.ReadFile(logPath); err == nil && len(out) > 0 {
				t.Logf("registry %s log:\n%s", addr, out)
			}
		}
	})
	return addr, nil
}

var errExited = errors.New("registry exited")

// waitReady polls the registry's API root until it answers 200.
func waitReady(addr string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		select {
		case <-exited:
			return errExited
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PushImage copies the OCI archive ociArchive to the registry at addr as
// repoTag (for example "httpd:latest") and returns the pushed reference,
// addr/repoTag, ready for a pull over plain HTTP.
func PushImage(t testing.TB, addr, ociArchive, repoTag string) string {
	t.Helper()
	RequireBinaries(t, "skopeo")
	ref := addr + "/" + repoTag
	cmd := exec.Command("skopeo", "copy",
		// The host's policy may require signatures; these are local test images.
		"--insecure-policy",
		"--dest-tls-verify=false",
		"oci-archive:"+ociArchive,
		"docker://"+ref,
	)
	// skopeo unpacks the archive under TMPDIR; keep that inside the test.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push %s to %s: %v\n%s", ociArchive, ref, err, out)
	}
	return ref
}
