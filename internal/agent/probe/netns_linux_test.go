package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kanga-run/kanga/internal/agent/threadns"
)

// newNetNS makes a network namespace with its loopback up, bind-mounted
// on a file of dir, and a listener on 127.0.0.1 inside it that answers
// "netns" to each connection.
func newNetNS(t *testing.T, dir string) (path string, port int) {
	t.Helper()
	path = filepath.Join(dir, "ns")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- threadns.New(unix.CLONE_NEWNET, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ifr, err := unix.NewIfreq("lo")
			if err != nil {
				return err
			}
			if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
				return err
			}
			ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
				return err
			}
			if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return err
			}
			return unix.Mount(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()), path, "none", unix.MS_BIND, "")
		})
	}()
	if err := <-errc; err != nil {
		if l != nil {
			l.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		_ = unix.Unmount(path, unix.MNT_DETACH)
	})
	go serve(l, "netns")
	return path, l.Addr().(*net.TCPAddr).Port
}

func serve(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, name)
		c.Close()
	}
}

// TestNetnsDialerStaysInTheNamespace: a network probe connects inside
// the instance's namespace, to the instance's address whatever address
// it is given, never to the host's listener on the same port.
func TestNetnsDialerStaysInTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	nsPath, port := newNetNS(t, t.TempDir())
	host, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("the host's 127.0.0.1:%d is taken: %v", port, err)
	}
	defer host.Close()
	go serve(host, "host")

	dial := NetnsDialer(nsPath, "127.0.0.1")
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("192.0.2.1:%d", port)} {
		c, err := dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != "netns" {
			t.Errorf("dial %s reached %q (%v), want the namespace's listener", addr, b, err)
		}
	}
	// The dialling thread went back: the host's listener is still what
	// this process reaches.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "host" {
		t.Errorf("a plain dial after the probe reached %q, want the host's listener", b)
	}
}
