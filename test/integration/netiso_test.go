package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/vishvananda/netlink"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/testenv"
	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// Tests of tenant network isolation through the kanga binary: the
// findings it fixes (one tenant reaching another's instances and the
// host's services; ARP spoofing taking over another's traffic), the
// tenant network policy, and the all-pairs matrix over two agents and
// three runtimes.

// createTenant makes tenant name with the platform's admin token and
// returns its token. The tenant's instances are removed when the test
// ends, before the platform stops (its purge sees only its own tenant's).
func (p *platform) createTenant(name string, flags ...string) string {
	p.t.Helper()
	token := strings.TrimSpace(p.must(append([]string{"tenant", "create", name}, flags...)...))
	p.t.Cleanup(func() {
		for _, n := range strings.Fields(p.asTenantQuiet(token, "ps", "-aq").stdout) {
			p.asTenantQuiet(token, "rm", "-f", n)
		}
	})
	return token
}

// mustAs runs the CLI with tenant token and fails the test unless it
// exits 0.
func (p *platform) mustAs(token string, args ...string) string {
	p.t.Helper()
	r := p.asTenant(token, args...)
	if r.code != 0 {
		p.t.Fatalf("kanga %s (as tenant): exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// runningIPAs waits until the tenant's instance runs with an address and
// returns it.
func (p *platform) runningIPAs(token, name string) api.Instance {
	p.t.Helper()
	var in api.Instance
	p.eventually(name+" to run", 90*time.Second, func() bool {
		r := p.asTenant(token, "inspect", name)
		var insts []api.Instance
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &insts) != nil || len(insts) != 1 {
			return false
		}
		in = insts[0]
		if in.Status.Phase == api.PhaseFailed {
			p.t.Fatalf("%s failed: %s %s", name, in.Status.Reason, in.Status.Message)
		}
		return in.Status.Phase == api.PhaseRunning && in.Status.IP != ""
	})
	return in
}

// canAs runs sh -c script in the tenant's instance and reports whether it
// exited 0.
func (p *platform) canAs(token, name, script string) bool {
	p.t.Helper()
	return p.asTenant(token, "exec", name, "sh", "-c", script).code == 0
}

// hostService listens on addr (a host address, port 0) with a listener
// of the test's own and returns where.
func hostService(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host service\n")
			c.Close()
		}
	}()
	return l.Addr().String()
}

// hostIP is an address of the host's own beyond the bridges: the source
// address of its default route, or of any up interface that is not a
// bridge of ours or loopback.
func hostIP(t *testing.T) string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Type() == "bridge" || l.Type() == "veth" || l.Attrs().Flags&net.FlagLoopback != 0 || l.Attrs().Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				return a.IP.String()
			}
		}
	}
	t.Skip("the host has no address beyond loopback and bridges")
	return ""
}

var nsSeq int

// outsideNet is a network namespace joined to the host by a veth of the
// test's own, standing for a machine beyond the host (or, with an extra
// address, a link-local metadata service); it serves TCP on port 7000 and
// returns the namespace's path and address.
func outsideNet(t *testing.T, prefix string) (nsPath, addr string) {
	t.Helper()
	nsSeq++
	n := (os.Getpid()*3+nsSeq)%250 + 1
	name := fmt.Sprintf("kit%d-%d", os.Getpid()%100000, nsSeq)
	veth := fmt.Sprintf("kio%d", (os.Getpid()*3+nsSeq)%100000)
	host, peer := fmt.Sprintf("%s.%d.1", prefix, n), fmt.Sprintf("%s.%d.2", prefix, n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", veth).Run()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	run("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
	run("addr", "add", host+"/24", "dev", veth)
	run("link", "set", veth, "up")
	run("-n", name, "addr", "add", peer+"/24", "dev", "eth0")
	run("-n", name, "link", "set", "eth0", "up")
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "route", "add", "default", "via", host)
	nsPath = "/run/netns/" + name
	var l net.Listener
	if err := cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", ":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "outside\n")
			c.Close()
		}
	}()
	return nsPath, peer
}

// metadataService is a stand-in for a cloud metadata service: an address
// of 169.254.0.0/16 (never the machine's real 169.254.169.254) in a
// namespace of the test's own, routed from the host, serving port 7000.
func metadataService(t *testing.T) string {
	t.Helper()
	ns, _ := outsideNet(t, "10.233")
	a := fmt.Sprintf("169.254.%d.%d", os.Getpid()%250+1, nsSeq%250+1)
	if out, err := exec.Command("ip", "-n", filepath.Base(ns), "addr", "add", a+"/32", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	dev, err := exec.Command("sh", "-c", "ip -o route get "+strings.Split(mustPeer(t, ns), "/")[0]+" | awk '{print $3}'").Output()
	if err != nil {
		t.Fatal(err)
	}
	veth := strings.TrimSpace(string(dev))
	if out, err := exec.Command("ip", "route", "add", a+"/32", "dev", veth).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", a+"/32").Run() })
	return net.JoinHostPort(a, "7000")
}

func mustPeer(t *testing.T, ns string) string {
	out, err := exec.Command("ip", "-n", filepath.Base(ns), "-4", "-o", "addr", "show", "dev", "eth0").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	for i, x := range f {
		if x == "inet" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no address in %s", ns)
	return ""
}

var (
	probeOnce sync.Once
	probeTar  string
	probeErr  error
)

// netprobeImage builds kanga.test/netprobe: the busybox test image with
// hack/netprobe (static) as /bin/netprobe, for probes busybox cannot
// make (hand-made frames, UDP echo); it returns the OCI archive.
func netprobeImage(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kanga-netprobe-")
		if err != nil {
			probeErr = err
			return
		}
		bin := filepath.Join(dir, "netprobe")
		cmd := exec.Command("go", "build", "-o", bin, "./hack/netprobe")
		cmd.Dir = testenv.RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("building netprobe: %v\n%s", err, out)
			return
		}
		probeTar, probeErr = buildProbeImage(filepath.Join(testenv.Images(t), testimage.DockerArchiveFile), bin, filepath.Join(dir, "netprobe.tar"))
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return probeTar
}

func buildProbeImage(base, bin, out string) (string, error) {
	img, err := tarball.ImageFromPath(base, nil)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "bin/netprobe", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return "", err
	}
	if _, err := tw.Write(data); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return "", err
	}
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.Config.Entrypoint = []string{"/bin/netprobe"}
	cf.Config.Cmd = []string{"serve"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := testimage.WriteOCIArchive(f, img, "kanga.test/netprobe:latest"); err != nil {
		return "", err
	}
	return out, f.Close()
}

// neighbourMAC is the host's neighbour entry for ip on bridge, "" if none.
func neighbourMAC(t *testing.T, bridge, ip string) string {
	t.Helper()
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.IP.String() == ip && n.HardwareAddr != nil {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// instanceMAC reads eth0's MAC inside the tenant's instance.
func (p *platform) instanceMAC(token, name string) string {
	p.t.Helper()
	return strings.TrimSpace(p.mustAs(token, "exec", name, "cat", "/sys/class/net/eth0/address"))
}
