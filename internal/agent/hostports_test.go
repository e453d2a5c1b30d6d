package agent

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
	"github.com/kanga-run/kanga/internal/model"
)

func TestHostListeners(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	// A connected UDP socket takes no new traffic: not a listener.
	uc, err := net.Dial("udp", ul.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	want := map[api.PortMapping]bool{
		{HostIP: "127.0.0.1", HostPort: tl.Addr().(*net.TCPAddr).Port, Protocol: "tcp"}:      true,
		{HostIP: "127.0.0.1", HostPort: ul.LocalAddr().(*net.UDPAddr).Port, Protocol: "udp"}: true,
	}
	notWant := api.PortMapping{HostIP: "127.0.0.1", HostPort: uc.LocalAddr().(*net.UDPAddr).Port, Protocol: "udp"}
	if l6, err := net.Listen("tcp6", "[::]:0"); err == nil {
		defer l6.Close()
		// Dual-stack: every IPv4 address too.
		want[api.PortMapping{HostPort: l6.Addr().(*net.TCPAddr).Port, Protocol: "tcp"}] = true
	}
	ls, err := hostListeners()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		delete(want, l)
		if l == notWant {
			t.Errorf("the connected UDP socket %s is listed as a listener", model.PortString(l))
		}
	}
	for w := range want {
		t.Errorf("listener %s not found", model.PortString(w))
	}
}

func TestCheckHostPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	pol := model.DefaultPortPolicy()
	pol.Reserve("the host API", 7422)
	a := New(Config{HostName: "h1", Ports: pol})
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	for _, tc := range []struct {
		name string
		port api.PortMapping
		code error
		want string
	}{
		{"free on loopback", api.PortMapping{HostIP: "127.0.0.1", HostPort: free(), Protocol: "tcp"}, nil, ""},
		{"free on another loopback address", api.PortMapping{HostIP: "127.0.0.2", HostPort: busy, Protocol: "tcp"}, nil, ""},
		{"another protocol", api.PortMapping{HostIP: "127.0.0.1", HostPort: busy, Protocol: "udp"}, nil, ""},
		{"a listener's", api.PortMapping{HostIP: "127.0.0.1", HostPort: busy, Protocol: "tcp"}, errdefs.ErrConflict, "a process on host h1"},
		{"a listener's, every address", api.PortMapping{HostPort: busy, Protocol: "tcp"}, errdefs.ErrConflict, "in use"},
		{"not an address of the host", api.PortMapping{HostIP: "192.0.2.1", HostPort: free(), Protocol: "tcp"}, errdefs.ErrInvalidArgument, "spec.ports[0].hostIP 192.0.2.1 is not an address of host h1"},
		{"reserved", api.PortMapping{HostIP: "127.0.0.1", HostPort: 7422, Protocol: "tcp"}, errdefs.ErrInvalidArgument, "the host API"},
		{"privileged", api.PortMapping{HostIP: "127.0.0.1", HostPort: 81, Protocol: "tcp"}, errdefs.ErrInvalidArgument, "privileged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.CheckPorts(context.Background(), []api.PortMapping{tc.port})
			if tc.code == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want %v with %q", err, tc.code, tc.want)
			}
		})
	}
}

// TestAdmitStartPorts: the host keeps one instance per host port, whatever
// the control plane placed, and an instance an earlier agent left running
// holds its ports from the start.
func TestAdmitStartPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // free, but for the instances below
	a := New(Config{HostName: "h1"})
	close(a.adopted)
	inst := func(tenant, name, uid string, phase api.Phase) *api.Instance {
		return &api.Instance{Tenant: tenant, Name: name, UID: uid, Status: api.InstanceStatus{Phase: phase},
			Spec: api.InstanceSpec{Ports: []api.PortMapping{{HostIP: "127.0.0.1", HostPort: port, Protocol: "tcp"}}}}
	}
	add := func(i *api.Instance) *runner {
		r := newRunner(a, i)
		a.mu.Lock()
		a.runners[i.UID] = r
		a.mu.Unlock()
		return r
	}
	ctx := context.Background()
	first := inst("t1", "first", "u1", api.PhasePending)
	if reason, err := add(first).admitStart(ctx, first); err != nil {
		t.Fatalf("first: %s: %v", reason, err)
	}
	second := inst("t2", "second", "u2", api.PhasePending)
	reason, err := add(second).admitStart(ctx, second)
	if reason != reasonPortInUse || !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "an instance of another tenant") || strings.Contains(err.Error(), "first") {
		t.Fatalf("second: %s: %v", reason, err)
	}
	// The refused one holds nothing: a third of t1 is refused for first
	// only, by name.
	third := inst("t1", "third", "u3", api.PhasePending)
	if _, err := add(third).admitStart(ctx, third); err == nil || !strings.Contains(err.Error(), `instance "first"`) {
		t.Fatalf("third: %v", err)
	}
	a.mu.Lock()
	delete(a.runners, "u1") // first is gone
	a.mu.Unlock()
	adopted := inst("t2", "adopted", "u4", api.PhaseRunning)
	add(adopted)
	if _, err := add(third).admitStart(ctx, third); err == nil || !strings.Contains(err.Error(), "another tenant") {
		t.Fatalf("third against an adopted instance: %v", err)
	}
}
