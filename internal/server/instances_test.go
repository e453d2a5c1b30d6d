package server

import (
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestCreateInstanceDefaults(t *testing.T) {
	e := newEnv(t, 0)
	r := e.do(t, "POST", "/v1/instances", e.a.token,
		fmt.Sprintf(`{"spec":{"containers":[{"image":%q}],"ports":[{"hostPort":%d,"containerPort":80}]}}`, imgBusybox, testPort()))
	wantStatus(t, r, http.StatusCreated)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got api.Instance
	decode(t, r, &got)

	if !dnsLabelRE.MatchString(got.Name) || len(got.Name) > 63 || !strings.HasPrefix(got.Name, "busybox-") {
		t.Errorf("generated name %q is not a valid name derived from the image", got.Name)
	}
	if got.Tenant != e.a.name {
		t.Errorf("tenant = %q, want %q", got.Tenant, e.a.name)
	}
	if got.UID == "" {
		t.Error("uid is empty")
	}
	if !got.CreatedAt.Equal(testNow) {
		t.Errorf("createdAt = %v, want the server's clock %v", got.CreatedAt, testNow)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"spec.restartPolicy", got.Spec.RestartPolicy, api.RestartNever},
		{"spec.runtime", got.Spec.Runtime, "runc"},
		{"spec.containers[0].name", got.Spec.Containers[0].Name, "busybox"},
		{"spec.ports[0].protocol", got.Spec.Ports[0].Protocol, "tcp"},
		{"status.phase", got.Status.Phase, api.PhasePending},
		{"status.host", got.Status.Host, "fake-host"},
		{"stopRequested", got.StopRequested, false},
		{"deletionRequested", got.DeletionRequested, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if len(got.Status.Events) != 1 || got.Status.Events[0].Reason != "Scheduled" || !strings.Contains(got.Status.Events[0].Message, "fake-host") {
		t.Errorf("events = %+v, want one Scheduled event naming the host", got.Status.Events)
	}

	// What was answered is what was stored, and what GET returns.
	if st := e.stored(t, e.a, got.Name); !reflect.DeepEqual(*st, got) {
		t.Errorf("stored instance differs from the create response:\nstored %+v\nanswer %+v", *st, got)
	}
	r = e.do(t, "GET", "/v1/instances/"+got.Name, e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	var fetched api.Instance
	decode(t, r, &fetched)
	if !reflect.DeepEqual(fetched, got) {
		t.Errorf("GET differs from the create response:\nget    %+v\ncreate %+v", fetched, got)
	}
}

func TestCreateInstanceAccepted(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name string
		body string
		want func(*api.Instance) string // "" if fine, else what is wrong
	}{
		{"image without cmd, command given",
			`{"name":"cmd","spec":{"containers":[{"image":"` + imgScratch + `","command":["/bin/true"]}]}}`,
			func(in *api.Instance) string { return "" }},
		{"image without cmd, args given",
			`{"name":"args","spec":{"containers":[{"image":"` + imgScratch + `","args":["x"]}]}}`,
			func(in *api.Instance) string { return "" }},
		{"two containers get distinct derived names",
			`{"name":"two","spec":{"containers":[{"image":"` + imgBusybox + `"},{"image":"` + imgBusybox + `"}]}}`,
			func(in *api.Instance) string {
				if n := [2]string{in.Spec.Containers[0].Name, in.Spec.Containers[1].Name}; n != [2]string{"busybox-0", "busybox-1"} {
					return fmt.Sprintf("container names %v, want [busybox-0 busybox-1]", n)
				}
				return ""
			}},
		{"explicit settings are kept, the default type fills in the rest",
			`{"name":"explicit","spec":{"containers":[{"name":"app","image":"` + imgBusybox + `"}],"restartPolicy":"Always","runtime":"crun","resources":{"cpu":"500m","memory":"64Mi"}}}`,
			func(in *api.Instance) string {
				if in.Spec.RestartPolicy != api.RestartAlways || in.Spec.Runtime != "crun" || in.Spec.Containers[0].Name != "app" ||
					in.Spec.Resources != (api.Resources{CPU: "500m", Memory: "64Mi", Pids: 1024, LogSize: "10Mi", LogFiles: 2}) ||
					in.Spec.InstanceType != "k1.default" {
					return fmt.Sprintf("spec %+v lost explicit settings or missed the default type's", in.Spec)
				}
				return ""
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/instances", e.a.token, tt.body)
			wantStatus(t, r, http.StatusCreated)
			var in api.Instance
			decode(t, r, &in)
			if msg := tt.want(&in); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestCreateInstanceRejected(t *testing.T) {
	e := newEnv(t, 0)
	e.mustCreate(t, e.a, "taken")
	before := e.storedNames(t, e.a)

	spec := func(s string) string { return `{"name":"x","spec":` + s + `}` }
	busybox := `"image":"` + imgBusybox + `"`
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		msgs   []string
	}{
		{"unknown image", spec(`{"containers":[{"image":"kanga.test/nope:1"}]}`),
			404, "NotFound", []string{"spec.containers[0].image", "kanga.test/nope:1", "kanga image import"}},
		{"malformed memory", spec(`{"containers":[{` + busybox + `}],"resources":{"memory":"lots"}}`),
			400, "InvalidArgument", []string{"spec.resources.memory", "lots"}},
		{"memory below minimum", spec(`{"containers":[{` + busybox + `}],"resources":{"memory":"1Mi"}}`),
			400, "InvalidArgument", []string{"spec.resources.memory", "minimum"}},
		{"malformed cpu", spec(`{"containers":[{` + busybox + `}],"resources":{"cpu":"fast"}}`),
			400, "InvalidArgument", []string{"spec.resources.cpu", "fast"}},
		{"negative cpu", spec(`{"containers":[{` + busybox + `}],"resources":{"cpu":"-1"}}`),
			400, "InvalidArgument", []string{"spec.resources.cpu", "positive"}},
		{"every problem reported", spec(`{"containers":[{` + busybox + `}],"resources":{"cpu":"fast","memory":"lots"}}`),
			400, "InvalidArgument", []string{"spec.resources.cpu", "spec.resources.memory"}},
		{"empty containers", spec(`{"containers":[]}`),
			400, "InvalidArgument", []string{"spec.containers is empty"}},
		{"no containers", spec(`{}`),
			400, "InvalidArgument", []string{"spec.containers is empty"}},
		{"empty image", spec(`{"containers":[{"image":""}]}`),
			400, "InvalidArgument", []string{"spec.containers[0].image is empty"}},
		{"nothing to run", spec(`{"containers":[{"image":"` + imgScratch + `"}]}`),
			400, "InvalidArgument", []string{"spec.containers[0]", "no entrypoint or cmd"}},
		{"duplicate name", `{"name":"taken","spec":{"containers":[{` + busybox + `}]}}`,
			409, "AlreadyExists", []string{"taken", "already exists"}},
		{"invalid name", `{"name":"Web_1","spec":{"containers":[{` + busybox + `}]}}`,
			400, "InvalidArgument", []string{"name", "Web_1"}},
		{"invalid container name", spec(`{"containers":[{"name":"a/b",` + busybox + `}]}`),
			400, "InvalidArgument", []string{"spec.containers[0].name"}},
		{"duplicate container names", spec(`{"containers":[{"name":"a",` + busybox + `},{"name":"a",` + busybox + `}]}`),
			400, "InvalidArgument", []string{"spec.containers[1].name", "unique"}},
		{"bad env name", spec(`{"containers":[{` + busybox + `,"env":[{"name":"1X","value":"v"}]}]}`),
			400, "InvalidArgument", []string{"spec.containers[0].env[0].name"}},
		{"relative workingDir", spec(`{"containers":[{` + busybox + `,"workingDir":"tmp"}]}`),
			400, "InvalidArgument", []string{"spec.containers[0].workingDir", "absolute"}},
		{"unknown field", `{"name":"x","spec":{"containers":[{` + busybox + `}]},"replicas":2}`,
			400, "InvalidArgument", []string{"replicas"}},
		{"misspelled nested field", spec(`{"containers":[{` + busybox + `,"comand":["sh"]}]}`),
			400, "InvalidArgument", []string{"comand"}},
		{"wrong type", spec(`{"containers":"busybox"}`),
			400, "InvalidArgument", []string{"not valid JSON"}},
		{"empty body", ``,
			400, "InvalidArgument", []string{"empty"}},
		{"not JSON", `{"name":`,
			400, "InvalidArgument", []string{"not valid JSON"}},
		{"trailing data", createBody("x") + `{}`,
			400, "InvalidArgument", []string{"after the JSON document"}},
		{"host port out of range", spec(`{"containers":[{` + busybox + `}],"ports":[{"hostPort":70000,"containerPort":80}]}`),
			400, "InvalidArgument", []string{"spec.ports[0].hostPort", "70000"}},
		{"container port missing", spec(`{"containers":[{` + busybox + `}],"ports":[{"hostPort":8080}]}`),
			400, "InvalidArgument", []string{"spec.ports[0].containerPort"}},
		{"bad protocol", spec(`{"containers":[{` + busybox + `}],"ports":[{"hostPort":1,"containerPort":1,"protocol":"sctp"}]}`),
			400, "InvalidArgument", []string{"spec.ports[0].protocol", "sctp"}},
		{"bad host IP", spec(`{"containers":[{` + busybox + `}],"ports":[{"hostIP":"localhost","hostPort":1,"containerPort":1}]}`),
			400, "InvalidArgument", []string{"spec.ports[0].hostIP"}},
		{"host port twice", spec(`{"containers":[{` + busybox + `}],"ports":[{"hostPort":1,"containerPort":1},{"hostPort":1,"containerPort":2}]}`),
			400, "InvalidArgument", []string{"spec.ports[1]", "twice"}},
		{"bad runtime", spec(`{"containers":[{` + busybox + `}],"runtime":"kata"}`),
			400, "InvalidArgument", []string{"spec.runtime", "kata", "runc, crun"}},
		{"bad restart policy", spec(`{"containers":[{` + busybox + `}],"restartPolicy":"Sometimes"}`),
			400, "InvalidArgument", []string{"spec.restartPolicy", "Sometimes"}},
		{"init container of an unknown image", spec(`{"containers":[{` + busybox + `}],"initContainers":[{"name":"setup","image":"kanga.test/nope:1"}]}`),
			404, "NotFound", []string{"spec.initContainers[0].image", "kanga.test/nope:1"}},
		{"init container with nothing to run", spec(`{"containers":[{` + busybox + `}],"initContainers":[{"name":"setup","image":"` + imgScratch + `"}]}`),
			400, "InvalidArgument", []string{"spec.initContainers[0]", "no entrypoint or cmd"}},
		{"init container named as an app container", spec(`{"containers":[{"name":"app",` + busybox + `}],"initContainers":[{"name":"app",` + busybox + `}]}`),
			400, "InvalidArgument", []string{"spec.containers[0].name", "unique across initContainers and containers"}},
		{"init container mounting no volume", spec(`{"containers":[{` + busybox + `}],"initContainers":[{"name":"setup",` + busybox + `,"volumeMounts":[{"name":"data","mountPath":"/data"}]}]}`),
			400, "InvalidArgument", []string{"spec.initContainers[0].volumeMounts[0].name", "data"}},
		{"sidecar init container", spec(`{"containers":[{` + busybox + `}],"initContainers":[{"name":"side",` + busybox + `,"restartPolicy":"Always"}]}`),
			400, "InvalidArgument", []string{"spec.initContainers[0].restartPolicy", "sidecar"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, "POST", "/v1/instances", e.a.token, tt.body)
			wantError(t, r, tt.status, tt.code, tt.msgs...)
			if after := e.storedNames(t, e.a); !slices.Equal(after, before) {
				t.Errorf("a rejected create changed the store: instances %v, before %v", after, before)
			}
		})
	}
	// The rejected requests were all named x; none of them left it behind.
	wantStatus(t, e.do(t, "GET", "/v1/instances/x", e.a.token, ""), http.StatusNotFound)
}

func TestAuth(t *testing.T) {
	e := newEnv(t, 0)
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/version", ""},
		{"GET", "/v1/instances", ""},
		{"POST", "/v1/instances", createBody("sneaky")},
		{"GET", "/v1/instances/web", ""},
		{"DELETE", "/v1/instances/web?force=true", ""},
		{"GET", "/v1/images", ""},
	}
	headers := []struct {
		name   string
		header string // Authorization; "" sends none
		msg    string
	}{
		{"no header", "", "missing bearer token"},
		{"basic scheme", "Basic x", "missing bearer token"},
		{"empty bearer", "Bearer ", "missing bearer token"},
		{"blank bearer", "Bearer    ", "missing bearer token"},
		{"wrong token", "Bearer not-a-token", "bearer token is not valid"},
		{"prefix of a token", "Bearer " + e.a.token[:len(e.a.token)-1], "bearer token is not valid"},
	}
	for _, rt := range routes {
		for _, h := range headers {
			t.Run(rt.method+" "+rt.path+"/"+h.name, func(t *testing.T) {
				var hdr []string
				if h.header != "" {
					hdr = []string{"Authorization", h.header}
				}
				r := e.do(t, rt.method, rt.path, "", rt.body, hdr...)
				wantError(t, r, http.StatusUnauthorized, "Unauthenticated", h.msg)
				if strings.Contains(string(r.body), e.a.token) {
					t.Errorf("the error echoes the token: %s", r.body)
				}
			})
		}
	}
	if names := e.storedNames(t, e.a); len(names) != 0 {
		t.Errorf("unauthenticated requests created %v", names)
	}

	t.Run("public routes", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/healthz", "", "")
		wantStatus(t, r, http.StatusOK)
		var h map[string]string
		decode(t, r, &h)
		if h["status"] != "ok" {
			t.Errorf("healthz = %s", r.body)
		}
		r = e.do(t, "GET", "/v1/openapi.yaml", "", "")
		wantStatus(t, r, http.StatusOK)
		if string(r.body) != string(api.OpenAPI) || r.header.Get("Content-Type") != "application/yaml" {
			t.Errorf("openapi.yaml: Content-Type %q, %d bytes; want application/yaml and the embedded document", r.header.Get("Content-Type"), len(r.body))
		}
	})

	t.Run("version names the token's tenant", func(t *testing.T) {
		for _, tn := range []testTenant{e.a, e.b} {
			v, err := e.client(tn).Version(t.Context())
			if err != nil {
				t.Fatalf("Version: %v", err)
			}
			if v != (api.Version{Version: "v0.0.0-test", Tenant: tn.name}) {
				t.Errorf("Version = %+v, want tenant %s", v, tn.name)
			}
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, 0)
	orig := e.mustCreate(t, e.a, "web")
	e.setPhase(t, e.a, "web", api.PhaseRunning)
	orig = *e.stored(t, e.a, "web")

	execHdr := []string{"Connection", "Upgrade", "Upgrade", api.StreamProtocol}
	tests := []struct {
		method, path string
		hdr          []string
	}{
		{"GET", "/v1/instances/web", nil},
		{"DELETE", "/v1/instances/web", nil},
		{"DELETE", "/v1/instances/web?force=true", nil},
		{"POST", "/v1/instances/web/stop", nil},
		{"GET", "/v1/instances/web/wait", nil},
		{"GET", "/v1/instances/web/wait?condition=running", nil},
		{"GET", "/v1/instances/web/logs", nil},
		{"POST", "/v1/instances/web/exec?cmd=sh", execHdr},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, e.b.token, "", tt.hdr...)
			wantError(t, r, http.StatusNotFound, "NotFound", `"web"`)
			if strings.Contains(string(r.body), e.a.name) {
				t.Errorf("the error names the other tenant: %s", r.body)
			}
		})
	}
	if len(e.host.logCallsSeen()) != 0 || e.host.lastExecRequest() != nil {
		t.Error("the host was asked for logs or exec of another tenant's instance")
	}

	list, err := e.client(e.b).ListInstances(t.Context())
	if err != nil || len(list) != 0 {
		t.Fatalf("tenant B lists %+v, %v; want nothing", list, err)
	}

	// B's own "web" is no conflict, and A's stays as it was.
	mine := e.mustCreate(t, e.b, "web")
	if mine.Tenant != e.b.name || mine.UID == orig.UID {
		t.Errorf("B's web = %+v, want a new instance of tenant %s", mine, e.b.name)
	}
	if got := e.stored(t, e.a, "web"); !reflect.DeepEqual(*got, orig) {
		t.Errorf("A's instance changed through B's requests:\nnow    %+v\nbefore %+v", *got, orig)
	}
}

func TestGetAndList(t *testing.T) {
	e := newEnv(t, 0)
	c := e.client(e.a)

	// An empty list is an empty array, not null.
	r := e.do(t, "GET", "/v1/instances", e.a.token, "")
	wantStatus(t, r, http.StatusOK)
	if got := strings.Join(strings.Fields(string(r.body)), ""); got != `{"items":[]}` {
		t.Errorf("empty list = %s, want {\"items\": []}", r.body)
	}

	var created []api.Instance
	for _, name := range []string{"b", "a", "c"} {
		created = append(created, e.mustCreate(t, e.a, name))
	}
	e.mustCreate(t, e.b, "other")

	list, err := c.ListInstances(t.Context())
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	var names []string
	for _, in := range list {
		names = append(names, in.Name)
	}
	// Same creation time (the test clock): ordered by name.
	if fmt.Sprint(names) != "[a b c]" {
		t.Errorf("list = %v, want [a b c]", names)
	}
	for _, want := range created {
		got, err := c.GetInstance(t.Context(), want.Name)
		if err != nil {
			t.Fatalf("GetInstance(%s): %v", want.Name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetInstance(%s) = %+v, want %+v", want.Name, got, want)
		}
	}

	// Status the agent writes comes back through the API, in the
	// document's shape (the transport validates it).
	exit := 3
	if _, err := e.store.UpdateInstance(e.a.ctx, "a", func(in *api.Instance) error {
		in.Status.Phase = api.PhaseFailed
		in.Status.IP = "10.88.0.2"
		in.Status.StartedAt, in.Status.FinishedAt = &testNow, &testNow
		in.Status.Containers = []api.ContainerStatus{{Name: "main", State: api.ContainerTerminated, Reason: "Error", ExitCode: &exit, StartedAt: &testNow, FinishedAt: &testNow}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetInstance(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if got.Status.Phase != api.PhaseFailed || len(got.Status.Containers) != 1 || *got.Status.Containers[0].ExitCode != 3 {
		t.Errorf("status = %+v, want Failed with exit code 3", got.Status)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name, method, path string
		msgs               []string
	}{
		{"unknown instance", "GET", "/v1/instances/nope", []string{`instance "nope" not found`}},
		{"stop unknown", "POST", "/v1/instances/nope/stop", []string{`"nope"`}},
		{"wait unknown", "GET", "/v1/instances/nope/wait", []string{`"nope"`}},
		{"logs unknown", "GET", "/v1/instances/nope/logs", []string{`"nope"`}},
		{"delete unknown", "DELETE", "/v1/instances/nope", []string{`"nope"`}},
		{"unknown route", "GET", "/v1/nope", []string{"no API endpoint GET /v1/nope", "openapi.yaml"}},
		{"unknown sub-resource", "GET", "/v1/instances/web/bogus", []string{"no API endpoint"}},
		{"unversioned", "GET", "/instances", []string{"no API endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, e.a.token, "")
			wantError(t, r, http.StatusNotFound, "NotFound", tt.msgs...)
		})
	}
}

// TestMethodNotAllowed: a path the API has, asked with a method it does
// not serve there, is a 405 naming the methods it does serve (RFC 9110
// 15.5.6), with or without a token.
func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		method, path, allow string
	}{
		{"PUT", "/v1/instances", "POST, GET, HEAD"},
		{"PATCH", "/v1/instances/web", "GET, HEAD, DELETE"},
		{"GET", "/v1/instances/web/stop", "POST"},
		{"PUT", "/v1/tenants", "POST, GET, HEAD"},
		{"POST", "/v1/healthz", "GET, HEAD"},
	}
	for _, tt := range tests {
		for _, token := range []string{e.a.token, ""} {
			t.Run(tt.method+tt.path, func(t *testing.T) {
				r := e.do(t, tt.method, tt.path, token, "")
				wantError(t, r, http.StatusMethodNotAllowed, "MethodNotAllowed", tt.method+" "+tt.path, tt.allow)
				if got := r.header.Get("Allow"); got != tt.allow {
					t.Errorf("Allow = %q, want %q", got, tt.allow)
				}
			})
		}
	}
}
