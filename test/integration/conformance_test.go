package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/harness"
	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// Kubernetes' node conformance tests against the virtual node. The run is
// long (an hour or more on two cores), so `make test` skips it; `make
// conformance` (scripts/conformance.sh) builds what it needs and runs it
// with these variables set:
//
//	KANGA_CONFORMANCE_DIR     e2e.test, ginkgo and the image programs and files (required)
//	KANGA_CONFORMANCE_REPORT  where the reports and logs go (default: a temporary directory)
//	KANGA_CONFORMANCE_FOCUS   ginkgo focus (default `\[NodeConformance\]`)
//	KANGA_CONFORMANCE_SKIP    ginkgo skip (default `\[Flaky\]|\[Disruptive\]|\[Slow\]`)
//	KANGA_CONFORMANCE_PROCS   ginkgo processes (default 2)
//	KANGA_CONFORMANCE_TIMEOUT the suite's timeout (default 3h)
//	KANGA_CONFORMANCE_NODE_ADDR the node's address (default 198.18.255.2)
//
// docs/conformance.md publishes the results.

// e2eRegistries maps the e2e framework's registries (its
// KUBE_TEST_REPO_LIST keys) to repositories of the local registry. The
// invalid registry stays as it is: the tests using it expect a pull to
// fail.
var e2eRegistries = map[string]string{
	"promoterE2eRegistry":   "e2e-test-images",
	"gcRegistry":            "k8s",
	"gcEtcdRegistry":        "k8s",
	"privateRegistry":       "k8s-authenticated-test",
	"dockerLibraryRegistry": "library",
	"buildImageRegistry":    "build-image",
	"sigStorageRegistry":    "sig-storage",
}

// e2eImage is one image of the e2e suite, as the framework names it under
// the local registry, and how it is built here.
type e2eImage struct {
	ref string // repository:tag under the local registry
	// how says what the image is made of, for the report.
	how   string
	build func(l e2eLayers) (v1.Image, error)
}

// e2eLayers are the layers the e2e images are made of.
type e2eLayers struct {
	busybox, agnhost v1.Layer
	dir              string
}

const e2ePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// e2eImages are the images the node's tests run (test/utils/image of
// Kubernetes v1.37.2), built from what this machine has: Debian's
// busybox-static, and agnhost and nonewprivs compiled from the
// Kubernetes module. Images not listed here (nginx, perl, the volume
// servers, ...) are not built: tests that need them fail to start their
// pods, and the report counts them apart.
var e2eImages = []e2eImage{
	{ref: "e2e-test-images/busybox:1.37.0-2", how: "Debian busybox-static",
		build: func(l e2eLayers) (v1.Image, error) {
			return testimage.Layered(v1.Config{Env: []string{e2ePath}, Cmd: []string{"sh"}, WorkingDir: "/"}, l.busybox)
		}},
	{ref: "e2e-test-images/agnhost:2.66.1", how: "agnhost from k8s.io/kubernetes v1.37.2 on busybox, with Debian's curl", build: agnhostImage},
	{ref: "e2e-test-images/agnhost:2.55", how: "agnhost from k8s.io/kubernetes v1.37.2 on busybox (the previous version's tag)", build: agnhostImage},
	{ref: "k8s-authenticated-test/agnhost:2.6", how: "agnhost (the private registry's image; the local registry has no authentication)", build: agnhostImage},
	{ref: "k8s/pause:3.10.2", how: "agnhost pause",
		build: func(l e2eLayers) (v1.Image, error) {
			return testimage.Layered(v1.Config{Env: []string{e2ePath}, Entrypoint: []string{"/agnhost", "pause"}, WorkingDir: "/"}, l.busybox, l.agnhost)
		}},
	{ref: "e2e-test-images/nonroot:1.5", how: "busybox with USER 1234, as upstream's Dockerfile",
		build: func(l e2eLayers) (v1.Image, error) {
			return testimage.Layered(v1.Config{Env: []string{e2ePath}, Cmd: []string{"sh"}, User: "1234", WorkingDir: "/"}, l.busybox)
		}},
	{ref: "e2e-test-images/nonewprivs:1.4", how: "nnp from k8s.io/kubernetes v1.37.2, setuid, on busybox",
		build: func(l e2eLayers) (v1.Image, error) {
			nnp, err := os.ReadFile(filepath.Join(l.dir, "nnp"))
			if err != nil {
				return nil, err
			}
			layer, err := testimage.FilesLayer([]testimage.File{
				{Name: "usr", Mode: 0o755, Dir: true}, {Name: "usr/local", Mode: 0o755, Dir: true},
				{Name: "usr/local/bin", Mode: 0o755, Dir: true},
				{Name: "usr/local/bin/nnp", Mode: 0o4755, Data: nnp},
			})
			if err != nil {
				return nil, err
			}
			return testimage.Layered(v1.Config{Env: []string{e2ePath}, Cmd: []string{"nnp"}, WorkingDir: "/"}, l.busybox, layer)
		}},
	{ref: "e2e-test-images/kitten:1.8", how: "agnhost test-webserver with upstream's kitten files", build: webImage("kitten")},
	{ref: "e2e-test-images/nautilus:1.8", how: "agnhost test-webserver with upstream's nautilus files", build: webImage("nautilus")},
}

