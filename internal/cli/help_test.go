package cli

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden help texts in testdata/help")

// TestHelpGolden compares `kanga VERB --help` of every verb with
// testdata/help/kanga_VERB.golden, so that a change to the CLI's surface
// (a flag, a default, a usage line) is a visible diff. After an intended
// change: go test ./internal/cli -run TestHelpGolden -update
func TestHelpGolden(t *testing.T) {
	dir := filepath.Join("testdata", "help")
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, path := range commandPaths(newRootCommand(&options{now: time.Now}), nil) {
		file := strings.Join(append([]string{"kanga"}, path...), "_") + ".golden"
		want[file] = true
		t.Run(strings.TrimSuffix(file, ".golden"), func(t *testing.T) {
			r := kanga(t, "", append(path, "--help")...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("kanga %s --help: exit %d, stderr %q", strings.Join(path, " "), r.code, r.stderr)
			}
			golden := filepath.Join(dir, file)
			if *update {
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			b, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (a new verb? run go test ./internal/cli -run TestHelpGolden -update)", err)
			}
			if string(b) != r.stdout {
				t.Errorf("kanga %s --help differs from %s (if intended, rerun with -update):\n--- got\n%s\n--- want\n%s",
					strings.Join(path, " "), golden, r.stdout, b)
			}
		})
	}
	// A golden file of a verb that no longer exists is stale.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("%s is the help of no verb: remove it (or rerun with -update)", filepath.Join(dir, e.Name()))
		}
	}
}

// commandPaths lists the argument paths of c and its subcommands, depth first,
// without cobra's own help and completion verbs.
func commandPaths(c *cobra.Command, prefix []string) [][]string {
	out := [][]string{prefix}
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
			continue
		}
		out = append(out, commandPaths(sub, append(append([]string(nil), prefix...), sub.Name()))...)
	}
	return out
}
