package model

import (
	"errors"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
	"github.com/kanga-run/kanga/errdefs"
)

// checkValidate fails t unless err is what Validate should return: nil
// for want "", else an ErrInvalidArgument containing want.
func checkValidate(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("Validate: %v", err)
	case want != "" && err == nil:
		t.Fatalf("Validate accepted the spec, want an error with %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("Validate = %v, want it to contain %q", err, want)
	case err != nil && !errors.Is(err, errdefs.ErrInvalidArgument):
		t.Fatalf("Validate = %v, not an ErrInvalidArgument", err)
	}
}

func TestValidateLifecycle(t *testing.T) {
	exec := &api.ExecAction{Command: []string{"sh", "-c", "echo hi"}}
	for _, tc := range []struct {
		name string
		l    *api.Lifecycle
		want string // substring of the error; empty for valid
	}{
		{"exec postStart, sleep preStop", &api.Lifecycle{
			PostStart: &api.LifecycleHandler{Exec: exec},
			PreStop:   &api.LifecycleHandler{Sleep: &api.SleepAction{Seconds: 5}},
		}, ""},
		{"http to another address", &api.Lifecycle{
			PostStart: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Host: "10.88.0.7", Port: 8080, Path: "/echo?msg=poststart"}},
		}, ""},
		{"http to an IPv6 address", &api.Lifecycle{
			PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Host: "fd00::7", Port: 80}},
		}, ""},
		{"sleep zero", &api.Lifecycle{PreStop: &api.LifecycleHandler{Sleep: &api.SleepAction{}}}, ""},
		{"http to a name", &api.Lifecycle{
			PostStart: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Host: "metadata.internal", Port: 80}},
		}, `spec.containers[0].lifecycle.postStart.httpGet.host "metadata.internal" is not an IP address`},
		{"http with a zone", &api.Lifecycle{
			PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Host: "fe80::1%eth0", Port: 80}},
		}, "lifecycle.preStop.httpGet.host"},
		{"http port", &api.Lifecycle{
			PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Port: 0}},
		}, "spec.containers[0].lifecycle.preStop.httpGet.port 0 is out of range"},
		{"http path with CRLF", &api.Lifecycle{
			PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Port: 80, Path: "/a\r\nX: 1"}},
		}, "lifecycle.preStop.httpGet.path"},
		{"no handler", &api.Lifecycle{PreStop: &api.LifecycleHandler{}},
			"spec.containers[0].lifecycle.preStop has no handler"},
		{"two handlers", &api.Lifecycle{PostStart: &api.LifecycleHandler{Exec: exec, Sleep: &api.SleepAction{Seconds: 1}}},
			"spec.containers[0].lifecycle.postStart has exec and sleep"},
		{"empty exec", &api.Lifecycle{PostStart: &api.LifecycleHandler{Exec: &api.ExecAction{}}},
			"spec.containers[0].lifecycle.postStart.exec.command is empty"},
		{"negative sleep", &api.Lifecycle{PreStop: &api.LifecycleHandler{Sleep: &api.SleepAction{Seconds: -1}}},
			"spec.containers[0].lifecycle.preStop.sleep.seconds -1 is out of range"},
		{"long sleep", &api.Lifecycle{PreStop: &api.LifecycleHandler{Sleep: &api.SleepAction{Seconds: MaxHookSleep + 1}}},
			"lifecycle.preStop.sleep.seconds 3601"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest", Lifecycle: tc.l}}}
			Defaults(&s, "runc")
			err := Validate(&s)
			checkValidate(t, err, tc.want)
		})
	}
}

func TestLifecycleDefaults(t *testing.T) {
	s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/httpd:latest", Lifecycle: &api.Lifecycle{
		PreStop: &api.LifecycleHandler{HTTPGet: &api.HTTPGetAction{Port: 80}},
	}}}}
	Defaults(&s, "runc")
	g := s.Containers[0].Lifecycle.PreStop.HTTPGet
	if g.Path != "/" || g.Scheme != api.URISchemeHTTP {
		t.Errorf("httpGet = %+v, want path / and scheme HTTP", g)
	}
	if got, want := HookDescription(s.Containers[0].Lifecycle.PreStop), "http-get http://:80/"; got != want {
		t.Errorf("HookDescription = %q, want %q", got, want)
	}
}

func TestInitContainersHaveNoHooks(t *testing.T) {
	s := api.InstanceSpec{
		InitContainers: []api.ContainerSpec{{Name: "setup", Image: "kanga.test/busybox:latest",
			Lifecycle: &api.Lifecycle{PostStart: &api.LifecycleHandler{Sleep: &api.SleepAction{Seconds: 1}}}}},
		Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}},
	}
	Defaults(&s, "runc")
	err := Validate(&s)
	if err == nil || !strings.Contains(err.Error(), "spec.initContainers[0].lifecycle: init containers may not have lifecycle hooks") {
		t.Fatalf("Validate = %v, want the init container's hooks refused", err)
	}
}

func TestValidateTermination(t *testing.T) {
	for _, tc := range []struct {
		path, policy string
		want         string // substring of the error; empty for valid
	}{
		{"/dev/termination-log", "", ""},
		{"/dev/termination-custom-log", api.TerminationMessageFallbackToLogsOnError, ""},
		{"/tmp/msg", api.TerminationMessageReadFile, ""},
		{"", api.TerminationMessageFallbackToLogsOnError, ""},
		{"relative", "", `spec.containers[0].terminationMessagePath "relative" is not a file path`},
		{"/dev/../proc/self/x", "", "terminationMessagePath"},
		{"/dev/", "", "terminationMessagePath"},
		{"/proc/1/x", "", "terminationMessagePath"},
		{"/.kanga/init", "", "terminationMessagePath"},
		{"/", "", "terminationMessagePath"},
		{"/tmp/msg", "Always", `spec.containers[0].terminationMessagePolicy "Always" is not File or FallbackToLogsOnError`},
	} {
		s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest",
			TerminationMessagePath: tc.path, TerminationMessagePolicy: tc.policy}}}
		Defaults(&s, "runc")
		err := Validate(&s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q %q: Validate: %v", tc.path, tc.policy, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalidArgument)):
			t.Errorf("%q %q: Validate = %v, want an invalid argument with %q", tc.path, tc.policy, err, tc.want)
		}
	}
}

func TestValidateTerminationGrace(t *testing.T) {
	for _, tc := range []struct {
		grace int64
		ok    bool
	}{{0, true}, {30, true}, {MaxStopGrace, true}, {-1, false}, {MaxStopGrace + 1, false}} {
		s := api.InstanceSpec{Containers: []api.ContainerSpec{{Image: "kanga.test/busybox:latest"}}, TerminationGracePeriodSeconds: &tc.grace}
		Defaults(&s, "runc")
		err := Validate(&s)
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "spec.terminationGracePeriodSeconds")) {
			t.Errorf("grace %d: Validate = %v", tc.grace, err)
		}
		if tc.ok && StopGrace(&s) != int(tc.grace) {
			t.Errorf("grace %d: StopGrace = %d", tc.grace, StopGrace(&s))
		}
	}
	if g := StopGrace(&api.InstanceSpec{}); g != DefaultStopGrace {
		t.Errorf("StopGrace of a spec without one = %d, want %d", g, DefaultStopGrace)
	}
}
