package image

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kanga-run/kanga/errdefs"
)

func TestPublicUnicast(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"8.8.8.8", true},
		{"151.101.1.1", true},
		{"2606:4700::1111", true},
		{"127.0.0.1", false},
		{"127.9.9.9", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"fe80::1", false},
		{"fd00::1", false},
		{"100.64.0.1", false},
		{"192.0.0.170", false},
		{"198.18.0.1", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"64:ff9b::7f00:1", false},   // NAT64 of 127.0.0.1
		{"64:ff9b::808:808", true},   // NAT64 of 8.8.8.8
		{"2002:a9fe:a9fe::1", false}, // 6to4 of 169.254.169.254
	}
	for _, tt := range tests {
		if got := publicUnicast(netip.MustParseAddr(tt.ip).Unmap()); got != tt.want {
			t.Errorf("publicUnicast(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
}

func TestGuardCheck(t *testing.T) {
	g := &dialGuard{ownAddrs: func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.ParseIP("203.0.114.7"), Mask: net.CIDRMask(24, 32)}}, nil
	}}
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8:443", true},
		{"203.0.114.8:443", true},
		{"203.0.114.7:443", false}, // the host's own public address
		{"127.0.0.1:5000", false},
		{"[::1]:443", false},
		{"10.211.0.5:80", false},
		{"169.254.169.254:80", false},
		{"nonsense", false},
	} {
		err := g.check(tt.addr)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, errBlocked)) {
			t.Errorf("check(%s) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func TestParseInsecureRegistries(t *testing.T) {
	got, err := ParseInsecureRegistries([]string{"127.0.0.1:5000", "Registry.Local", "[::1]:5000", "reg:80"})
	if err != nil || strings.Join(got, ",") != "127.0.0.1:5000,registry.local,[::1]:5000,reg:80" {
		t.Errorf("= %v, %v", got, err)
	}
	for _, bad := range []string{"", "http://127.0.0.1:5000", "127.0.0.1:5000/path", "host:0", "host:99999", ":5000", "::1"} {
		if _, err := ParseInsecureRegistries([]string{bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseInsecureRegistries(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

// listener counts the connections it accepts, and answers each like a
// web server that is not a registry.
type listener struct {
	addr    string
	accepts atomic.Int32
}

func countingListener(t *testing.T) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepts.Add(1)
			_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestPullsCannotReachLoopback is finding 9 below the API: a reference at
// a loopback port reaches nothing, whether the port is open or closed, and
// the error a tenant sees is the same for both; a redirect from a registry
// the operator allowed to another loopback port is refused at dial time.
func TestPullsCannotReachLoopback(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Service{log: quiet}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	open := countingListener(t)
	closed := closedPort(t)
	reg := newRegistries(nil, quiet)
	texts := map[string]string{}
	for _, addr := range []string{open.addr, closed} {
		name := addr + "/probe:v1"
		_, _, err := reg.resolver().Resolve(ctx, name)
		if err == nil {
			t.Fatalf("resolving %s worked", name)
		}
		err = s.classifyPull(name, err)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("pull %s: %v, want Unavailable", name, err)
		}
		texts[addr] = strings.ReplaceAll(err.Error(), addr, "ADDR")
	}
	if texts[open.addr] != texts[closed] {
		t.Errorf("an open and a closed port read differently:\n open:   %s\n closed: %s", texts[open.addr], texts[closed])
	}
	if n := open.accepts.Load(); n != 0 {
		t.Errorf("the open loopback port was connected to %d times", n)
	}

	// An allowed registry that redirects to another loopback port.
	target := countingListener(t)
	var asked atomic.Int32
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Redirect(w, r, "http://"+target.addr+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer fake.Close()
	allowed := strings.TrimPrefix(fake.URL, "http://")
	reg = newRegistries([]string{allowed}, quiet)
	if _, _, err := reg.resolver().Resolve(ctx, allowed+"/app:v1"); err == nil || !errors.Is(err, errBlocked) {
		t.Errorf("resolve through a redirect to %s: %v, want it blocked", target.addr, err)
	}
	if asked.Load() == 0 {
		t.Error("the allowed registry was never asked")
	}
	if n := target.accepts.Load(); n != 0 {
		t.Errorf("the redirect target was connected to %d times", n)
	}
}
