package network

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnins "github.com/containernetworking/plugins/pkg/ns"
)

// "Outside" for the NAT test: a namespace of the test's own on a veth
// to the host, in a subnet of its own, with no route back to the instance
// subnet, so only masqueraded traffic can get an answer.
const (
	outsideHostVeth = "kangatout0"
	outsideHostAddr = "10.245.13.1"
	outsidePeerAddr = "10.245.13.2"
	outsidePrefix   = "/24"
)

// natRules is the nat table as iptables-save prints it.
func natRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		t.Fatalf("iptables-save -t nat: %v", err)
	}
	return string(out)
}

// masqLines returns the nat lines of the test subnet's masquerade: the
// jump and the chain's declaration and rules.
func masqLines(t *testing.T) (jumps, chain []string) {
	t.Helper()
	c := masqChain(testBridge)
	for _, l := range strings.Split(natRules(t), "\n") {
		switch {
		case strings.HasPrefix(l, "-A POSTROUTING") && strings.HasSuffix(l, "-j "+c):
			jumps = append(jumps, l)
		case strings.HasPrefix(l, "-A "+c+" "), strings.HasPrefix(l, ":"+c+" "):
			chain = append(chain, l)
		}
	}
	return jumps, chain
}

// makeOutside creates a namespace with addr outsidePeerAddr, linked to the
// host's outsideHostAddr, and removes both when the test ends.
func makeOutside(t *testing.T) cnins.NetNS {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outside")
	if err := createNetNS(path); err != nil {
		t.Fatal(err)
	}
	outside, err := cnins.GetNS(path)
	if err != nil {
		removeNetNS(path)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", outsideHostVeth).Run()
		outside.Close()
		if err := removeNetNS(path); err != nil {
			t.Error(err)
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("link", "add", outsideHostVeth, "type", "veth", "peer", "name", "eth0", "netns", outside.Path())
	run("addr", "add", outsideHostAddr+outsidePrefix, "dev", outsideHostVeth)
	run("link", "set", outsideHostVeth, "up")
	// Inside: the peer address and nothing else, no default route.
	err = outside.Do(func(cnins.NetNS) error {
		for _, args := range [][]string{
			{"addr", "add", outsidePeerAddr + outsidePrefix, "dev", "eth0"},
			{"link", "set", "eth0", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return outside
}

// serveRemoteAddr answers each connection with the address it came from.
func serveRemoteAddr(t *testing.T, ns cnins.NetNS, addr string) string {
	t.Helper()
	var l net.Listener
	err := ns.Do(func(cnins.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
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
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host+"\n")
			c.Close()
		}
	}()
	return l.Addr().String()
}

// dialFrom connects from inside nsPath to addr and returns the first line.
func dialFrom(t *testing.T, nsPath, addr string) (string, error) {
	t.Helper()
	var got string
	err := cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error {
		var err error
		// The bound only keeps a broken NAT from hanging the test for
		// the kernel's SYN retries; a working one answers at once.
		got, err = readHello(func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 10*time.Second) })
		return err
	})
	return got, err
}

// TestSubnetMasquerade: instances leave the subnet behind the host's
// address through one rule for the whole subnet, installed once however
// many instances there are, traffic inside the subnet keeps its source
// address, and the rule goes when the Manager closes with no instance
// left (and stays while one is).
func TestSubnetMasquerade(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	m := newTestManager(t, testConfig(t))

	ids := []string{fmt.Sprintf("kt-%d-ma", os.Getpid()), fmt.Sprintf("kt-%d-mb", os.Getpid())}
	var atts []*Attachment
	for _, id := range ids {
		att, err := m.Setup(ctx, id, nil, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Teardown(ctx, id, nil) })
		atts = append(atts, att)
	}

	jumps, chain := masqLines(t)
	if len(jumps) != 1 || !strings.Contains(jumps[0], "-s "+testSubnet+" ") ||
		!strings.Contains(jumps[0], masqChain(testBridge)) {
		t.Errorf("want one jump for %s, got %q", testSubnet, jumps)
	}
	wantChain := []string{
		":" + masqChain(testBridge) + " - [0:0]",
		"-A " + masqChain(testBridge) + " -d " + testSubnet + " -j ACCEPT",
		"-A " + masqChain(testBridge) + " ! -d " + multicastNet + " -j MASQUERADE",
	}
	if strings.Join(chain, "\n") != strings.Join(wantChain, "\n") {
		t.Errorf("masquerade chain:\n%s\nwant:\n%s", strings.Join(chain, "\n"), strings.Join(wantChain, "\n"))
	}
	// No per-instance chain (the bridge plugin's ipMasq) for either.
	nat := natRules(t)
	for _, id := range ids {
		if c := pluginMasqChain(testNetName, id); strings.Contains(nat, c) {
			t.Errorf("per-instance masquerade chain %s of %s exists", c, id)
		}
	}

	// Out of the subnet: the outside sees the host's address on its link.
	outside := makeOutside(t)
	addr := serveRemoteAddr(t, outside, net.JoinHostPort(outsidePeerAddr, "0"))
	if got, err := dialFrom(t, atts[0].NetNS, addr); err != nil || got != outsideHostAddr {
		t.Errorf("instance -> outside %s: seen as %q, %v; want %s (masqueraded)", addr, got, err, outsideHostAddr)
	}
	// Inside the subnet: the peer sees the instance's own address.
	peer, err := cnins.GetNS(atts[1].NetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	paddr := serveRemoteAddr(t, peer, net.JoinHostPort(atts[1].IP, "0"))
	if got, err := dialFrom(t, atts[0].NetNS, paddr); err != nil || got != atts[0].IP {
		t.Errorf("instance -> instance %s: seen as %q, %v; want %s (not masqueraded)", paddr, got, err, atts[0].IP)
	}

	// A second Manager on the same state (an agent restart) does not add
	// a second copy.
	m2, err := New(m.cfg)
	if err != nil {
		t.Fatal(err)
	}
	id3 := fmt.Sprintf("kt-%d-mc", os.Getpid())
	if _, err := m2.Setup(ctx, id3, nil, Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := m2.Teardown(ctx, id3, nil); err != nil {
		t.Fatal(err)
	}
	if jumps, _ := masqLines(t); len(jumps) != 1 {
		t.Errorf("after a second Manager's ADD: %d jumps, want 1: %q", len(jumps), jumps)
	}

	// Instances left: Close keeps their NAT.
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if jumps, chain := masqLines(t); len(jumps) != 1 || len(chain) != 3 {
		t.Errorf("Close with instances attached removed the masquerade: %q %q", jumps, chain)
	}
	if _, err := os.Stat(m.cfg.NetNSDir); err != nil {
		t.Errorf("Close with instances attached: namespace directory: %v", err)
	}

	for _, id := range ids {
		if err := m.Teardown(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if jumps, chain := masqLines(t); len(jumps) != 0 || len(chain) != 0 {
		t.Errorf("masquerade left after Close with no instance: %q %q", jumps, chain)
	}
	if _, err := os.Stat(m.cfg.NetNSDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("namespace directory %s after Close with no instance: %v, want it removed", m.cfg.NetNSDir, err)
	}
	// Closing again is fine.
	if err := m.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// pluginMasqChain is the bridge plugin's per-instance chain name
// (containernetworking/plugins pkg/utils.FormatChainName).
func pluginMasqChain(netName, id string) string {
	return fmt.Sprintf("CNI-%x", sha512.Sum512([]byte(netName+id)))[:28]
}

// An attachment an older agent made with the bridge plugin's per-instance
// masquerade is still torn down completely, chain included, even when its
// namespace is gone and the plugin cannot find the address to unmasquerade.
func TestTeardownPluginMasqAttachment(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cfg := testConfig(t)
	old := newTestManager(t, cfg)
	list := confList(old.cfg)
	list["plugins"] = list["plugins"].([]any)[:1]
	list["plugins"].([]any)[0].(map[string]any)["ipMasq"] = true
	b, err := encodeConfList(list)
	if err != nil {
		t.Fatal(err)
	}
	if old.lists[extras{}], err = libcni.ConfListFromBytes(b); err != nil {
		t.Fatal(err)
	}

	for _, lostNS := range []bool{false, true} {
		id := fmt.Sprintf("kt-%d-old-%t", os.Getpid(), lostNS)
		att, err := old.Setup(ctx, id, nil, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { old.Teardown(ctx, id, nil) })
		if c := pluginMasqChain(testNetName, id); !strings.Contains(natRules(t), ":"+c+" ") {
			t.Fatalf("old-style attachment has no chain %s:\n%s", c, natRules(t))
		}
		if lostNS {
			if err := removeNetNS(att.NetNS); err != nil {
				t.Fatal(err)
			}
		}
		cur, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := cur.Teardown(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		assertReleased(t, cur, id, att)
	}
}

// RemoveMasquerade takes the rule away without a Manager, twice over too.
func TestRemoveMasquerade(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	cfg, err := testConfig(t).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureMasquerade(ctx, cfg, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeMasquerade(ctx, cfg) })
	if jumps, chain := masqLines(t); len(jumps) != 1 || len(chain) != 3 {
		t.Fatalf("after ensure: %q %q", jumps, chain)
	}
	for range 2 {
		if err := RemoveMasquerade(ctx, testBridge, testSubnet); err != nil {
			t.Fatal(err)
		}
		if jumps, chain := masqLines(t); len(jumps) != 0 || len(chain) != 0 {
			t.Errorf("after RemoveMasquerade: %q %q", jumps, chain)
		}
	}
	if err := RemoveMasquerade(ctx, testBridge, "not-a-subnet"); err == nil {
		t.Error("RemoveMasquerade accepted a bad subnet")
	}
}
