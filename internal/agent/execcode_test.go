package agent

import (
	"errors"
	"testing"
)

func TestExecStartExitCode(t *testing.T) {
	tests := []struct {
		msg    string
		code   int
		mapped bool
	}{
		// runc's and crun's wording, as containerd passes them on.
		{`OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH: unknown`, 127, true},
		{`exec failed: unable to start container process: exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory: unknown`, 127, true},
		{`executable file not found in $PATH: No such file or directory: OCI runtime attempted to invoke a command that was not found`, 127, true},
		{`exec failed: unable to start container process: exec: "/etc/passwd": permission denied: unknown`, 126, true},
		{`exec: "/etc": is a directory`, 126, true},
		{`exec failed: unable to start container process: chdir to cwd ("/nosuch") set in config.json failed: no such file or directory: unknown`, 126, true},
		{`ttrpc: closed: unavailable`, 0, false},
	}
	for _, tt := range tests {
		code, ok := execStartExitCode(errors.New(tt.msg))
		if code != tt.code || ok != tt.mapped {
			t.Errorf("execStartExitCode(%q) = %d, %v; want %d, %v", tt.msg, code, ok, tt.code, tt.mapped)
		}
	}
}
