package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestPrintPorts(t *testing.T) {
	inst := api.Instance{Spec: api.InstanceSpec{Ports: []api.PortMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostIP: "127.0.0.1", HostPort: 5353, ContainerPort: 53, Protocol: "udp"},
		{HostIP: "::1", HostPort: 8443, ContainerPort: 443},
	}}}
	tests := []struct {
		arg     string
		want    string
		wantErr string
	}{
		{want: "80/tcp -> 0.0.0.0:8080\n53/udp -> 127.0.0.1:5353\n443/tcp -> [::1]:8443\n"},
		{arg: "80", want: "0.0.0.0:8080\n"},
		{arg: "80/TCP", want: "0.0.0.0:8080\n"},
		{arg: "53/udp", want: "127.0.0.1:5353\n"},
		{arg: "53", wantErr: "no public port '53/tcp' published for web"},
		{arg: "81/tcp", wantErr: "no public port '81/tcp' published for web"},
		{arg: "http", wantErr: `invalid port "http"`},
		{arg: "0", wantErr: `invalid port "0"`},
		{arg: "80/sctp", wantErr: `invalid port "80/sctp"`},
	}
	for _, tt := range tests {
		var want *portKey
		var err error
		if tt.arg != "" {
			var k portKey
			if k, err = parsePortKey(tt.arg); err == nil {
				want = &k
			}
		}
		var out bytes.Buffer
		if err == nil {
			err = printPorts(&out, inst, "web", want)
		}
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("port %q: error %v, want %q", tt.arg, err, tt.wantErr)
			}
			continue
		}
		if err != nil || out.String() != tt.want {
			t.Errorf("port %q = %q, %v; want %q", tt.arg, out.String(), err, tt.want)
		}
	}
}
