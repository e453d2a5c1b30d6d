package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/client"
)

// TestHostileTenant replays issue 12's findings 6 to 10 against kanga up
// as a tenant probing it would: images that outlive their tenant, slow
// bodies, garbage imports, pulls aimed at the host's loopback services,
// and oversized bodies.
func TestHostileTenant(t *testing.T) {
	p := startPlatform(t)
	cfg, err := client.LoadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	admin := cfg.Token

	// Finding 7 runs in the background meanwhile: the cut takes the
	// body timeout (30 s).
	slow := startSlowBodies(t, p.listen, admin)

	t.Run("ImagesOutliveTheirTenant", func(t *testing.T) { testImagesOutliveTenant(t, p) })
	t.Run("GarbageImport", func(t *testing.T) { testGarbageImport(t, p, admin) })
	t.Run("PullAtLoopback", func(t *testing.T) { testPullAtLoopback(t, p) })
	t.Run("OversizedBody", func(t *testing.T) { testOversizedBody(t, p, admin) })
	t.Run("SlowBodies", func(t *testing.T) { slow.check(t) })
}

// testImagesOutliveTenant is finding 6: after `tenant rm b` and `tenant
// create b`, the new b saw the old b's images, and there was no image rm.
func testImagesOutliveTenant(t *testing.T, p *platform) {
	archive := p.imagePath("busybox.tar")
	const ref = "kanga.test/busybox:latest"
	tok := strings.TrimSpace(p.must("tenant", "create", "hostile-b"))
	other := strings.TrimSpace(p.must("tenant", "create", "hostile-c"))
	defer p.kanga("tenant", "rm", "hostile-b")
	defer p.kanga("tenant", "rm", "hostile-c")
	for _, tk := range []string{tok, other} {
		if r := p.asTenant(tk, "image", "import", archive); r.code != 0 {
			t.Fatalf("import: %s", r.stderr)
		}
	}
	p.must("tenant", "rm", "hostile-b")
	tok = strings.TrimSpace(p.must("tenant", "create", "hostile-b"))
	if r := p.asTenant(tok, "image", "ls"); r.code != 0 || strings.Contains(r.stdout, "kanga.test/busybox") {
		t.Fatalf("the re-created tenant sees images (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := p.asTenant(tok, "run", "--rm", ref, "true"); r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("the re-created tenant ran the old one's image: exit %d %s", r.code, r.stderr)
	}
	// The deleted tenant's record is gone; the other tenant's stays.
	if out := p.ctr("images", "ls"); strings.Contains(out, "\nhostile-b@") || !strings.Contains(out, "\nhostile-c@"+ref) {
		t.Errorf("containerd's image records after the tenant's deletion:\n%s", out)
	}
	// The shared content still serves the other tenant.
	if r := p.asTenant(other, "run", "--rm", ref, "echo", "shared ok"); r.code != 0 || !strings.Contains(r.stdout, "shared ok") {
		t.Fatalf("the other tenant's image broke: exit %d %q %q", r.code, r.stdout, r.stderr)
	}

	// image rm: refused while an instance uses the image, unless forced.
	if r := p.asTenant(other, "run", "-d", "--name", "image-user", ref, "sleep", "300"); r.code != 0 {
		t.Fatalf("run: %s", r.stderr)
	}
	defer p.asTenant(other, "rm", "-f", "image-user")
	r := p.asTenant(other, "image", "rm", ref)
	if r.code == 0 || !strings.Contains(r.stderr, `"image-user"`) || !strings.Contains(r.stderr, "-f") {
		t.Fatalf("image rm of an image in use: exit %d %q, want a refusal naming the instance", r.code, r.stderr)
	}
	if r := p.asTenant(other, "image", "rm", "-f", ref); r.code != 0 {
		t.Fatalf("image rm -f: %s", r.stderr)
	}
	if r := p.asTenant(other, "image", "ls"); strings.Contains(r.stdout, "kanga.test/busybox") {
		t.Errorf("image ls after image rm -f:\n%s", r.stdout)
	}
	if r := p.asTenant(other, "inspect", "image-user"); !strings.Contains(r.stdout, `"phase": "Running"`) {
		t.Errorf("the instance using the removed image is not Running:\n%s", r.stdout)
	}
	if r := p.asTenant(other, "exec", "image-user", "echo", "still here"); r.code != 0 || !strings.Contains(r.stdout, "still here") {
		t.Errorf("exec in the instance after image rm -f: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// testGarbageImport is finding 8: every garbage import made net/http
// recover a panic ("invalid concurrent Body.Read call") and got 200 with
// an error in the body.
func testGarbageImport(t *testing.T, p *platform, token string) {
	garbage := make([]byte, 100<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + i/13)
	}
	c, err := net.Dial("tcp", p.listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 3 { // one kept-alive connection
		fmt.Fprintf(c, "POST /v1/images/import HTTP/1.1\r\nHost: kanga\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n", token, len(garbage))
		if _, err := c.Write(garbage); err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "InvalidArgument") {
			t.Errorf("import %d of garbage: %d %s, want 400 InvalidArgument", i, resp.StatusCode, body)
		}
	}
	path := filepath.Join(t.TempDir(), "garbage.tar")
	if err := os.WriteFile(path, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := p.kanga("image", "import", path); r.code == 0 || !strings.Contains(r.stderr, "archive") {
		t.Errorf("kanga image import of garbage: exit %d %q, want a failure", r.code, r.stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if b, _ := os.ReadFile(p.logPath); strings.Contains(string(b), "panic") {
		t.Errorf("kanga up logged a panic:\n%s", grepLines(string(b), "panic"))
	}
}

// testPullAtLoopback is finding 9: a pull of 127.0.0.1:PORT/... made the
// host call loopback services, and its error told open ports from closed.
func testPullAtLoopback(t *testing.T, p *platform) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepts atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	texts := map[string]string{}
	for _, addr := range []string{ln.Addr().String(), closedAddr, p.listen} {
		r := p.kanga("image", "pull", addr+"/probe:v1")
		if r.code == 0 {
			t.Fatalf("pull from %s worked", addr)
		}
		// Every answer carries its own request ID.
		texts[addr] = requestID.ReplaceAllString(strings.ReplaceAll(r.stderr, addr, "ADDR"), "")
	}
	if a, b, c := texts[ln.Addr().String()], texts[closedAddr], texts[p.listen]; a != b || b != c {
		t.Errorf("pull errors differ by port state:\n open:   %s\n closed: %s\n API:    %s", a, b, c)
	}
	if n := accepts.Load(); n != 0 {
		t.Errorf("the pull connected to a loopback listener %d times", n)
	}
}

var requestID = regexp.MustCompile(`\(request ID [0-9a-f]+\)`)

// testOversizedBody is finding 10: a 10 MB JSON body got "not valid
// JSON: unexpected EOF".
func testOversizedBody(t *testing.T, p *platform, token string) {
	create := func(value int) (int, string) {
		spec := api.CreateInstanceRequest{Name: "huge", Spec: api.InstanceSpec{Containers: []api.ContainerSpec{{
			Image: "kanga.test/busybox", Env: []api.EnvVar{{Name: "BIG", Value: strings.Repeat("x", value)}},
		}}}}
		body, _ := json.Marshal(spec)
		req, err := http.NewRequestWithContext(t.Context(), "POST", "http://"+p.listen+"/v1/instances", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if status, b := create(10 << 20); status != http.StatusRequestEntityTooLarge || !strings.Contains(b, "TooLarge") {
		t.Errorf("10 MB create: %d %s, want 413 TooLarge", status, b)
	}
	// A 1 MB variable fits under the body limit; the per-container cap on
	// the environment refuses it, naming the field.
	if status, b := create(1_000_000); status != http.StatusBadRequest || !strings.Contains(b, "env[0].value") {
		t.Errorf("create with a 1 MB variable: %d %s, want 400 naming the variable", status, b)
	}
}

// slowBodies are connections trickling a body a byte a second (finding 7:
// 250 such stayed open for ever; a handful shows it).
type slowBodies struct {
	done chan string // one line per connection once the server closed it
	n    int
}

func startSlowBodies(t *testing.T, addr, token string) *slowBodies {
	s := &slowBodies{done: make(chan string, 8)}
	heads := map[string]string{
		"unauthenticated create": "POST /v1/instances HTTP/1.1\r\nHost: kanga\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
		"unauthenticated import": "POST /v1/images/import HTTP/1.1\r\nHost: kanga\r\nContent-Length: 100000000\r\n\r\n",
		"bad token":              "POST /v1/tenants HTTP/1.1\r\nHost: kanga\r\nAuthorization: Bearer nope\r\nContent-Length: 100000\r\n\r\n",
		"authenticated create":   "POST /v1/instances HTTP/1.1\r\nHost: kanga\r\nAuthorization: Bearer " + token + "\r\nContent-Length: 100000\r\n\r\n",
		"authenticated import":   "POST /v1/images/import HTTP/1.1\r\nHost: kanga\r\nAuthorization: Bearer " + token + "\r\nContent-Length: 100000000\r\n\r\n",
	}
	for name, head := range heads {
		s.n++
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		start := time.Now()
		go func() {
			if _, err := io.WriteString(c, head); err != nil {
				s.done <- name + ": " + err.Error()
				return
			}
			for {
				time.Sleep(time.Second)
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		go func() {
			_ = c.SetReadDeadline(start.Add(90 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				s.done <- fmt.Sprintf("%s: still open after %s", name, time.Since(start).Round(time.Second))
				return
			}
			s.done <- fmt.Sprintf("%s: closed after %s", name, time.Since(start).Round(time.Second))
		}()
	}
	return s
}

func (s *slowBodies) check(t *testing.T) {
	for range s.n {
		line := <-s.done
		t.Log(line)
		if !strings.Contains(line, "closed after") {
			t.Errorf("slow body: %s", line)
		}
	}
}

// TestMultiHostTenantPurge: images are removed on every host through the
// host link, also from a host that is down at the time: an image removed
// while a host was away does not come back with it, and a tenant deleted
// while a host was away leaves nothing on it. The connected host drops
// what it has at once; the tenant's name may be taken again meanwhile
// (the down host is NotReady); the down host drops the old tenant's
// images before it registers again, so the new tenant of that name sees
// none of them on any host.
func TestMultiHostTenantPurge(t *testing.T) {
	p := startPool(t, map[string]string{"tp-a": "a", "tp-b": "b"})
	a, b := p.agents["tp-a"], p.agents["tp-b"]
	const (
		ref   = "kanga.test/busybox:latest"
		label = "\nhostile-d@" + ref // the tenant's record, at the start of a line
	)
	tok := strings.TrimSpace(p.must("tenant", "create", "hostile-d"))
	defer p.kanga("tenant", "rm", "hostile-d")
	has := func(h *hostAgent) bool { return strings.Contains(h.ctrOut("images", "ls"), label) }
	importBoth := func() {
		p.eventually("the tenant's image on both hosts", 60*time.Second, func() bool {
			if r := p.asTenant(tok, "image", "import", p.imagePath("busybox.tar")); r.code != 0 {
				t.Logf("import: %s", r.stderr)
			}
			return has(a) && has(b)
		})
	}
	stopB := func() {
		p.stopAgent(b)
		p.eventually("tp-b to be NotReady", 30*time.Second, func() bool {
			return p.hosts()["tp-b"].Status.Phase == api.HostNotReady
		})
	}
	startB := func() {
		p.startAgent(b, "")
		p.waitReady("tp-b")
	}

	// image rm with both hosts up reaches both.
	importBoth()
	if r := p.asTenant(tok, "image", "rm", ref); r.code != 0 {
		t.Fatalf("image rm: %s", r.stderr)
	}
	if has(a) || has(b) {
		t.Fatalf("image rm left the image: tp-a %v, tp-b %v", has(a), has(b))
	}

	// image rm while tp-b is down: it removes it when it is back.
	importBoth()
	stopB()
	if r := p.asTenant(tok, "image", "rm", ref); r.code != 0 {
		t.Fatalf("image rm with tp-b down: %s", r.stderr)
	}
	if has(a) {
		t.Fatal("tp-a kept the removed image")
	}
	startB()
	if has(b) {
		t.Fatalf("tp-b came back with the removed image:\n%s", b.ctrOut("images", "ls"))
	}

	// tenant rm while tp-b is down.
	importBoth()
	stopB()
	p.must("tenant", "rm", "hostile-d")
	if has(a) {
		t.Fatalf("tp-a kept the deleted tenant's image:\n%s", a.ctrOut("images", "ls"))
	}
	tok = strings.TrimSpace(p.must("tenant", "create", "hostile-d"))
	startB()
	if has(b) {
		t.Fatalf("tp-b came back with the deleted tenant's image:\n%s", b.ctrOut("images", "ls"))
	}
	if r := p.asTenant(tok, "image", "ls"); r.code != 0 || strings.Contains(r.stdout, "kanga.test/busybox") {
		t.Fatalf("the re-created tenant sees images (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}
	if log, _ := os.ReadFile(b.logPath); !strings.Contains(string(log), "removed what this host kept of a deleted tenant") {
		t.Errorf("tp-b's log does not show the purge")
	}
}
