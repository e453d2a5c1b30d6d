package network

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/kanga-run/kanga/errdefs"
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
	if got.Name != "n9" || got.CNIVersion != cniVersion || len(got.Plugins) != 3 {
		t.Fatalf("unexpected conflist: %s", b)
	}
	br, pm, bw := got.Plugins[0], got.Plugins[1], got.Plugins[2]
	if br["type"] != "bridge" || br["bridge"] != "br9" || br["isGateway"] != true || br["ipMasq"] != false {
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
	if bw["type"] != "bandwidth" || bw["capabilities"].(map[string]any)["bandwidth"] != true {
		t.Errorf("bandwidth plugin: %v", bw)
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

func TestRenderResolvConf(t *testing.T) {
	const header = "# Generated by Kanga from the host's /etc/resolv.conf.\n"
	const none = "# The host lists no nameserver an instance can reach (loopback and IPv6\n" +
		"# resolvers are not reachable from the instance network), so none is set.\n"
	tests := []struct {
		name string
		host string
		want string
	}{
		{
			name: "plain",
			host: "nameserver 10.255.255.53\n",
			want: header + "nameserver 10.255.255.53\n",
		},
		{
			name: "loopback dropped, search and options kept",
			host: "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch example.com corp\noptions edns0 trust-ad\n",
			want: header + "nameserver 192.0.2.1\nsearch example.com corp\noptions edns0 trust-ad\n",
		},
		{
			name: "only loopback and ipv6",
			host: "nameserver 127.0.0.1\nnameserver ::1\nnameserver 2001:db8::53\nsearch lan\n",
			want: header + none + "search lan\n",
		},
		{
			name: "empty host file",
			host: "",
			want: header + none,
		},
		{
			name: "junk ignored",
			host: "nameserver\nnameserver not-an-ip\n; old comment\nsortlist 10.0.0.0\nnameserver 198.51.100.7 \n",
			want: header + "nameserver 198.51.100.7\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(renderResolvConf([]byte(tt.host))); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestResolvConfMissingHostFile(t *testing.T) {
	b, err := ResolvConf(filepath.Join(t.TempDir(), "absent"))
	if err != nil || !strings.Contains(string(b), "no nameserver") {
		t.Errorf("ResolvConf = %q, %v", b, err)
	}
}

func TestLimitsBandwidthArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      Limits
		want    string
		wantErr bool
	}{
		{name: "unlimited", in: Limits{}, want: "null"},
		{name: "egress only", in: Limits{EgressBPS: 8_000_000},
			want: `{"egressBurst":400000,"egressRate":8000000}`},
		{name: "both", in: Limits{IngressBPS: 1_000_000_000, EgressBPS: 100_000},
			want: `{"egressBurst":131072,"egressRate":100000,"ingressBurst":50000000,"ingressRate":1000000000}`},
		{name: "negative", in: Limits{IngressBPS: -1}, wantErr: true},
		{name: "too slow", in: Limits{EgressBPS: 100}, wantErr: true},
		{name: "too fast", in: Limits{EgressBPS: 1 << 40}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.validate()
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(tt.in.bandwidthArgs())
			if string(b) != tt.want {
				t.Errorf("got %s, want %s", b, tt.want)
			}
		})
	}
}

func TestHostLinks(t *testing.T) {
	sandbox := "/run/kanga/netns/x/i-1"
	res := &types100.Result{Interfaces: []*types100.Interface{
		{Name: "kanga0"},
		{Name: "veth1234abcd"},
		{Name: "eth0", Sandbox: sandbox},
		{Name: "bwp0123456789ab"},
	}}
	if v, i := hostLinks(res, "kanga0"); v != "veth1234abcd" || i != "bwp0123456789ab" {
		t.Errorf("hostLinks = %q, %q", v, i)
	}
	res.Interfaces = res.Interfaces[:3]
	if v, i := hostLinks(res, "kanga0"); v != "veth1234abcd" || i != "" {
		t.Errorf("hostLinks without ifb = %q, %q", v, i)
	}
}

// TestBuildPlainConfList: the list for attachments without ports or limits
// is the full list's bridge alone, under the same name, so both share the
// address leases.
func TestBuildConfListFor(t *testing.T) {
	c, err := Config{StateDir: "/state", Bridge: "br9", Subnet: "10.9.0.0/16", NetworkName: "n9"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	type list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	decode := func(raw []byte, err error) list {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var l list
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	full := decode(buildConfList(c))
	byType := map[string]map[string]any{}
	for _, p := range full.Plugins {
		byType[p["type"].(string)] = p
	}
	for _, tt := range []struct {
		e    extras
		want []string
	}{
		{extras{}, []string{"bridge"}},
		{extras{portmap: true}, []string{"bridge", "portmap"}},
		{extras{bandwidth: true}, []string{"bridge", "bandwidth"}},
		{extras{portmap: true, bandwidth: true}, []string{"bridge", "portmap", "bandwidth"}},
	} {
		got := decode(buildConfListFor(c, tt.e))
		if got.Name != full.Name || got.CNIVersion != full.CNIVersion {
			t.Errorf("%+v: list %s/%s, want %s/%s", tt.e, got.Name, got.CNIVersion, full.Name, full.CNIVersion)
		}
		var types []string
		for _, p := range got.Plugins {
			typ := p["type"].(string)
			types = append(types, typ)
			// Each plugin is configured exactly as in the full list.
			if !reflect.DeepEqual(p, byType[typ]) {
				t.Errorf("%+v: %s plugin %v differs from the full list's %v", tt.e, typ, p, byType[typ])
			}
		}
		if strings.Join(types, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%+v: plugins %v, want %v", tt.e, types, tt.want)
		}
	}
}

func TestSubnetAddresses(t *testing.T) {
	for _, tt := range []struct {
		subnet string
		want   int
	}{
		{"10.88.0.0/24", 253},
		{"10.88.0.0/22", 1021},
		{"10.88.0.0/16", 65533},
		{"10.88.0.0/30", 1},
		{"10.88.0.0/31", 0},
		{"10.0.0.0/1", 1<<30 - 3},
		{"fd00::/64", 0},
		{"not a subnet", 0},
	} {
		if got := subnetAddresses(tt.subnet); got != tt.want {
			t.Errorf("subnetAddresses(%q) = %d, want %d", tt.subnet, got, tt.want)
		}
	}
}

func TestResolvConfWith(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("nameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\noptions ndots:1 edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		s    DNSSettings
		want string
	}{
		{"merged", DNSSettings{
			Nameservers: []string{"192.0.2.2", "10.0.0.53", "10.0.0.54"},
			Searches:    []string{"svc.local", "corp.example"},
			Options:     []string{"ndots:5", "rotate"},
		}, "# Generated by Kanga from the host's /etc/resolv.conf and the instance's dnsConfig.\n" +
			"nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 10.0.0.53\n" + // at most 3, no duplicate
			"search corp.example svc.local\n" +
			"options edns0 ndots:5 rotate\n"},
		{"replaced", DNSSettings{Replace: true, Nameservers: []string{"10.0.0.53"}, Options: []string{"ndots:2"}},
			"# Generated by Kanga from the instance's dnsConfig.\nnameserver 10.0.0.53\noptions ndots:2\n"},
	}
	for _, tt := range tests {
		got, err := ResolvConfWith(host, tt.s)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tt.name, got, tt.want)
		}
	}
	// No settings: the host's, as ResolvConf renders it.
	plain, err := ResolvConfWith(host, DNSSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := ResolvConf(host); string(plain) != string(want) {
		t.Errorf("no settings changed the file:\n%s", plain)
	}
}
