package network

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/internal/errdefs"
)

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in      Config
		wantErr error
		check   func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			in:   Config{StateDir: "/var/lib/kanga/network"},
			check: func(t *testing.T, c Config) {
				if c.Bridge != DefaultBridge || c.Subnet != DefaultSubnet || c.NetworkName != DefaultNetworkName {
					t.Errorf("defaults not applied: %+v", c)
				}
				if !strings.HasPrefix(c.NetNSDir, defaultNetNSRoot+"/") {
					t.Errorf("NetNSDir = %q, want under %s", c.NetNSDir, defaultNetNSRoot)
				}
				if len(c.PluginDirs) != 2 {
					t.Errorf("PluginDirs = %v", c.PluginDirs)
				}
			},
		},
		{
			name: "netns dir differs per state dir",
			in:   Config{StateDir: "/a"},
			check: func(t *testing.T, c Config) {
				o, _ := Config{StateDir: "/b"}.withDefaults()
				if c.NetNSDir == o.NetNSDir {
					t.Errorf("two state dirs share NetNSDir %q", c.NetNSDir)
				}
			},
		},
		{
			name: "subnet normalised",
			in:   Config{StateDir: "/x", Subnet: "10.213.0.7/24"},
			check: func(t *testing.T, c Config) {
				if c.Subnet != "10.213.0.0/24" {
					t.Errorf("Subnet = %q", c.Subnet)
				}
			},
		},
		{name: "no state dir", in: Config{}, wantErr: errdefs.ErrInvalidArgument},
		{name: "bad subnet", in: Config{StateDir: "/x", Subnet: "10.0.0.0"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "ipv6 subnet", in: Config{StateDir: "/x", Subnet: "fd00::/64"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "tiny subnet", in: Config{StateDir: "/x", Subnet: "10.0.0.0/31"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "long bridge", in: Config{StateDir: "/x", Bridge: "a-very-long-bridge-name"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "bad network name", in: Config{StateDir: "/x", NetworkName: "a/b"}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.in.withDefaults()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestBuildConfList(t *testing.T) {
	c, err := Config{StateDir: "/state", Bridge: "br9", Subnet: "10.9.0.0/16", NetworkName: "n9"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildConfList(c)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "n9" || got.CNIVersion != cniVersion || len(got.Plugins) != 2 {
		t.Fatalf("unexpected conflist: %s", b)
	}
	br, pm := got.Plugins[0], got.Plugins[1]
	if br["type"] != "bridge" || br["bridge"] != "br9" || br["isGateway"] != true || br["ipMasq"] != true {
		t.Errorf("bridge plugin: %v", br)
	}
	ipam := br["ipam"].(map[string]any)
	if ipam["type"] != "host-local" || ipam["dataDir"] != "/state/ipam" {
		t.Errorf("ipam: %v", ipam)
	}
	if !strings.Contains(string(b), `"subnet": "10.9.0.0/16"`) {
		t.Errorf("subnet missing: %s", b)
	}
	if pm["type"] != "portmap" || pm["snat"] != true ||
		pm["capabilities"].(map[string]any)["portMappings"] != true {
		t.Errorf("portmap plugin: %v", pm)
	}
}

func TestPortMappings(t *testing.T) {
	tests := []struct {
		name    string
		in      []Port
		want    string
		wantErr bool
	}{
		{name: "none", in: nil, want: "null"},
		{name: "tcp default", in: []Port{{HostPort: 8080, ContainerPort: 80}},
			want: `[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]`},
		{name: "udp with host ip", in: []Port{{HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 5353, Protocol: "UDP"}},
			want: `[{"containerPort":5353,"hostIP":"127.0.0.1","hostPort":53,"protocol":"udp"}]`},
		{name: "bad protocol", in: []Port{{HostPort: 1, ContainerPort: 1, Protocol: "sctp"}}, wantErr: true},
		{name: "port zero", in: []Port{{HostPort: 0, ContainerPort: 1}}, wantErr: true},
		{name: "port too big", in: []Port{{HostPort: 1, ContainerPort: 70000}}, wantErr: true},
		{name: "bad host ip", in: []Port{{HostIP: "localhost", HostPort: 1, ContainerPort: 1}}, wantErr: true},
		{name: "ipv6 host ip", in: []Port{{HostIP: "::1", HostPort: 1, ContainerPort: 1}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pm, err := portMappings(tt.in)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(pm)
			if string(b) != tt.want {
				t.Errorf("got %s, want %s", b, tt.want)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{
		"i-0123abcd": true, "a": true, "a.b_c-d": true,
		"": false, "-a": false, "a/b": false, "..": false, "a b": false, strings.Repeat("a", 129): false,
	} {
		if err := checkID(id); (err == nil) != ok {
			t.Errorf("checkID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestIDLocksSerialise(t *testing.T) {
	var l idLocks
	u1 := l.lock("a")
	u2 := l.lock("b") // different id: must not block
	done := make(chan struct{})
	go func() {
		u := l.lock("a")
		u()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("second lock of the same id did not wait")
	default:
	}
	u1()
	<-done
	u2()
	if len(l.locks) != 0 {
		t.Errorf("locks leaked: %v", l.locks)
	}
}
