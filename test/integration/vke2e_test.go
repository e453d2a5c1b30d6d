package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	vke2e "github.com/virtual-kubelet/virtual-kubelet/test/e2e"
	"github.com/vishvananda/netlink"

	"github.com/kanga-run/kanga/internal/testenv/harness"
	"github.com/kanga-run/kanga/internal/testenv/testimage"
)

// vkE2ESkipped are the tests of virtual-kubelet's provider suite that
// cannot run here, each with the reason; the suite's own ShouldSkipTest
// switch skips them. docs/virtual-node.md publishes the table.
var vkE2ESkipped = map[string]string{
	// Both read the node's stats through the API server's proxy to a pod
	// named as the node on port 10250 (pods/https:NODE:10250/proxy): the
	// suite assumes the virtual kubelet runs as a pod of the cluster
	// under test (its skaffold deployment). Kanga's virtual node is a
	// process beside the cluster. TestVirtualNode reads the same
	// endpoints straight from the node and checks every container.
	"TestGetStatsSummary":    "stats read through the proxy of a pod named as the node, which assumes the node runs as a pod",
	"TestGetMetricsResource": "stats read through the proxy of a pod named as the node, which assumes the node runs as a pod",
}

// TestVirtualKubeletE2E runs virtual-kubelet's importable end-to-end
// suite (github.com/virtual-kubelet/virtual-kubelet/test/e2e, at go.mod's
// version, unmodified) against `kanga virtual-node` on a real
// kube-apiserver and a real Kanga platform.
func TestVirtualKubeletE2E(t *testing.T) {
	bin := k8sBinaries(t)
	p := startPlatform(t)
	// The suite's pods run the image "foo" and must become Ready: httpd,
	// under that name (docker.io/library/foo:latest), imported, never
	// pulled.
	foo := filepath.Join(t.TempDir(), "foo.tar")
	retag(t, p.imagePath(testimage.Httpd.File), foo, "docker.io/library/foo:latest")
	p.must("image", "import", foo)
	cp := startControlPlane(t, bin)

	// The suite lists the node's pods through the API server's node
	// proxy, which refuses loopback addresses: the node listens on an
	// address of this host on an interface of its own (a bridge without
	// ports: this kernel has no dummy interfaces), from the benchmarking
	// range 198.18.0.0/15, which the kernel delivers locally.
	addr := nodeAddress(t, "kanga-vke2e", "198.18.255.1")
	const node = "kanga-vke2e"
	vn := &virtualNode{
		t: t, p: p, logPath: filepath.Join(t.TempDir(), "virtual-node.log"),
		args: []string{"virtual-node", "--kubeconfig", cp.kubeconfig, "--name", node,
			"--addr", addr, "--port", strconv.Itoa(harness.FreePort(t)), "--cpu", "8", "--memory", "16Gi", "--pods", "100"},
	}
	vn.start()
	t.Cleanup(func() {
		vn.kill()
		if t.Failed() {
			t.Logf("virtual-node log:\n%s", harness.Tail(vn.log(), 6000))
		}
	})

	vke2e.NewEndToEndTestSuite(vke2e.EndToEndTestSuiteConfig{
		Kubeconfig:   cp.kubeconfig,
		Namespace:    "default",
		NodeName:     node,
		WatchTimeout: 3 * time.Minute,
		ShouldSkipTest: func(name string) bool {
			_, skip := vkE2ESkipped[name]
			return skip
		},
	}).Run(t)
}

// retag writes the OCI archive src as dst with the image named ref.
func retag(t *testing.T, src, dst, ref string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := testimage.Retag(out, in, ref); err != nil {
		t.Fatal(err)
	}
}

// nodeAddress gives this host the address ip on an interface name of its
// own (a bridge without ports), removed when the test ends, and returns it.
func nodeAddress(t *testing.T, name, ip string) string {
	t.Helper()
	link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(link); err != nil {
		t.Fatalf("add interface %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("remove interface %s: %v", name, err)
		}
	})
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return ip
}