// e2eNotBuilt are the suite's images this machine cannot build, with why.
var e2eNotBuilt = map[string]string{
	"e2e-test-images/nginx:1.27.0-2": "nginx: not packed yet (upstream's is Alpine's; Debian's nginx-light could go in with its libraries, as curl does)",
	"e2e-test-images/nginx:1.28.0-2": "nginx: not packed yet (upstream's is Alpine's; Debian's nginx-light could go in with its libraries, as curl does)",
	"e2e-test-images/perl:5.26":      "perl: not packed",
}

// agnhostImage is upstream's agnhost image (test/images/agnhost/Dockerfile)
// on busybox instead of Alpine: /agnhost as the entrypoint, pause as the
// command, its agnhost-2 link, /uploads, the porter's certificate and the
// user and group the image defines.
func agnhostImage(l e2eLayers) (v1.Image, error) {
	return testimage.Layered(v1.Config{
		Env:          []string{e2ePath},
		Entrypoint:   []string{"/agnhost"},
		Cmd:          []string{"pause"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}, "5000/tcp": {}},
		WorkingDir:   "/",
	}, l.busybox, l.agnhost)
}

func agnhostLayer(dir string) (v1.Layer, error) {
	// Upstream's image has Alpine's curl, which the suite's network
	// tests run inside agnhost pods; busybox has none, so Debian's curl
	// goes in with the shared libraries it loads.
	files, err := hostBinaryFiles("/usr/bin/curl")
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, src string
		mode      int64
	}{{"agnhost", "agnhost", 0o755}, {"localhost.crt", "localhost.crt", 0o644}, {"localhost.key", "localhost.key", 0o600}} {
		b, err := os.ReadFile(filepath.Join(dir, f.src))
		if err != nil {
			return nil, err
		}
		files = append(files, testimage.File{Name: f.name, Mode: f.mode, Data: b})
	}
	files = append(files,
		testimage.File{Name: "agnhost-2", Link: "agnhost"},
		testimage.File{Name: "uploads", Mode: 0o755, Dir: true},
		testimage.File{Name: "etc", Mode: 0o755, Dir: true},
		testimage.File{Name: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\n" +
			"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		testimage.File{Name: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nuser-defined-in-image:x:1000:\n" +
			"group-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n")},
	)
	return testimage.FilesLayer(files)
}

// hostBinaryFiles are the files of the host's dynamically linked
// programs bins and of every shared library ldd says they load, at the
// same paths, with the directories above them.
func hostBinaryFiles(bins ...string) ([]testimage.File, error) {
	paths := slices.Clone(bins)
	for _, bin := range bins {
		out, err := exec.Command("ldd", bin).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", bin, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					paths = append(paths, f)
				}
			}
		}
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	var files []testimage.File
	dirs := map[string]bool{}
	for _, p := range paths {
		var parents []string
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !dirs[d] {
				dirs[d] = true
				files = append(files, testimage.File{Name: strings.TrimPrefix(d, "/"), Mode: 0o755, Dir: true})
			}
		}
		// Libraries are often symlinks to a versioned name: the file
		// goes in under the name the loader looks for.
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files = append(files, testimage.File{Name: strings.TrimPrefix(p, "/"), Mode: 0o755, Data: b})
	}
	return files, nil
}

