package model

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

func TestContainerCapabilities(t *testing.T) {
	caps := func(add, drop []string) *api.SecurityContext {
		return &api.SecurityContext{Capabilities: &api.Capabilities{Add: add, Drop: drop}}
	}
	for _, tc := range []struct {
		name string
		sc   *api.SecurityContext
		has  []string
		not  []string
		n    int
	}{
		{"default", nil, []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}, []string{"CAP_NET_RAW", "CAP_SYS_ADMIN"}, len(DefaultCapabilities)},
		{"drop one", caps(nil, []string{"chown"}), nil, []string{"CAP_CHOWN"}, len(DefaultCapabilities) - 1},
		{"drop all, add one", caps([]string{"NET_BIND_SERVICE"}, []string{"ALL"}), []string{"CAP_NET_BIND_SERVICE"}, []string{"CAP_CHOWN"}, 1},
		{"add one", caps([]string{"CAP_NET_ADMIN"}, nil), []string{"CAP_NET_ADMIN", "CAP_KILL"}, nil, len(DefaultCapabilities) + 1},
		{"add a default one", caps([]string{"kill"}, nil), []string{"CAP_KILL"}, nil, len(DefaultCapabilities)},
	} {
		got := ContainerCapabilities(tc.sc)
		for _, c := range tc.has {
			if !slices.Contains(got, c) {
				t.Errorf("%s: %v lacks %s", tc.name, got, c)
			}
		}
		for _, c := range tc.not {
			if slices.Contains(got, c) {
				t.Errorf("%s: %v has %s", tc.name, got, c)
			}
		}
		if len(got) != tc.n {
			t.Errorf("%s: %d capabilities %v, want %d", tc.name, len(got), got, tc.n)
		}
	}
}

func TestValidateSecurityContext(t *testing.T) {
	for _, tc := range []struct {
		sc   api.SecurityContext
		want string
	}{
		{api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"ALL"}}}, "capabilities.add[0] ALL"},
		{api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"NET_FLY"}}}, `capabilities.add[0] "NET_FLY"`},
		{api.SecurityContext{Capabilities: &api.Capabilities{Drop: []string{"chown", "x"}}}, `capabilities.drop[1] "x"`},
		{api.SecurityContext{SeccompProfile: &api.SeccompProfile{Type: "Localhost"}}, `seccompProfile.type "Localhost"`},
		{api.SecurityContext{Privileged: pt(true)}, "privileged: Kanga does not run privileged containers"},
		{api.SecurityContext{RunAsUser: pt(int64(-1))}, "runAsUser -1 is out of range"},
		{api.SecurityContext{RunAsUser: pt(int64(1 << 31))}, "runAsUser 2147483648 is out of range"},
		{api.SecurityContext{RunAsGroup: pt(int64(-5))}, "runAsGroup -5 is out of range"},
		{api.SecurityContext{SupplementalGroups: []int64{1, -2}}, "supplementalGroups[1] -2 is out of range"},
		{api.SecurityContext{SupplementalGroups: make([]int64, MaxSupplementalGroups+1)}, "supplementalGroups has 33 groups"},
		{api.SecurityContext{RunAsUser: pt(int64(0)), RunAsNonRoot: pt(true)}, "runAsNonRoot is set and runAsUser is 0"},
	} {
		s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox", SecurityContext: &tc.sc}}}
		Defaults(&s, "runc")
		err := Validate(&s)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "spec.containers[0].securityContext."+strings.SplitN(tc.want, ".", 2)[0]) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want an invalid argument with %q", tc.sc, err, tc.want)
		}
	}
}

