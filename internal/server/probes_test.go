package server

import (
	"slices"
	"testing"
)

// TestCreateInstanceBadProbes: a bad probe is a 400 naming its field, and
// nothing is stored.
func TestCreateInstanceBadProbes(t *testing.T) {
	e := newEnv(t, 0)
	before := e.storedNames(t, e.a)
	spec := func(probe string) string {
		return `{"name":"x","spec":{"containers":[{"image":"` + imgBusybox + `",` + probe + `}]}}`
	}
	for _, tt := range []struct {
		name, body string
		msgs       []string
	}{
		{"port out of range", spec(`"readinessProbe":{"httpGet":{"port":65536}}`),
			[]string{"spec.containers[0].readinessProbe.httpGet.port", "65536"}},
		{"no handler", spec(`"livenessProbe":{"periodSeconds":5}`),
			[]string{"spec.containers[0].livenessProbe", "no handler"}},
		{"two handlers", spec(`"startupProbe":{"exec":{"command":["true"]},"grpc":{"port":9090}}`),
			[]string{"spec.containers[0].startupProbe", "exec and grpc"}},
		{"negative threshold", spec(`"livenessProbe":{"tcpSocket":{"port":80},"failureThreshold":-1}`),
			[]string{"spec.containers[0].livenessProbe.failureThreshold", "-1"}},
		{"unknown scheme", spec(`"readinessProbe":{"httpGet":{"port":80,"scheme":"GOPHER"}}`),
			[]string{"spec.containers[0].readinessProbe.httpGet.scheme", "GOPHER"}},
		{"host", spec(`"readinessProbe":{"httpGet":{"port":80,"host":"169.254.169.254"}}`),
			[]string{"spec.containers[0].readinessProbe.httpGet.host", "not allowed"}},
		{"unknown probe type", spec(`"livenessProbe":{"udpSocket":{"port":53}}`),
			[]string{"udpSocket"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/instances", e.a.token, tt.body)
			wantError(t, r, 400, "InvalidArgument", tt.msgs...)
			if after := e.storedNames(t, e.a); !slices.Equal(after, before) {
				t.Errorf("a rejected create changed the store: instances %v, before %v", after, before)
			}
		})
	}
}
