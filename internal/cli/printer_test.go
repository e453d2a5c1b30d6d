package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kanga-run/kanga/api"
)

type printed struct {
	Name string `json:"name"`
	Size int    `json:"size"`
}

func TestPrinter(t *testing.T) {
	items := []printed{{"a", 1}, {"b", 22}}
	v := listView(map[string]any{"items": items}, items, func(p printed) string { return p.Name },
		func(w io.Writer, wide bool) error {
			fmt.Fprintf(w, "TABLE wide=%v\n", wide)
			return nil
		})
	for _, tt := range []struct {
		name string
		f    outputFlags
		want string
	}{
		{"table", outputFlags{}, "TABLE wide=false\n"},
		{"table by name", outputFlags{output: "table"}, "TABLE wide=false\n"},
		{"wide", outputFlags{output: "wide"}, "TABLE wide=true\n"},
		{"name", outputFlags{output: "name"}, "a\nb\n"},
		{"quiet", outputFlags{quiet: true}, "a\nb\n"},
		{"json", outputFlags{output: "json"}, "{\n    \"items\": [\n        {\n            \"name\": \"a\",\n            \"size\": 1\n        },\n        {\n            \"name\": \"b\",\n            \"size\": 22\n        }\n    ]\n}\n"},
		{"--json alias", outputFlags{asJSON: true}, "{\n    \"items\": [\n        {\n            \"name\": \"a\",\n            \"size\": 1\n        },\n        {\n            \"name\": \"b\",\n            \"size\": 22\n        }\n    ]\n}\n"},
		{"yaml", outputFlags{output: "yaml"}, "items:\n- name: a\n  size: 1\n- name: b\n  size: 22\n"},
		{"format", outputFlags{format: "{{.Name}}={{.Size}}"}, "a=1\nb=22\n"},
		{"format tab escape", outputFlags{format: `{{.Name}}\t{{upper .Name}}`}, "a\tA\nb\tB\n"},
		{"format json", outputFlags{format: "{{json .}}"}, "{\"name\":\"a\",\"size\":1}\n{\"name\":\"b\",\"size\":22}\n"},
		{"format table", outputFlags{format: `table {{.Name}}\t{{.Size}}`}, "NAME   SIZE\na      1\nb      22\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.f.validate(); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := tt.f.print(&b, v); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), tt.want)
			}
		})
	}
}

func TestPrinterRefuses(t *testing.T) {
	for _, tt := range []struct {
		f    outputFlags
		want string
	}{
		{outputFlags{output: "xml"}, `invalid -o value "xml": expected one of json, yaml, wide, name`},
		{outputFlags{output: "yaml", asJSON: true}, "--json and -o yaml: give one output format"},
		{outputFlags{output: "json", quiet: true}, "-o, --format and -q each choose the output: give one"},
		{outputFlags{format: "{{.Name", quiet: true}, "-o, --format and -q each choose the output: give one"},
		{outputFlags{format: "{{.Name"}, "--format: template: format:1: unclosed action"},
	} {
		if err := tt.f.validate(); err == nil || err.Error() != tt.want {
			t.Errorf("validate(%+v) = %v, want %q", tt.f, err, tt.want)
		}
	}
	// A field the object lacks is an error naming it, not "<no value>".
	f := outputFlags{format: "{{.Nope}}"}
	err := f.print(io.Discard, view{data: printed{"a", 1}})
	if err == nil || !strings.Contains(err.Error(), "Nope") {
		t.Errorf("format of a missing field = %v", err)
	}
}

// TestVerbOutputs runs verbs of the fake API with each output form.
func TestVerbOutputs(t *testing.T) {
	newFakeAPI(t)
	// An empty list prints nothing, with a template too.
	for _, args := range [][]string{{"ps", "--format", "{{.Name}}"}, {"ps", "-q"}, {"ps", "-o", "name"}} {
		if r := kanga(t, "", args...); r.code != 0 || r.stdout != "" {
			t.Errorf("kanga %s of no instances = %+v", strings.Join(args, " "), r)
		}
	}
	if r := kanga(t, "", "run", "-d", "--name", "web", "busybox", "httpd"); r.code != 0 {
		t.Fatalf("run = %+v", r)
	}
	r := kanga(t, "", "ps", "--format", "{{.Name}} {{.State}} {{.Image}}")
	if r.code != 0 || r.stdout != "web Running busybox\n" {
		t.Errorf("ps --format = %+v", r)
	}
	r = kanga(t, "", "ps", "-o", "yaml")
	var list struct {
		Items []struct{ Name string } `json:"items"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != 0 || len(list.Items) != 1 || list.Items[0].Name != "web" {
		t.Errorf("ps -o yaml = %+v (%v)", r, err)
	}
	r = kanga(t, "", "inspect", "--format", "{{.Name}}/{{.Status.Phase}}", "web")
	if r.code != 0 || r.stdout != "web/Running\n" {
		t.Errorf("inspect --format = %+v", r)
	}
	// Nothing found prints nothing on stdout, not "[]".
	r = kanga(t, "", "inspect", "nosuch")
	if r.code != 1 || r.stdout != "" || r.stderr != "Error: instance \"nosuch\" not found\n" {
		t.Errorf("inspect of a missing instance = %+v", r)
	}
	r = kanga(t, "", "version", "-o", "json")
	var v versions
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 || v.Server == nil || v.Server.Version != "fake-1" || v.Client.Version != Version {
		t.Errorf("version -o json = %+v (%v)", r, err)
	}
	r = kanga(t, "", "version", "--format", "{{.Server.Version}}")
	if r.code != 0 || r.stdout != "fake-1\n" {
		t.Errorf("version --format = %+v", r)
	}
	// A bad -o is refused before the server is asked, with 125.
	r = kanga(t, "", "ps", "-o", "xml")
	if r.code != 125 || !strings.Contains(r.stderr, `invalid -o value "xml"`) {
		t.Errorf("ps -o xml = %+v", r)
	}
}

func TestWriteStatsUnits(t *testing.T) {
	a := api.InstanceStats{Time: testNow}
	b := api.InstanceStats{Time: testNow.Add(time.Second), MemoryUsage: 10<<20 + 512<<10, MemoryPeak: 12 << 20, MemoryLimit: 512 << 20, Pids: 2,
		Storage: []api.StorageStats{{Name: "scratch", Kind: "emptyDir", Used: 100, Limit: 64 << 20}}}
	var out strings.Builder
	if err := writeStats(&out, "web", a, b); err != nil {
		t.Fatal(err)
	}
	// The limit reads as the spec gave it (512Mi), not as 537MB.
	for _, want := range []string{"10.5Mi", "12Mi", "512Mi", "100B", "64Mi"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stats lack %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "MB") {
		t.Errorf("stats print decimal units:\n%s", out.String())
	}
}
