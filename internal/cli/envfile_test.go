package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestParseEnvFile(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "HOME" {
			return "/home/me", true
		}
		return "", false
	}
	tests := []struct {
		name    string
		in      string
		want    []api.EnvVar
		wantErr string
	}{
		{name: "pairs, comments and blanks",
			in:   "# a comment\n\nA=1\n  # indented comment\n  B=two words\nC=\nD=x=y\n",
			want: []api.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "two words"}, {Name: "C"}, {Name: "D", Value: "x=y"}}},
		{name: "values are literal", in: `Q="quoted" $HOME`, want: []api.EnvVar{{Name: "Q", Value: `"quoted" $HOME`}}},
		{name: "key alone copies the caller's", in: "HOME\n", want: []api.EnvVar{{Name: "HOME", Value: "/home/me"}}},
		{name: "CRLF lines", in: "A=1\r\nHOME\r\n", want: []api.EnvVar{{Name: "A", Value: "1"}, {Name: "HOME", Value: "/home/me"}}},
		{name: "byte order mark", in: "\uFEFFA=1\n", want: []api.EnvVar{{Name: "A", Value: "1"}}},
		{name: "unset key alone", in: "A=1\nNOPE\n", wantErr: "line 2: NOPE is not set"},
		{name: "space in key", in: "A B=1\n", wantErr: `line 1: invalid variable name "A B"`},
		{name: "empty key", in: "=1\n", wantErr: "line 1: invalid variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnvFile("f.env", strings.NewReader(tt.in), lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "f.env") {
					t.Fatalf("error %v, want one naming f.env and containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestRunEnvFileAndFlags checks the order docker applies: files in order,
// then -e, each replacing a variable of the same name in place.
func TestRunEnvFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.env"), filepath.Join(dir, "b.env")
	if err := os.WriteFile(a, []byte("X=a\nY=a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("Y=b\nZ=b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &runFlags{envFiles: []string{a, b}, env: []string{"Z=flag"}}
	changed := func(n string) bool { return n == "env" || n == "env-file" }
	req, err := buildRunRequest(f, changed, []string{"busybox"}, nil, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	want := []api.EnvVar{{Name: "X", Value: "a"}, {Name: "Y", Value: "b"}, {Name: "Z", Value: "flag"}}
	if got := req.Spec.Containers[0].Env; !reflect.DeepEqual(got, want) {
		t.Fatalf("env %+v, want %+v", got, want)
	}
	f.envFiles = []string{filepath.Join(dir, "missing.env")}
	if _, err := buildRunRequest(f, changed, []string{"busybox"}, nil, nil); err == nil || !strings.Contains(err.Error(), "missing.env") {
		t.Fatalf("missing file: error %v, want one naming it", err)
	}
}
