package cli

import (
	"strings"
	"testing"
)

func TestRefusedDockerFlags(t *testing.T) {
	f := newFakeAPI(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--privileged", "busybox"}, "docker's --privileged is not supported by kanga run: instances are never privileged"},
		{[]string{"run", "--network=host", "busybox"}, "docker's --network is not supported by kanga run"},
		{[]string{"run", "--network", "host", "busybox"}, "docker's --network is not supported by kanga run"},
		{[]string{"run", "-it", "busybox", "sh"}, "then kanga exec -it NAME sh"},
		{[]string{"run", "--cpus", "2", "busybox"}, "use --cpu"},
		{[]string{"exec", "-d", "web", "true"}, "docker's --detach is not supported by kanga exec"},
		{[]string{"exec", "-u", "0", "web", "id"}, "docker's --user is not supported by kanga exec"},
	} {
		r := kanga(t, "", tt.args...)
		if r.code != 125 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("kanga %s = %+v; want 125 and %q", strings.Join(tt.args, " "), r, tt.want)
		}
	}
	if len(f.instances) != 0 {
		t.Errorf("a refused run created %d instances", len(f.instances))
	}
	// Hidden: the help lists Kanga's flags only.
	if r := kanga(t, "", "run", "--help"); strings.Contains(r.stdout, "privileged") {
		t.Errorf("run --help lists a refused flag:\n%s", r.stdout)
	}
}
