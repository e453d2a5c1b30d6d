package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/internal/agent/network"
)

func TestProcessArgs(t *testing.T) {
	ep, cmd := []string{"httpd", "-f"}, []string{"-p", "80"}
	for _, tc := range []struct {
		name string
		spec api.ContainerSpec
		want []string
	}{
		{"image defaults", api.ContainerSpec{}, []string{"httpd", "-f", "-p", "80"}},
		{"args replace cmd", api.ContainerSpec{Args: []string{"-p", "8080"}}, []string{"httpd", "-f", "-p", "8080"}},
		{"command replaces both", api.ContainerSpec{Command: []string{"sh"}}, []string{"sh"}},
		{"command and args", api.ContainerSpec{Command: []string{"sh"}, Args: []string{"-c", "true"}}, []string{"sh", "-c", "true"}},
	} {
		if got := processArgs(ep, cmd, tc.spec); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := processArgs(nil, nil, api.ContainerSpec{}); len(got) != 0 {
		t.Errorf("no entrypoint, cmd or command: got %q, want nothing", got)
	}
}

func TestWriteHosts(t *testing.T) {
	dir := t.TempDir()
	if err := writeHosts(dir, "web", "10.211.0.7"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "hosts"))
	if err != nil {
		t.Fatal(err)
	}
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.211.0.7\tweb\n"
	if string(b) != want {
		t.Fatalf("hosts = %q, want %q", b, want)
	}
}

func TestPoolable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   api.InstanceSpec
		limits network.Limits
		want   bool
	}{
		{"plain", api.InstanceSpec{}, network.Limits{}, true},
		{"published port", api.InstanceSpec{Ports: []api.PortMapping{{HostPort: 8080, ContainerPort: 80}}}, network.Limits{}, false},
		{"ingress limit", api.InstanceSpec{}, network.Limits{IngressBPS: 1e6}, false},
		{"egress limit", api.InstanceSpec{}, network.Limits{EgressBPS: 1e6}, false},
	} {
		if got := poolable(tc.spec, tc.limits); got != tc.want {
			t.Errorf("%s: poolable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNetID(t *testing.T) {
	a := New(Config{HostName: "h", DataDir: t.TempDir()})
	if got := a.netID("u1"); got != "u1" {
		t.Errorf("without a record: netID = %q, want the uid", got)
	}
	if err := a.writeNetID("u1", "pool-abc"); err != nil {
		t.Fatal(err)
	}
	// As a restarted agent sees it: from the file, not the cache.
	if got := New(Config{HostName: "h", DataDir: a.cfg.DataDir}).netID("u1"); got != "pool-abc" {
		t.Errorf("recorded: netID = %q, want pool-abc", got)
	}
	a.removeFiles("u1")
	if got := a.readNetID("u1"); got != "" {
		t.Errorf("after removeFiles the record is still there: %q", got)
	}
}

func TestContainerIDFitsContainerd(t *testing.T) {
	uid := "0123456789abcdef"
	long := strings.Repeat("a", 63)
	tests := []struct {
		name string
		want string // empty: only check the limits
	}{
		{name: "web", want: uid + "-web"},
		{name: strings.Repeat("b", 59), want: uid + "-" + strings.Repeat("b", 59)},
		{name: strings.Repeat("c", 60)},
		{name: long},
	}
	for _, tt := range tests {
		id := containerID(uid, tt.name)
		if len(id) > maxContainerID {
			t.Errorf("containerID(%d-char name) = %q: %d characters, containerd allows %d", len(tt.name), id, len(id), maxContainerID)
		}
		if tt.want != "" && id != tt.want {
			t.Errorf("containerID(%q) = %q, want %q", tt.name, id, tt.want)
		}
		if !strings.HasPrefix(id, uid+"-") {
			t.Errorf("containerID(%q) = %q does not start with the instance uid", tt.name, id)
		}
		if again := containerID(uid, tt.name); again != id {
			t.Errorf("containerID is not stable: %q then %q", id, again)
		}
	}
	// Two long names that share the kept prefix must not share an id.
	if a, b := containerID(uid, long), containerID(uid, long[:62]+"b"); a == b {
		t.Errorf("containerID gives %q to two names", a)
	}
}
