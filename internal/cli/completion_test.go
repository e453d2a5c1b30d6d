package cli

import (
	"strings"
	"testing"
	"time"
)

func TestCompletion(t *testing.T) {
	newFakeAPI(t)
	for _, name := range []string{"web", "db", "worker"} {
		if r := kanga(t, "", "run", "-d", "--name", name, "busybox", "sleep", "1"); r.code != 0 {
			t.Fatalf("run %s = %+v", name, r)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		// Every instance; the directive (4) says no file names.
		{[]string{"inspect", ""}, "db\nweb\nworker\n:4\n"},
		{[]string{"stop", "w"}, "web\nworker\n:4\n"},
		// A name given already is not offered again.
		{[]string{"rm", "web", "w"}, "worker\n:4\n"},
		// After NAME, exec's and logs' arguments are no instance.
		{[]string{"exec", "web", ""}, ":4\n"},
		{[]string{"logs", "web", ""}, ":4\n"},
		{[]string{"image", "inspect", "kanga"}, "kanga.test/busybox:latest\n:4\n"},
		{[]string{"run", "kanga.test/b"}, "kanga.test/busybox:latest\n:4\n"},
	} {
		r := kanga(t, "", append([]string{"__complete"}, tt.args...)...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("kanga __complete %s: exit %d, stdout %q, want %q", strings.Join(tt.args, " "), r.code, r.stdout, tt.want)
		}
	}
}

// TestCompletedArgsExist keeps the completion table in step with the
// verbs: a renamed verb would silently lose its completion.
func TestCompletedArgsExist(t *testing.T) {
	root := newRootCommand(&options{now: time.Now})
	for path, spec := range completedArgs {
		c, _, err := root.Find(strings.Fields(path)[1:])
		if err != nil || c.CommandPath() != path {
			t.Errorf("%s: no such verb (%v)", path, err)
			continue
		}
		if c.ValidArgsFunction == nil {
			t.Errorf("%s: no completion of %s names", path, spec.kind)
		}
	}
}
