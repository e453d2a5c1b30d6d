package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kanga-run/kanga/api"
)

func TestRunUserAndLabelFlags(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	parse := func(args ...string) (api.CreateInstanceRequest, error) {
		t.Helper()
		cmd, f := runCommandWithFlags(&options{})
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return buildRunRequest(f, cmd.Flags().Changed, cmd.Flags().Args(), strings.NewReader(""), func(string) (string, bool) { return "", false })
	}
	for _, tc := range []struct {
		args   []string
		sc     *api.SecurityContext
		labels map[string]string
		annots map[string]string
	}{
		{[]string{"busybox"}, nil, nil, nil},
		{[]string{"--user", "1000:1001", "busybox"}, &api.SecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(1001)}, nil, nil},
		{[]string{"-u", "0", "--read-only", "busybox"}, &api.SecurityContext{RunAsUser: i64(0), ReadOnlyRootFilesystem: true}, nil, nil},
		{[]string{"--read-only", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "busybox"},
			&api.SecurityContext{ReadOnlyRootFilesystem: true, Capabilities: &api.Capabilities{Add: []string{"NET_BIND_SERVICE"}, Drop: []string{"ALL"}}}, nil, nil},
		{[]string{"-l", "app=web", "--label", "tier=", "--annotation", "example.com/n=a=b", "busybox"}, nil,
			map[string]string{"app": "web", "tier": ""}, map[string]string{"example.com/n": "a=b"}},
	} {
		got, err := parse(tc.args...)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if sc := got.Spec.Containers[0].SecurityContext; !reflect.DeepEqual(sc, tc.sc) {
			t.Errorf("%v: security context %+v, want %+v", tc.args, sc, tc.sc)
		}
		if !reflect.DeepEqual(got.Labels, tc.labels) || !reflect.DeepEqual(got.Annotations, tc.annots) {
			t.Errorf("%v: labels %v annotations %v", tc.args, got.Labels, got.Annotations)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--user", "nobody", "busybox"}, "names are not resolved"},
		{[]string{"--user", "1000:staff", "busybox"}, "the group must be a number"},
		{[]string{"--user", "-1", "busybox"}, "the user must be a number"},
		{[]string{"-l", "app", "busybox"}, `--label "app": give KEY=VALUE`},
		{[]string{"--annotation", "=x", "busybox"}, "--annotation"},
		{[]string{"-f", "x.json", "--user", "1"}, "--user sets a field of one container"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