// webImage is upstream's kitten or nautilus image: agnhost's
// test-webserver serving the image's picture and data.json.
func webImage(name string) func(l e2eLayers) (v1.Image, error) {
	return func(l e2eLayers) (v1.Image, error) {
		jpg, err := os.ReadFile(filepath.Join(l.dir, name+".jpg"))
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(l.dir, name+"-data.json"))
		if err != nil {
			return nil, err
		}
		layer, err := testimage.FilesLayer([]testimage.File{
			{Name: name + ".jpg", Mode: 0o644, Data: jpg},
			{Name: "data.json", Mode: 0o644, Data: data},
		})
		if err != nil {
			return nil, err
		}
		return testimage.Layered(v1.Config{
			Env: []string{e2ePath}, Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}, WorkingDir: "/",
		}, l.busybox, l.agnhost, layer)
	}
}

// pushE2EImages builds every image of e2eImages, pushes it to the local
// registry and pulls it into the platform's tenant (Kanga runs only images
// its tenant has), and writes the KUBE_TEST_REPO_LIST file mapping the
// framework's registries to the local one.
func pushE2EImages(t *testing.T, p *platform, registry, dir, out string) string {
	t.Helper()
	ctx := context.Background()
	bb, err := testimage.BusyboxLayer(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agnhostLayer(dir)
	if err != nil {
		t.Fatal(err)
	}
	layers := e2eLayers{busybox: bb, agnhost: ag, dir: dir}
	tmp := t.TempDir()
	var table strings.Builder
	table.WriteString("image\tmade of\n")
	for i, img := range e2eImages {
		im, err := img.build(layers)
		if err != nil {
			t.Fatalf("build %s: %v", img.ref, err)
		}
		file := filepath.Join(tmp, strconv.Itoa(i)+".tar")
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		err = testimage.WriteOCIArchive(f, im, img.ref)
		f.Close()
		if err != nil {
			t.Fatalf("write %s: %v", img.ref, err)
		}
		ref := testenv.PushImage(t, registry, file, img.ref)
		p.must("image", "pull", ref)
		fmt.Fprintf(&table, "%s\t%s\n", img.ref, img.how)
	}
	for ref, why := range e2eNotBuilt {
		fmt.Fprintf(&table, "%s\tNOT BUILT: %s\n", ref, why)
	}
	if err := os.WriteFile(filepath.Join(out, "images.tsv"), []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	var list strings.Builder
	for key, repo := range e2eRegistries {
		fmt.Fprintf(&list, "%s: %s/%s\n", key, registry, repo)
	}
	repoList := filepath.Join(out, "repo-list.yaml")
	if err := os.WriteFile(repoList, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return repoList
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ginkgoReport is the part of ginkgo's JSON report the test reads.
type ginkgoReport struct {
	SuiteSucceeded bool
	SpecReports    []struct {
		LeafNodeType string
		LeafNodeText string
		State        string
	}
}

// TestConformance runs the node conformance tests of Kubernetes v1.37.2
// (upstream's e2e specs, unmodified, built by scripts/conformance.sh)
// against a cluster whose only node is Kanga's virtual node: a real
// kube-apiserver, kube-controller-manager (its default controllers) and
// kube-scheduler, a real Kanga platform, and the suite's images served by a
// local registry. Test failures are results, not failures of this test:
// it fails only when the suite could not run (no report, or its setup
// failed); docs/conformance.md publishes the table.
func TestConformance(t *testing.T) {
	dir := os.Getenv("KANGA_CONFORMANCE_DIR")
	if dir == "" {
		t.Skip("KANGA_CONFORMANCE_DIR is not set: run `make conformance` (about an hour)")
	}
	for _, f := range []string{"e2e.test", "ginkgo", "agnhost", "nnp"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s: run scripts/conformance.sh, which builds it", err)
		}
	}
	out := os.Getenv("KANGA_CONFORMANCE_REPORT")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	// The commit the platform and the node are built from, for the
	// table (bin/kanga is built from the working tree).
	commit := "unknown"
	if b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(b))
		if b, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(b) > 0 {
			commit += " (with uncommitted changes)"
		}
	}
	if err := os.WriteFile(filepath.Join(out, "commit.txt"), []byte(commit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := k8sBinaries(t, "kube-controller-manager", "kube-scheduler")
	registry := testenv.StartRegistry(t)
	// Loopback registries are refused unless the operator allows them.
	p := startPlatformWith(t, "--pool-max", "0", "--insecure-registry", registry)
	repoList := pushE2EImages(t, p, registry, dir, out)

	cp := startControlPlaneRunning(t, bin, []string{"*"})
	// The API server reaches the kubelet API (logs, exec, port-forward)
	// on a non-loopback address (see TestVirtualKubeletE2E).
	// KANGA_CONFORMANCE_NODE_ADDR lets two runs go side by side.
	ip := envOr("KANGA_CONFORMANCE_NODE_ADDR", "198.18.255.2")
	addr := nodeAddress(t, "kanga-conf"+ip[strings.LastIndex(ip, ".")+1:], ip)
	const node = "kanga-conformance"
	vn := &virtualNode{
		t: t, p: p, logPath: filepath.Join(out, "virtual-node.log"),
		// The only worker: no taint, so the suite's pods need no
		// toleration and the framework counts the node as schedulable.
		args: []string{"virtual-node", "--kubeconfig", cp.kubeconfig, "--name", node, "--disable-taint",
			"--addr", addr, "--port", strconv.Itoa(harness.FreePort(t)), "--cpu", "8", "--memory", "16Gi", "--pods", "110"},
	}
	vn.start()
	t.Cleanup(func() {
		vn.kill()
		if b, err := os.ReadFile(p.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(out, "kanga.log"), b, 0o644)
		}
	})
	waitFor(t, "node "+node+" Ready", 2*time.Minute, func() bool {
		n, err := cp.client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	})

	focus := envOr("KANGA_CONFORMANCE_FOCUS", `\[NodeConformance\]`)
	skip := envOr("KANGA_CONFORMANCE_SKIP", `\[Flaky\]|\[Disruptive\]|\[Slow\]`)
	args := []string{"run",
		"--procs", envOr("KANGA_CONFORMANCE_PROCS", "2"),
		"--timeout", envOr("KANGA_CONFORMANCE_TIMEOUT", "3h"),
		"--focus", focus, "--skip", skip,
		"--output-dir", out, "--json-report", "report.json", "--junit-report", "junit.xml",
		"--no-color", "--poll-progress-after", "10m",
		filepath.Join(dir, "e2e.test"), "--",
		"--kubeconfig", cp.kubeconfig, "--provider", "skeleton",
		"--kubectl-path", "kubectl",
		"--e2e-output-dir", out, "--dump-logs-on-failure=true",
	}
	logPath := filepath.Join(out, "e2e.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "ginkgo"), args...)
	cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+repoList, "KUBECONFIG="+cp.kubeconfig)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Logf("running the e2e suite (focus %s, skip %s); log: %s", focus, skip, logPath)
	start := time.Now()
	runErr := cmd.Run()
	logf.Close()
	t.Logf("e2e suite ran in %s (ginkgo: %v)", time.Since(start).Round(time.Second), runErr)

	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("no report: %v\n%s", err, harness.Tail(string(b), 6000))
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(b, &reports); err != nil || len(reports) == 0 {
		t.Fatalf("report.json: %v", err)
	}
	counts := map[string]int{}
	for _, s := range reports[0].SpecReports {
		if s.LeafNodeType == "SynchronizedBeforeSuite" && s.State != "passed" {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("the suite's setup %s against the virtual node:\n%s", s.State, harness.Tail(string(b), 6000))
		}
		if s.LeafNodeType == "It" {
			counts[s.State]++
		}
	}
	t.Logf("specs: %v; reports in %s", counts, out)
	if counts["passed"] == 0 {
		t.Fatalf("no spec passed: the cluster is not usable (see %s)", logPath)
	}
}
