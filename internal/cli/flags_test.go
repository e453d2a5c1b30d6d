package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kanga-run/kanga/api"
)

func TestParsePort(t *testing.T) {
	tests := []struct {
		in      string
		want    api.PortMapping
		wantErr string
	}{
		{in: "8080:80", want: api.PortMapping{HostPort: 8080, ContainerPort: 80}},
		{in: "8080:80/tcp", want: api.PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
		{in: "53:53/UDP", want: api.PortMapping{HostPort: 53, ContainerPort: 53, Protocol: "udp"}},
		{in: "127.0.0.1:8080:80", want: api.PortMapping{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80}},
		{in: "[::1]:8080:80/udp", want: api.PortMapping{HostIP: "::1", HostPort: 8080, ContainerPort: 80, Protocol: "udp"}},
		{in: "80", wantErr: "need a host port and a container port"},
		{in: "", wantErr: "need a host port"},
		{in: "a:80", wantErr: `host port "a" is not a number`},
		{in: "8080:0", wantErr: "container port"},
		{in: "8080:65536", wantErr: "container port"},
		{in: "8080:80/sctp", wantErr: "protocol must be tcp or udp"},
		{in: "8080:80/", wantErr: "protocol must be tcp or udp"},
		{in: "localhost:8080:80", wantErr: `"localhost" is not an IP address`},
		{in: "1.2.3.4:5:6:7", wantErr: "need a host port"},
		{in: "[::1:8080:80", wantErr: "unterminated"},
		{in: "[1.2.3.4]:8080:80", wantErr: "not an IPv6 address"},
	}
	for _, tt := range tests {
		got, err := parsePort(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "[IP:]HOSTPORT:PORT") {
				t.Errorf("parsePort(%q) error = %v, want one containing %q and the expected format", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parsePort(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "HOME" {
			return "/home/me", true
		}
		return "", false
	}
	tests := []struct {
		in      []string
		want    []api.EnvVar
		wantErr string
	}{
		{in: nil, want: nil},
		{in: []string{"A=1", "B=x=y", "C="}, want: []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "x=y"}, {Name: "C", Value: ""}}},
		{in: []string{"HOME"}, want: []api.EnvVar{{Name: "HOME", Value: "/home/me"}}},
		{in: []string{"UNSET"}, wantErr: "expected KEY=VALUE"},
		{in: []string{"=1"}, wantErr: "expected KEY=VALUE"},
		{in: []string{""}, wantErr: "expected KEY=VALUE"},
		{in: []string{"A B=1"}, wantErr: "expected KEY=VALUE"},
	}
	for _, tt := range tests {
		got, err := parseEnv(tt.in, lookup)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseEnv(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseEnv(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseRestart(t *testing.T) {
	tests := map[string]api.RestartPolicy{
		"no": api.RestartNever, "never": api.RestartNever, "Never": api.RestartNever,
		"on-failure": api.RestartOnFailure, "OnFailure": api.RestartOnFailure,
		"always": api.RestartAlways, "Always": api.RestartAlways,
		"sometimes": "", "unless-stopped": "", "": "",
	}
	for in, want := range tests {
		got, err := parseRestart(in)
		if want == "" {
			if err == nil || !strings.Contains(err.Error(), "expected no, on-failure or always") {
				t.Errorf("parseRestart(%q) = %q, %v; want an error", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("parseRestart(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestContainerName(t *testing.T) {
	tests := map[string]string{
		"busybox":                             "busybox",
		"busybox:1.36":                        "busybox",
		"127.0.0.1:5000/library/busybox:1.36": "busybox",
		"localhost:5000/my_app@sha256:abcd":   "my-app",
		"registry/Org/Web.Server:v2":          "web-server",
		"_":                                   "main",
		strings.Repeat("a", 70):               strings.Repeat("a", 63),
	}
	for in, want := range tests {
		if got := containerName(in); got != want {
			t.Errorf("containerName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildRunRequest(t *testing.T) {
	dir := t.TempDir()
	specFile := filepath.Join(dir, "spec.json")
	spec := `{"name":"fromfile","spec":{"containers":[{"name":"a","image":"busybox"},{"name":"b","image":"nginx"}],"restartPolicy":"Always"}}`
	if err := os.WriteFile(specFile, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	typoFile := filepath.Join(dir, "typo.json")
	os.WriteFile(typoFile, []byte(`{"spec":{"containers":[{"name":"a","image":"x"}],"restart":"Always"}}`), 0o600)
	emptyFile := filepath.Join(dir, "empty.json")
	os.WriteFile(emptyFile, []byte(`{"name":"x","spec":{}}`), 0o600)

	busybox := func(mod func(*api.ContainerSpec)) api.ContainerSpec {
		c := api.ContainerSpec{Name: "busybox", Image: "busybox"}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		args    []string
		stdin   string
		want    api.CreateInstanceRequest
		wantErr string
	}{
		{
			name: "image only",
			args: []string{"busybox"},
			want: api.CreateInstanceRequest{Spec: api.InstanceSpec{Containers: []api.ContainerSpec{busybox(nil)}}},
		},
		{
			name: "resource spec",
			args: []string{"--cpu", "1", "--cpu-policy", "dedicated", "--pids", "64", "--disk-write-iops", "200",
				"--disk-read-bps", "2Mi", "--bandwidth", "8M", "--egress-bandwidth", "16M", "--type", "k1.small", "busybox"},
			want: api.CreateInstanceRequest{Spec: api.InstanceSpec{
				Containers:   []api.ContainerSpec{busybox(nil)},
				InstanceType: "k1.small",
				Resources: api.Resources{CPU: "1", CPUPolicy: "dedicated", Pids: 64, DiskWriteIOPS: 200, DiskReadBPS: "2Mi",
					IngressBandwidth: "8M", EgressBandwidth: "16M"},
			}},
		},
		{
			name: "flags after the image belong to the command",
			args: []string{"--name", "web", "-e", "A=1", "-w", "/srv", "--cpu", "0.5", "--memory", "256Mi", "--restart", "on-failure",
				"--runtime", "crun", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "busybox", "sh", "-c", "echo -e hi --name x"},
			want: api.CreateInstanceRequest{
				Name: "web",
				Spec: api.InstanceSpec{
					Containers: []api.ContainerSpec{busybox(func(c *api.ContainerSpec) {
						c.Args = []string{"sh", "-c", "echo -e hi --name x"}
						c.Env = []api.EnvVar{{Name: "A", Value: "1"}}
						c.WorkingDir = "/srv"
					})},
					Resources:     api.Resources{CPU: "0.5", Memory: "256Mi"},
					RestartPolicy: api.RestartOnFailure,
					Runtime:       "crun",
					Ports: []api.PortMapping{
						{HostPort: 8080, ContainerPort: 80},
						{HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 53, Protocol: "udp"},
					},
				},
			},
		},
		{
			name: "entrypoint",
			args: []string{"--entrypoint", "/bin/echo", "busybox", "hello"},
			want: api.CreateInstanceRequest{Spec: api.InstanceSpec{Containers: []api.ContainerSpec{busybox(func(c *api.ContainerSpec) {
				c.Command = []string{"/bin/echo"}
				c.Args = []string{"hello"}
			})}}},
		},
		{
			name: "file with overrides",
			args: []string{"-f", specFile, "--name", "over", "--memory", "64Mi", "--restart", "no", "-p", "1:2"},
			want: api.CreateInstanceRequest{Name: "over", Spec: api.InstanceSpec{
				Containers:    []api.ContainerSpec{{Name: "a", Image: "busybox"}, {Name: "b", Image: "nginx"}},
				Resources:     api.Resources{Memory: "64Mi"},
				RestartPolicy: api.RestartNever,
				Ports:         []api.PortMapping{{HostPort: 1, ContainerPort: 2}},
			}},
		},
		{
			name:  "file from stdin",
			args:  []string{"-f", "-"},
			stdin: spec,
			want: api.CreateInstanceRequest{Name: "fromfile", Spec: api.InstanceSpec{
				Containers:    []api.ContainerSpec{{Name: "a", Image: "busybox"}, {Name: "b", Image: "nginx"}},
				RestartPolicy: api.RestartAlways,
			}},
		},
		{
			name: "placement",
			args: []string{"--host-selector", "zone=a", "--host-selector", "disk=ssd", "--scheduling-policy", "spread", "busybox"},
			want: api.CreateInstanceRequest{Spec: api.InstanceSpec{
				Containers:       []api.ContainerSpec{busybox(nil)},
				HostSelector:     map[string]string{"zone": "a", "disk": "ssd"},
				SchedulingPolicy: "spread",
			}},
		},
		{name: "bad host selector", args: []string{"--host-selector", "zone", "busybox"}, wantErr: "give KEY=VALUE"},
		{name: "no image", args: []string{"--name", "x"}, wantErr: "run needs an IMAGE"},
		{name: "bad port", args: []string{"-p", "80", "busybox"}, wantErr: "expected [IP:]HOSTPORT:PORT"},
		{name: "bad env", args: []string{"-e", "=x", "busybox"}, wantErr: "expected KEY=VALUE"},
		{name: "bad restart", args: []string{"--restart", "maybe", "busybox"}, wantErr: "expected no, on-failure or always"},
		{name: "file and image", args: []string{"-f", specFile, "busybox"}, wantErr: "give no IMAGE"},
		{name: "file and env", args: []string{"-f", specFile, "-e", "A=1"}, wantErr: "--env sets a field of one container"},
		{name: "file with unknown field", args: []string{"-f", typoFile}, wantErr: `unknown field "restart"`},
		{name: "file without containers", args: []string{"-f", emptyFile}, wantErr: "has no containers"},
		{name: "missing file", args: []string{"-f", filepath.Join(dir, "nope.json")}, wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, f := runCommandWithFlags(&options{})
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := buildRunRequest(f, cmd.Flags().Changed, cmd.Flags().Args(), strings.NewReader(tt.stdin), func(string) (string, bool) { return "", false })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestHumanize(t *testing.T) {
	durations := map[time.Duration]string{
		0:                        "Less than a second",
		time.Second:              "1 second",
		5 * time.Second:          "5 seconds",
		90 * time.Second:         "About a minute",
		45 * time.Minute:         "45 minutes",
		70 * time.Minute:         "About an hour",
		5 * time.Hour:            "5 hours",
		72 * time.Hour:           "3 days",
		21 * 24 * time.Hour:      "3 weeks",
		90 * 24 * time.Hour:      "3 months",
		3 * 365 * 24 * time.Hour: "3 years",
	}
	for d, want := range durations {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
	sizes := map[int64]string{0: "0B", 999: "999B", 1234: "1.23kB", 4_260_000: "4.26MB", 12_345_678_901: "12.3GB"}
	for n, want := range sizes {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