func TestCheckSecurity(t *testing.T) {
	spec := func(sc *api.SecurityContext) *api.InstanceSpec {
		return &api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "i", SecurityContext: sc}}}
	}
	add := func(c ...string) *api.SecurityContext {
		return &api.SecurityContext{Capabilities: &api.Capabilities{Add: c}}
	}
	unconfined := &api.SecurityContext{SeccompProfile: &api.SeccompProfile{Type: api.SeccompUnconfined}}
	operator := SecurityBounds{Capabilities: []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}, Unconfined: true}
	granted := &api.TenantSecurity{AllowedCapabilities: []string{"CAP_NET_ADMIN"}, AllowUnconfined: true}
	escalate := &api.SecurityContext{AllowPrivilegeEscalation: pt(true)}
	escalating := SecurityBounds{PrivilegeEscalation: true}
	for _, tc := range []struct {
		name   string
		sc     *api.SecurityContext
		tenant *api.TenantSecurity
		bounds SecurityBounds
		want   string // empty: allowed
	}{
		{"default", nil, nil, SecurityBounds{}, ""},
		{"drop only", &api.SecurityContext{Capabilities: &api.Capabilities{Drop: []string{"ALL"}}}, nil, SecurityBounds{}, ""},
		{"a default capability", add("NET_BIND_SERVICE"), nil, SecurityBounds{}, ""},
		{"NET_RAW by default", add("NET_RAW"), nil, SecurityBounds{}, "may not add CAP_NET_RAW"},
		{"granted", add("net_admin"), granted, operator, ""},
		{"not granted to the tenant", add("NET_RAW"), granted, operator, "may not add CAP_NET_RAW"},
		{"granted, then the operator narrowed", add("NET_ADMIN"), granted, SecurityBounds{}, "may not add CAP_NET_ADMIN"},
		{"unconfined by default", unconfined, nil, operator, "without seccomp"},
		{"unconfined granted", unconfined, granted, operator, ""},
		{"unconfined, then the operator narrowed", unconfined, granted, SecurityBounds{}, "without seccomp"},
		{"escalation by default", escalate, nil, escalating, "without no_new_privs"},
		{"escalation granted", escalate, &api.TenantSecurity{AllowPrivilegeEscalation: true}, escalating, ""},
		{"escalation granted, then the operator narrowed", escalate, &api.TenantSecurity{AllowPrivilegeEscalation: true}, operator, "without no_new_privs"},
		{"escalation false is the default", &api.SecurityContext{AllowPrivilegeEscalation: pt(false)}, nil, SecurityBounds{}, ""},
		{"user, groups, read-only root", &api.SecurityContext{RunAsUser: pt(int64(1000)), RunAsGroup: pt(int64(1000)), SupplementalGroups: []int64{5}, ReadOnlyRootFilesystem: true, RunAsNonRoot: pt(true)}, nil, SecurityBounds{}, ""},
	} {
		err := CheckSecurity(spec(tc.sc), "t1", tc.tenant, tc.bounds)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v; want permission denied with %q", tc.name, err, tc.want)
		}
	}
}

func pt[T any](v T) *T { return &v }

func TestValidateFSGroup(t *testing.T) {
	for _, tc := range []struct {
		fsGroup int64
		ok      bool
	}{{0, true}, {2000, true}, {MaxID, true}, {-1, false}, {MaxID + 1, false}} {
		s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox"}},
			SecurityContext: &api.InstanceSecurityContext{FSGroup: pt(tc.fsGroup)}}
		Defaults(&s, "runc")
		err := Validate(&s)
		if tc.ok != (err == nil) || (err != nil && (!errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "spec.securityContext.fsGroup"))) {
			t.Errorf("fsGroup %d: %v", tc.fsGroup, err)
		}
	}
}

func TestContainerGroups(t *testing.T) {
	spec := &api.InstanceSpec{SecurityContext: &api.InstanceSecurityContext{FSGroup: pt(int64(2000))}}
	c := &api.ContainerSpec{SecurityContext: &api.SecurityContext{SupplementalGroups: []int64{10, 2000, 11}}}
	if got := ContainerGroups(spec, c); !slices.Equal(got, []uint32{2000, 10, 11}) {
		t.Errorf("ContainerGroups = %v", got)
	}
	if got := ContainerGroups(&api.InstanceSpec{}, &api.ContainerSpec{}); got != nil {
		t.Errorf("no groups: %v", got)
	}
}

func TestDefaultSecurity(t *testing.T) {
	for _, tc := range []struct {
		sc   *api.SecurityContext
		want bool
	}{
		{nil, true},
		{&api.SecurityContext{RunAsUser: pt(int64(1000)), RunAsNonRoot: pt(true), SupplementalGroups: []int64{1}}, true},
		{&api.SecurityContext{AllowPrivilegeEscalation: pt(false)}, true},
		{&api.SecurityContext{ReadOnlyRootFilesystem: true}, false},
		{&api.SecurityContext{AllowPrivilegeEscalation: pt(true)}, false},
		{&api.SecurityContext{Capabilities: &api.Capabilities{Drop: []string{"ALL"}}}, false},
	} {
		if got := DefaultSecurity(tc.sc); got != tc.want {
			t.Errorf("DefaultSecurity(%+v) = %v, want %v", tc.sc, got, tc.want)
		}
	}
}
